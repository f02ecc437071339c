"""Online moves: the tenant's tables replicated to the target while the tenant keeps writing.

A publication FOR TABLES IN SCHEMA the tenant's schema (or, for an admin that is
not a superuser, FOR TABLE each of them) and a logical replication slot on the
source; a subscription on the target that copies the rows there and then streams
every change. The slot is made apart from the subscription (`create_slot =
false`): PostgreSQL's recipe for a publisher and subscriber on one server, and the
same everywhere here. The three share one name per tenant (`object_name`), so
that any process, after any crash, finds and drops what a move made.

An orphaned slot keeps WAL on the source until its disk fills: `drop` takes the
subscription apart without reaching the source (DISABLE, slot_name NONE), then
drops the slot and the publication there, each only if it exists, and is called
on every path out of a move (switch, rollback, deletion, a restart that finds
the record gone).

On PostgreSQL 15 the subscription's apply worker and its table sync run as the
subscription's owner, a superuser: whatever tenant-defined code the target's
tables would evaluate (a function behind a CHECK, an index expression, a
generated column, an ALWAYS trigger) would run with the admin's rights. So a
tenant that owns functions moves offline (the copy runs its code as the tenant,
tierdata.py); `blockers` says so, with the other reasons a tenant cannot
replicate: a table with neither a primary key nor a replica identity (its
UPDATEs and DELETEs would fail on the source while published), an unlogged table
(not replicated).
"""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import sql as q
from psycopg.conninfo import make_conninfo

from tenant_operator.infra.connection import admin_session, admin_session_dsn
from tenant_operator.infra.postgres import DataPlacement

PREFIX = "tenancy_move_"


def object_name(schema: str) -> str:
    """The publication's, slot's and subscription's name for the tenant's move (a slot allows [a-z0-9_])."""
    return (PREFIX + schema)[:63]


@dataclasses.dataclass(frozen=True)
class Capability:
    online: bool
    reason: str
    superuser: bool = False


def capability(maintenance_dsn: str) -> Capability:
    """Whether moves off this server can be online: wal_level logical, slots to spare, an admin that may publish."""
    with admin_session(maintenance_dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,"
            " current_setting('max_wal_senders')::int, r.rolsuper, r.rolreplication,"
            " CASE WHEN current_setting('server_version_num')::int >= 160000"
            "  THEN pg_has_role('pg_create_subscription', 'MEMBER') ELSE false END"
            " FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    if row is None:
        return Capability(False, "the admin role is not in pg_roles")
    wal_level, slots, senders, superuser, may_replicate, may_subscribe = row
    if wal_level != "logical":
        return Capability(False, f"wal_level is {wal_level}, not logical")
    if slots < 1 or senders < 1:
        return Capability(False, "max_replication_slots or max_wal_senders is 0")
    if not (superuser or (may_replicate and may_subscribe)):
        return Capability(False, "the admin role is no superuser, nor (PostgreSQL 16+) a REPLICATION role in "
                                 "pg_create_subscription")
    return Capability(True, "wal_level logical; the admin may publish and subscribe", bool(superuser))


def _source_dsn(admin_dsn: str, placement: DataPlacement) -> str:
    return admin_session_dsn(make_conninfo(admin_dsn, dbname=placement.database), tenant_database=True)


def blockers(admin_dsn: str, source: DataPlacement) -> list[str]:
    """Why this tenant's data cannot be replicated safely (empty: it can)."""
    found = []
    with psycopg.connect(_source_dsn(admin_dsn, source), autocommit=True) as conn:
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
            " WHERE r.rolname = %s OR p.pronamespace = %s::regnamespace",
            [source.role, source.schema]).fetchone()
        if functions and functions[0]:
            found.append(f"the tenant defines {functions[0]} function(s): PostgreSQL 15 applies replicated rows as "
                         "the subscription's owner, a superuser, which would run them")
        for (table,) in conn.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'"
                " AND c.relreplident IN ('d', 'n') AND NOT (c.relreplident = 'd' AND EXISTS ("
                "  SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))"
                " ORDER BY c.relname", [source.schema]).fetchall():
            found.append(f"table {table} has neither a primary key nor a replica identity")
        for (table,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'r'"
                " AND relpersistence = 'u' ORDER BY relname", [source.schema]).fetchall():
            found.append(f"table {table} is unlogged: not replicated")
    return found


@dataclasses.dataclass(frozen=True)
class Progress:
    tables: int
    synchronised: int
    lag_bytes: int | None
    retained_bytes: int | None

    @property
    def caught_up(self) -> bool:
        # A tenant without a table has nothing to wait for (CREATE SUBSCRIPTION lists the tables at once).
        return self.synchronised == self.tables


