"""Moving a tenant's data between tiers: target, copy, verify, quarantine. psycopg + pg_dump.

The copy keeps the schema name, so the role's search_path works in both places.
The schema's DDL comes from pg_dump/pg_restore (pre-data before the rows,
post-data - indexes, keys, foreign keys - after them, the fast order); the rows
are streamed table by table with COPY in binary, which reports progress and
needs no file of the data.

Tenant-defined code runs only on sessions logged in as the tenant's role. What
writes into the target evaluates the tenant's functions: COPY FROM (CHECK
constraints, domain checks, generated columns), and pg_restore (index
expressions and predicates, constraints validated over the rows, materialized
views refreshed). Both log in as the tenant with the move's password
(postgres.lock_out), so `RESET ROLE` or `SET SESSION AUTHORIZATION` in such a
function hands it nothing but itself. `SET ROLE` on an admin session would not
contain it: RESET ROLE gives the admin back. Admin sessions only read (the source
rows with COPY TO, pg_dump, checksums, as a superuser that bypasses row-level
security and runs no tenant function: output functions are built-in, a tenant
cannot create base types) and create, rename or drop whole schemas and
databases, which runs nothing of the tenant's.

Nothing here drops what it did not create: targets carry a marker comment set
in the same transaction that creates them, and only marked targets (or ones
without a single table) are ever replaced or dropped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql as q
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenant_operator.infra import sql
from tenant_operator.infra.connection import DatabaseUnavailable, admin_session_dsn, application_name, first_row
from tenant_operator.infra.postgres import DataPlacement, ensure_tenant_data

MARKER = "tenant-operator: migration target"
QUARANTINE_SEPARATOR = "$"  # never part of a tenant's identifier, so no tenant can collide


class TargetNotEmpty(Exception):
    """The target already holds data the operator did not put there: refuse to touch it."""


class ToolFailed(Exception):
    """pg_dump or pg_restore failed; the message carries its stderr (never a password)."""


@dataclasses.dataclass(frozen=True)
class TableCheck:
    name: str
    rows: int
    checksum: str


def _dsn(admin_dsn: str, database: str) -> str:
    # The database may be the tenant's own: its owner's ALTER DATABASE ... SET (a search_path
    # that puts its functions before pg_catalog's) must not reach our superuser session.
    return admin_session_dsn(make_conninfo(admin_dsn, dbname=database), tenant_database=True)


# A tenant may have set its own role's defaults; none of them may stall or fail the copy.
TENANT_SESSION_OPTIONS = ("-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
                          " -c default_transaction_read_only=off")


def tenant_dsn(admin_dsn: str, placement: DataPlacement, password: str) -> str:
    """A session logged in as the tenant's role itself, on the server of `admin_dsn`."""
    return make_conninfo(admin_dsn, dbname=placement.database, user=placement.role, password=password,
                         options=TENANT_SESSION_OPTIONS, application_name=application_name())


@contextmanager
def _connect(dsn: str) -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError:
        params = conninfo_to_dict(dsn)
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {params.get('host')}:{params.get('port')}/{params.get('dbname')}"
        ) from None
    with conn:
        yield conn


def _marker(tenant: str) -> str:
    return f"{MARKER} of {tenant}"


def _database_exists(admin: psycopg.Connection, name: str) -> tuple[bool, str | None]:
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name]).fetchone()
    return (row is not None, row[0] if row else None)


def _schema_state(conn: psycopg.Connection, schema: str) -> tuple[bool, str | None, int]:
    row = conn.execute(
        "SELECT n.oid, obj_description(n.oid, 'pg_namespace'),"
        " (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p'))"
        " FROM pg_namespace n WHERE n.nspname = %s", [schema]).fetchone()
    return (False, None, 0) if row is None else (True, row[1], row[2])


def prepare_target(admin_dsn: str, tenant: str, target: DataPlacement, password: str | None = None,
                   connect: bool = True) -> list[str]:
    """Make sure the target can be written: create the isolated database, or check the shared schema.

    `admin_dsn` is the target server's. `password` creates the tenant's role there when it has none
    (a move to another server): one nobody knows, replaced by the move's own before the copy.
    """
    actions = []
    if password is not None and target.tier == "shared":
        # The role (and an empty schema, replaced by the copy's marked one) on the target server.
        if "created role" in ensure_tenant_data(admin_dsn, target, password).actions:
            actions.append(f"created role {target.role} on the target server")
    if target.tier == "isolated":
        with _connect(admin_dsn) as admin:
            exists, comment = _database_exists(admin, target.database)
        if exists and comment != _marker(tenant):
            with _connect(_dsn(admin_dsn, target.database)) as conn:
                if _schema_state(conn, target.schema)[2]:
                    raise TargetNotEmpty(f"database {target.database} already holds tables of its own")
        ensure_tenant_data(admin_dsn, target, password)
        if comment != _marker(tenant):
            with _connect(admin_dsn) as admin:
                admin.execute(q.SQL("COMMENT ON DATABASE {} IS {}").format(
                    q.Identifier(target.database), q.Literal(_marker(tenant))))
            actions.append(f"created database {target.database}")
    else:
        with _connect(_dsn(admin_dsn, target.database)) as conn:
            exists, comment, tables = _schema_state(conn, target.schema)
            if exists and tables and comment != _marker(tenant):
                raise TargetNotEmpty(f"schema {target.schema} in database {target.database} already holds tables")
            if connect:  # the copy logs in as the tenant, there: shared tenants are granted CONNECT one by one
                conn.execute(sql.grant_connect(target.database, target.role))
    return actions


