"""The application's migrations applied to one tenant, as the tenant, with their history.

Every migration runs on a session logged in as the tenant's own role (the
password of its Secret), with search_path on its schema: never an admin session
with SET ROLE, since a migration's text is arbitrary SQL and RESET ROLE or SET
SESSION AUTHORIZATION would hand it the admin back. So SQL that tries to leave
the tenant's reach (CREATE in public, SET ROLE to another role, ALTER SYSTEM,
another tenant's schema) fails for that tenant like any query of its own.

History: a table `schema_history` in the tenant's schema (version, description,
checksum, applied_at, duration_ms). A migration and its history row commit in
one transaction, so a crash never applies one twice nor records one not applied;
the history moves with the tenant's data when it changes tier. A migration whose
text starts with a `-- tenant-operator: no-transaction` line (CREATE INDEX
CONCURRENTLY) runs alone, then its row: it must be safe to run again (IF NOT
EXISTS), since a crash between the two runs it once more.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tenant_operator.api.schema import Migration
from tenant_operator.infra import connection
from tenant_operator.infra.postgres import DataPlacement

HISTORY_TABLE = "schema_history"
CONNECT_TIMEOUT = 10


class ChecksumMismatch(Exception):
    """A version applied here has other text now: nothing is run until a person decides."""

    def __init__(self, version: int):
        super().__init__(f"version {version} was applied with other SQL than the DatabaseSchema now holds; "
                         "restore its text, or add the change as a new version")
        self.version = version


class VersionsRemoved(Exception):
    """Versions applied here are no longer in the DatabaseSchema: its history cannot be told forward."""

    def __init__(self, versions: list[int]):
        super().__init__(f"version(s) {', '.join(map(str, versions))} were applied here but are no longer in the "
                         "DatabaseSchema; put them back (a schema's versions are only ever added)")
        self.versions = versions


class LoginFailed(connection.DatabaseUnavailable):
    """No session as the tenant: the server is away, or the password changed since it was read.

    libpq tells the two apart only in its message text (no SQLSTATE at connect), so the
    caller that used a remembered password tries once more with the Secret's.
    """


@dataclasses.dataclass
class MigrationFailed(Exception):
    version: int
    sqlstate: str | None
    message: str

    def __str__(self) -> str:
        return f"version {self.version} failed ({self.sqlstate or 'no SQLSTATE'}): {self.message}"


def tenant_dsn(admin_dsn: str, placement: DataPlacement, password: str) -> str:
    """The tenant's own login: its role and password, its database, its schema first."""
    return make_conninfo(admin_dsn, user=placement.role, password=password, dbname=placement.database,
                         options=f"-c search_path={placement.schema}", application_name=connection.application_name(),
                         connect_timeout=CONNECT_TIMEOUT)


def applied_versions(conn: psycopg.Connection, schema: str) -> dict[int, str]:
    """version -> checksum of what the history table says was applied ({} before the first).

    `conn` is in autocommit: a missing table costs this one statement, not a transaction.
    """
    try:
        rows = conn.execute(sql.SQL("SELECT version, checksum FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(HISTORY_TABLE))).fetchall()
    except psycopg.errors.UndefinedTable:
        return {}
    return {int(version): checksum for version, checksum in rows}


def apply(dsn: str, schema: str, migrations: Sequence[Migration], up_to: int,
          before_each: Callable[[Migration], None]) -> list[int]:
    """Apply, in order, every version up to `up_to` not applied yet; the versions applied.

    `before_each` is asked before each version (the caller proves it still may act).
    Raises VersionsRemoved or ChecksumMismatch before running anything, MigrationFailed for the first
    version that fails (rolled back; those before it stay).
    """
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as error:
        raise LoginFailed(f"cannot log in as the tenant to migrate its schema: "
                          f"{' '.join(str(error).split())}") from None
    with conn:
        done = applied_versions(conn, schema)
        if not done:
            _ensure_history(conn, schema)
        removed = sorted(set(done) - {migration.version for migration in migrations})
        if removed:
            raise VersionsRemoved(removed)
        for migration in migrations:
            if migration.version in done and done[migration.version] != migration.checksum:
                raise ChecksumMismatch(migration.version)
        applied: list[int] = []
        for migration in migrations:
            if migration.version in done or migration.version > up_to:
                continue
            before_each(migration)
            # The login put search_path on the schema; after a version, whatever it SET is undone first.
            _apply_one(conn, schema, migration, reset=bool(applied))
            applied.append(migration.version)
        return applied


def _ensure_history(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} (version bigint PRIMARY KEY, description text NOT NULL,"
        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer NOT NULL)"
    ).format(sql.Identifier(schema), sql.Identifier(HISTORY_TABLE)))


def _apply_one(conn: psycopg.Connection, schema: str, migration: Migration, reset: bool) -> None:
    record = sql.SQL("INSERT INTO {}.{} (version, description, checksum, duration_ms) VALUES (%s, %s, %s, %s)").format(
        sql.Identifier(schema), sql.Identifier(HISTORY_TABLE))
    started = time.monotonic()
    try:
        if reset:
            # Each version starts where the tenant's schema is, whatever an earlier one SET.
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql.encode())  # no parameters: the simple protocol, several statements
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                    raise psycopg.ProgrammingError("the migration ended the transaction itself (COMMIT or "
                                                   "ROLLBACK); mark it `-- tenant-operator: no-transaction`")
                conn.execute(record, [migration.version, migration.description, migration.checksum,
                                      int((time.monotonic() - started) * 1000)])
        else:
            conn.execute(migration.sql.encode())
            conn.execute(record, [migration.version, migration.description, migration.checksum,
                                  int((time.monotonic() - started) * 1000)])
    except psycopg.Error as error:
        if conn.broken:
            raise connection.DatabaseUnavailable(f"lost the session migrating version {migration.version}") from None
        message = " ".join(str(error).split())[:1500]
        raise MigrationFailed(migration.version, error.sqlstate, message) from None