def start(source_admin: str, target_admin: str, source: DataPlacement, target: DataPlacement,
          superuser: bool) -> list[str]:
    """Publication and slot on the source, subscription on the target; each made only if missing."""
    name, actions = object_name(source.schema), []
    with psycopg.connect(_source_dsn(source_admin, source), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone() is None:
            if superuser:
                conn.execute(q.SQL("CREATE PUBLICATION {} FOR TABLES IN SCHEMA {}").format(
                    q.Identifier(name), q.Identifier(source.schema)))
            else:
                tables = [row[0] for row in conn.execute(
                    "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind IN ('r', 'p')"
                    " ORDER BY relname", [source.schema]).fetchall()]
                conn.execute(q.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(q.Identifier(name), q.SQL(", ").join(
                    q.Identifier(source.schema, table) for table in tables)))
            actions.append(f"published {source.schema}")
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [name]).fetchone() is None:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [name])
            actions.append(f"created slot {name}")
    with psycopg.connect(_source_dsn(target_admin, target), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", [name]).fetchone() is None:
            # What the target server uses to reach the source: the operator's admin DSN for it.
            publisher = make_conninfo(source_admin, dbname=source.database)
            conn.execute(q.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}"
                               " WITH (create_slot = false, slot_name = {}, copy_data = true)").format(
                q.Identifier(name), q.Literal(publisher), q.Identifier(name), q.Literal(name)))
            actions.append(f"subscribed {target.database}")
    return actions


def progress(source_admin: str, target_admin: str, source: DataPlacement, target: DataPlacement) -> Progress:
    name = object_name(source.schema)
    with psycopg.connect(_source_dsn(target_admin, target), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE r.srsubstate IN ('r', 's')) FROM pg_subscription_rel r"
            " JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s", [name]).fetchone()
    tables, synchronised = (int(row[0]), int(row[1])) if row else (0, 0)
    lag, retained = slot_bytes(source_admin, source)
    return Progress(tables, synchronised, lag, retained)


def slot_bytes(source_admin: str, source: DataPlacement) -> tuple[int | None, int | None]:
    """The slot's lag (WAL not yet confirmed by the target) and the WAL it keeps, in bytes; None: no slot."""
    with psycopg.connect(_source_dsn(source_admin, source), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s", [object_name(source.schema)]).fetchone()
    return (None, None) if row is None else (row[0], row[1])


def position(source_admin: str, source: DataPlacement) -> str:
    """The source's WAL position now: once the target confirmed it, it has every write made before."""
    with psycopg.connect(_source_dsn(source_admin, source), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def confirmed(source_admin: str, source: DataPlacement, lsn: str) -> bool:
    """Whether the target confirmed everything up to `lsn` (the slot's confirmed_flush_lsn)."""
    with psycopg.connect(_source_dsn(source_admin, source), autocommit=True) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                           [lsn, object_name(source.schema)]).fetchone()
    return bool(row and row[0])


def drop(source_admin: str, target_admin: str | None, source: DataPlacement, target: DataPlacement) -> list[str]:
    """Subscription, slot and publication of the move, whichever exist; `target_admin` None: the target is gone."""
    name, actions = object_name(source.schema), []
    if target_admin is not None:
        try:
            with psycopg.connect(_source_dsn(target_admin, target), autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", [name]).fetchone():
                    # Apart from the source: its slot is dropped below, whether it answers now or not.
                    conn.execute(q.SQL("ALTER SUBSCRIPTION {} DISABLE").format(q.Identifier(name)))
                    conn.execute(q.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(q.Identifier(name)))
                    conn.execute(q.SQL("DROP SUBSCRIPTION {}").format(q.Identifier(name)))
                    actions.append(f"dropped subscription {name}")
        except psycopg.OperationalError as error:
            if "does not exist" not in str(error):  # the target database is gone: so is its subscription
                raise
    with psycopg.connect(_source_dsn(source_admin, source), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [name]).fetchone():
            # A walsender may still hold it for a moment after the subscription went.
            conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                         " WHERE slot_name = %s AND active_pid IS NOT NULL", [name])
            conn.execute("SELECT pg_drop_replication_slot(%s)", [name])
            actions.append(f"dropped slot {name}")
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone():
            conn.execute(q.SQL("DROP PUBLICATION {}").format(q.Identifier(name)))
            actions.append(f"dropped publication {name}")
    return actions


def leftovers(maintenance_dsn: str) -> dict[str, list[tuple[str, str]]]:
    """Every move's slots and subscriptions on the server, by name: [(kind, database)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    with admin_session(maintenance_dsn) as conn:
        for kind, name, database in conn.execute(
                "SELECT 'slot', slot_name::text, database::text FROM pg_replication_slots WHERE slot_name LIKE %s"
                " UNION ALL SELECT 'subscription', s.subname::text, d.datname::text FROM pg_subscription s"
                " JOIN pg_database d ON d.oid = s.subdbid WHERE s.subname LIKE %s",
                [PREFIX.replace("_", "\\_") + "%"] * 2).fetchall():
            found.setdefault(name, []).append((kind, database))
    return found


def drop_leftover(maintenance_dsn: str, name: str, database: str) -> None:
    """A move's subscription, slot and publication in `database`, whose move no Tenant records any more."""
    dsn = admin_session_dsn(make_conninfo(maintenance_dsn, dbname=database), tenant_database=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", [name]).fetchone():
            conn.execute(q.SQL("ALTER SUBSCRIPTION {} DISABLE").format(q.Identifier(name)))
            conn.execute(q.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(q.Identifier(name)))
            conn.execute(q.SQL("DROP SUBSCRIPTION {}").format(q.Identifier(name)))
        conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                     " WHERE slot_name = %s AND active_pid IS NOT NULL", [name])
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                     [name])
        conn.execute(q.SQL("DROP PUBLICATION IF EXISTS {}").format(q.Identifier(name)))