def _tool(name: str, bin_dir: Path | None) -> str:
    if bin_dir and (bin_dir / name).exists():
        return str(bin_dir / name)
    found = shutil.which(name)
    if not found:
        raise ToolFailed(f"{name} not found: install the PostgreSQL client (postgresql-client)")
    return found


def _run_tool(argv: list[str], dsn: str) -> str:
    """Run pg_dump/pg_restore with the connection in the environment, never on the command line."""
    params = conninfo_to_dict(dsn)
    env = {**os.environ, "PGHOST": str(params.get("host", "")), "PGPORT": str(params.get("port", "5432")),
           "PGUSER": str(params.get("user", "")), "PGPASSWORD": str(params.get("password", "")),
           "PGDATABASE": str(params.get("dbname", "")), "PGOPTIONS": str(params.get("options", "")),
           "PGAPPNAME": str(params.get("application_name", "")), "PGCONNECT_TIMEOUT": "10"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolFailed(f"{Path(argv[0]).name} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def table_names(admin_dsn: str, placement: DataPlacement) -> list[str]:
    with _connect(_dsn(admin_dsn, placement.database)) as conn:
        return _tables(conn, placement.schema)


def _tables(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname", [schema]).fetchall()
    return [row[0] for row in rows]


def _sequences(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'S' ORDER BY c.relname", [schema]).fetchall()
    return [row[0] for row in rows]


def _recreate_target_schema(conn: psycopg.Connection, tenant: str, target: DataPlacement) -> None:
    exists, comment, tables = _schema_state(conn, target.schema)
    if exists and tables and comment != _marker(tenant):
        raise TargetNotEmpty(f"schema {target.schema} in database {target.database} already holds tables")
    with conn.transaction():
        if exists:
            conn.execute(q.SQL("DROP SCHEMA {} CASCADE").format(q.Identifier(target.schema)))
        conn.execute(q.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            q.Identifier(target.schema), q.Identifier(target.role)))
        conn.execute(q.SQL("COMMENT ON SCHEMA {} IS {}").format(
            q.Identifier(target.schema), q.Literal(_marker(tenant))))


def copy_schema(source_admin: str, target_admin: str, tenant: str, source: DataPlacement, target: DataPlacement,
                password: str, progress: Callable[[str, int], None], bin_dir: Path | None = None,
                between_tables: Callable[[], None] = lambda: None) -> dict[str, int]:
    """Copy the tenant's schema from source to target; returns rows copied per table.

    `source_admin` and `target_admin` are the two servers' admin DSNs (the same one for a
    move between tiers); the rows stream from one to the other, no file of them is written.
    `password` is the move's password of the tenant's role on the target server: the DDL and
    the rows are written by the tenant itself (see the module docstring), read by the admin.
    """
    source_dsn, target_admin_dsn = _dsn(source_admin, source.database), _dsn(target_admin, target.database)
    as_tenant = tenant_dsn(target_admin, target, password)
    with tempfile.TemporaryDirectory(prefix="tenant-copy-") as workdir:
        dump, restore = _schema_dump(source_dsn, target_admin_dsn, source, target, Path(workdir), bin_dir)
        with _connect(source_dsn) as src, _connect(target_admin_dsn) as admin_dst:
            _recreate_target_schema(admin_dst, tenant, target)
            _run_tool([*restore, "--section=pre-data", str(dump)], as_tenant)
            copied = {}
            with _connect(as_tenant) as dst:
                for table in _tables(src, source.schema):
                    between_tables()
                    copied[table] = _copy_table(src, dst, source.schema, table)
                    progress(table, copied[table])
            _run_tool([*restore, "--section=post-data", str(dump)], as_tenant)
            _copy_sequences(src, admin_dst, source, target)
    return copied


def restore_schema(source_admin: str, target_admin: str, tenant: str, source: DataPlacement, target: DataPlacement,
                   bin_dir: Path | None = None) -> None:
    """The tenant's tables, empty, in the target, for an online move's subscription to fill.

    Restored by the admin in the tenant's role (pg_restore --role): only for a tenant that owns no
    function (replication.blockers), so that nothing of the tenant's runs while its tables are made.
    """
    source_dsn, target_admin_dsn = _dsn(source_admin, source.database), _dsn(target_admin, target.database)
    with tempfile.TemporaryDirectory(prefix="tenant-schema-") as workdir:
        dump, restore = _schema_dump(source_dsn, target_admin_dsn, source, target, Path(workdir), bin_dir)
        with _connect(target_admin_dsn) as admin_dst:
            _recreate_target_schema(admin_dst, tenant, target)
        _run_tool([*restore, f"--role={target.role}", str(dump)], target_admin_dsn)


def copy_sequences(source_admin: str, target_admin: str, source: DataPlacement, target: DataPlacement) -> None:
    """Each sequence's position from the source (logical replication does not carry them)."""
    with _connect(_dsn(source_admin, source.database)) as src, _connect(_dsn(target_admin, target.database)) as dst:
        _copy_sequences(src, dst, source, target)


def _copy_sequences(src: psycopg.Connection, admin_dst: psycopg.Connection, source: DataPlacement,
                    target: DataPlacement) -> None:
    for sequence in _sequences(src, source.schema):
        last_value, is_called = first_row(src.execute(q.SQL("SELECT last_value, is_called FROM {}.{}").format(
            q.Identifier(source.schema), q.Identifier(sequence))))
        admin_dst.execute("SELECT pg_catalog.setval(pg_catalog.format('%%I.%%I', %s::text, %s::text)"
                          "::pg_catalog.regclass, %s, %s)", [target.schema, sequence, last_value, is_called])


def _schema_dump(source_dsn: str, target_admin_dsn: str, source: DataPlacement, target: DataPlacement,
                 workdir: Path, bin_dir: Path | None) -> tuple[Path, list[str]]:
    """The source schema's DDL dumped, and the pg_restore command that puts it in the target (schema excepted)."""
    dump = workdir / "schema.dump"
    _run_tool([_tool("pg_dump", bin_dir), "--format=custom", "--schema-only", f"--schema={source.schema}",
               f"--file={dump}"], source_dsn)
    # The target schema is created by us, with its marker, so pg_restore must not create it.
    listing = _run_tool([_tool("pg_restore", bin_dir), "--list", str(dump)], target_admin_dsn)
    # Nor its comment, which would replace the target's marker, nor its ACL: the schema is ours to set up.
    schema_entry = re.compile(rf"^\d+; \d+ \d+ (SCHEMA - |(COMMENT|ACL) - SCHEMA ){re.escape(source.schema)} ")
    keep = workdir / "list"
    keep.write_text("\n".join(line for line in listing.splitlines() if not schema_entry.match(line)))
    # Everything restored belongs to the tenant's role, whoever owned it in the source.
    return dump, [_tool("pg_restore", bin_dir), f"--use-list={keep}", "--exit-on-error", "--single-transaction",
                  "--no-owner", f"--dbname={target.database}"]


def _copy_table(src: psycopg.Connection, dst: psycopg.Connection, schema: str, table: str) -> int:
    """Rows read by the admin, written by the tenant's own session (its CHECKs and generated columns run there)."""
    name = q.SQL("{}.{}").format(q.Identifier(schema), q.Identifier(table))
    with dst.transaction():
        with src.cursor().copy(q.SQL("COPY {} TO STDOUT (FORMAT BINARY)").format(name)) as reader, \
                dst.cursor() as cursor:
            with cursor.copy(q.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(name)) as writer:
                for block in reader:
                    writer.write(block)
            return cursor.rowcount


def checksums(dsn: str, schema: str, sums: bool = True) -> dict[str, TableCheck]:
    """Rows and an order-independent checksum of each table's contents, plus sequence positions.

    The checksum sums a 64-bit hash of each row's text: hashtextextended is the hash behind
    hash partitioning, so it is stable, and it costs a third less than md5 over a large table.
    `sums` False: rows counted only (a large tenant's online move, inside its freeze).
    """
    found = {}
    summed = "coalesce(sum(pg_catalog.hashtextextended(t::text, 0)), 0)::text" if sums else "'counted'"
    with _connect(dsn) as conn:
        for table in _tables(conn, schema):
            rows, total = first_row(conn.execute(q.SQL("SELECT count(*), " + summed + " FROM {}.{} AS t").format(
                q.Identifier(schema), q.Identifier(table))))
            found[table] = TableCheck(table, rows, total)
        for sequence in _sequences(conn, schema):
            last_value, is_called = first_row(conn.execute(q.SQL("SELECT last_value, is_called FROM {}.{}").format(
                q.Identifier(schema), q.Identifier(sequence))))
            found[f"sequence {sequence}"] = TableCheck(sequence, 0, f"{last_value}:{is_called}")
    return found


def verify(source_admin: str, target_admin: str, source: DataPlacement, target: DataPlacement,
           sums: bool = True) -> tuple[dict[str, TableCheck], list[str]]:
    """Source checks, and a line per difference with the target (empty when equal); both sides at once."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        source_side = pool.submit(checksums, _dsn(source_admin, source.database), source.schema, sums)
        target_side = pool.submit(checksums, _dsn(target_admin, target.database), target.schema, sums)
        expected, actual = source_side.result(), target_side.result()
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(name), actual.get(name)
        if want is None or got is None:
            problems.append(f"{name}: {'missing in target' if got is None else 'not in source'}")
        elif (want.rows, want.checksum) != (got.rows, got.checksum):
            problems.append(f"{name}: source {want.rows} rows/{want.checksum}, target {got.rows} rows/{got.checksum}")
    return expected, problems


def quarantine_name(placement: DataPlacement, at: float | None = None) -> str:
    base = placement.database if placement.tier == "isolated" else placement.schema
    return f"{base}{QUARANTINE_SEPARATOR}{int(at or time.time())}"


def quarantine(session: psycopg.Connection, source: DataPlacement, name: str) -> bool:
    """Rename the source out of the tenant's reach and lock it; False when it was already done.

    `session` is the tenant lock's (in the shared database): a process whose lock was
    taken away has no session left to do this on.
    """
    if source.tier == "isolated":
        if not _database_exists(session, source.database)[0]:
            return False
        session.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                        [source.database])
        session.execute(sql.rename_database(source.database, name))
        session.execute(q.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(q.Identifier(name)))
        return True
    if not _schema_state(session, source.schema)[0]:
        return False
    with session.transaction():
        session.execute(sql.rename_schema(source.schema, name))
        # Without USAGE on the schema the tenant's role cannot reach the tables it still owns.
        session.execute(q.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(q.Identifier(name)))
    return True


def drop_target(session: psycopg.Connection, tenant: str, target: DataPlacement) -> bool:
    """Roll back: remove a target this operator created (marked), never anything else.

    On the tenant lock's session (in the shared database), as quarantine().
    """
    if target.tier == "isolated":
        exists, comment = _database_exists(session, target.database)
        if not exists or comment != _marker(tenant):
            return False
        session.execute(q.SQL("DROP DATABASE {} WITH (FORCE)").format(q.Identifier(target.database)))
        return True
    exists, comment, _ = _schema_state(session, target.schema)
    if not exists or comment != _marker(tenant):
        return False
    session.execute(q.SQL("DROP SCHEMA {} CASCADE").format(q.Identifier(target.schema)))
    return True


def unmark(admin_dsn: str, target: DataPlacement) -> None:
    """The target became the tenant's home: it is no longer a disposable migration target."""
    with _connect(_dsn(admin_dsn, target.database)) as conn:
        conn.execute(q.SQL("COMMENT ON SCHEMA {} IS NULL").format(q.Identifier(target.schema)))
    if target.tier == "isolated":
        with _connect(admin_dsn) as admin:
            admin.execute(q.SQL("COMMENT ON DATABASE {} IS NULL").format(q.Identifier(target.database)))


def expired_quarantines(admin_dsn: str, shared_database: str, sql_name: str | None, retention: float,
                        now: float | None = None) -> list[tuple[str, str]]:
    """(kind, name) of the quarantined copies older than the retention period: this tenant's (`sql_name`),
    or every tenant's on the server (None)."""
    now = now or time.time()
    pattern = f"{sql_name or 'tenant_'}%{QUARANTINE_SEPARATOR}%".replace("_", "\\_")
    with _connect(_dsn(admin_dsn, shared_database)) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                              [pattern]).fetchall()]
        databases = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                [pattern]).fetchall()]
    found = [("schema", name) for name in schemas] + [("database", name) for name in databases]
    expired = []
    for kind, name in found:
        owner, _, stamp = name.rpartition(QUARANTINE_SEPARATOR)
        if (owner == sql_name or (sql_name is None and owner.startswith("tenant_"))) and stamp.isdigit() \
                and int(stamp) + retention <= now:
            expired.append((kind, name))
    return expired


def drop_quarantine(admin_dsn: str, shared_database: str, kind: str, name: str) -> None:
    if kind == "database":
        with _connect(admin_dsn) as admin:
            admin.execute(q.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(q.Identifier(name)))
    else:
        with _connect(_dsn(admin_dsn, shared_database)) as conn:
            conn.execute(q.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(q.Identifier(name)))
