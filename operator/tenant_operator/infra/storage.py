"""A tenant over its plan's maxSize: its reads keep working, its writes stop, and it cannot lift that.

`ALTER ROLE ... SET default_transaction_read_only` is only a default the tenant's
session overrides. A stop that holds must take writing away as a privilege, and
an owner always holds every privilege on what it owns. So while the tenant is
over, its objects belong to another role: `REASSIGN OWNED BY tenant_x TO
tenancy_owner_x` (NOLOGIN, nobody's member, so nothing of the tenant's can act as
it), and the tenant keeps USAGE on its schemas and SELECT on its tables and
sequences, with DELETE and TRUNCATE so that it can make room. Back under the limit,
ownership returns and everything is as it was: at rest a tenant owns its objects,
so applications that run their own DDL keep working, and nothing changes for a
tenant that never reaches its limit.

What could still write besides ownership is closed too, and given back exactly at
the lift (storage_grants.py): grants the tenant made to PUBLIC or other roles,
CREATE on its schemas (and, isolated, on its database), EXECUTE on SECURITY
DEFINER functions (they would run as the stop owner), a co-operating tenant's
USAGE on its schema. A tenant with triggers or rules on its tables, or a foreign
key cascading into a table with triggers, gets no DELETE or TRUNCATE while
stopped (a cascade and the triggers it fires run as the table's owner, the stop
owner): its platform team raises the limit or deletes for it. In the isolated
tier the stop covers every schema the tenant owns in its database, and the
database itself.

One transaction does all of it, so a stop is whole or not there, and it runs
again at every look while the tenant is over: whatever is missing (a stop from an
older operator, a grant made since) is put right. Its locks are bounded: REASSIGN
waits for the tenant's own open transactions, so the transaction sets a short
lock_timeout; when that passes, the tenant's sessions that hold locks in its
database are ended (it is over its limit, or getting its writes back: it loses a
session either way, and the event says so) and the stop tries again; still
locked, `StorageBusy`, and the reconcile retries with backoff. No worker waits
on a tenant's lock for longer than that.

Every statement here runs on an admin session and none runs the tenant's code:
REASSIGN, GRANT, REVOKE and plain VACUUM evaluate no function, index expression or
trigger (VACUUM FULL would, and is never used).
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql as q
from psycopg.conninfo import make_conninfo

from tenant_operator.infra import sql, storage_grants, usage
from tenant_operator.infra.connection import admin_session, fetch_one, first_row
from tenant_operator.infra.postgres import ISOLATED, DataPlacement, stop_owner

# How long a stop, a lift or a measurement waits for a lock the tenant holds.
LOCK_TIMEOUT = "2s"
# Tries of a stop or lift; the tenant's lock-holding sessions are ended between two.
ATTEMPTS = 3


class StorageBusy(Exception):
    """The tenant's locks kept the stop, lift or measurement from running; try again later."""


def _data_session(admin_dsn: str, placement: DataPlacement):
    isolated = placement.tier == ISOLATED
    return admin_session(make_conninfo(admin_dsn, dbname=placement.database), tenant_database=isolated)


def stopped(admin_dsn: str, placement: DataPlacement) -> bool:
    """Whether the tenant's schema belongs to its stop owner now."""
    with _data_session(admin_dsn, placement) as conn:
        state = fetch_one(conn, sql.schema_state(placement.schema))
    return state is not None and state["owner"] == stop_owner(placement)


def size(admin_dsn: str, placement: DataPlacement) -> int:
    """What maxSize is compared with: what status.usage.databaseBytes says (infra/usage.py).

    Bounded by lock_timeout: the tenant may hold an ACCESS EXCLUSIVE lock on a table (it may LOCK
    what it may DELETE from) and the size of a relation waits for that.
    """
    database = placement.database if placement.tier == ISOLATED else None
    with admin_session(admin_dsn) as conn:
        try:
            with conn.transaction():
                conn.execute(q.SQL("SET LOCAL lock_timeout = {}").format(q.Literal(LOCK_TIMEOUT)))
                return usage.tenant_bytes(conn, placement.schema, database)
        except psycopg.errors.LockNotAvailable:
            raise StorageBusy(f"the size of {placement.schema} waits for a lock the tenant holds") from None


def stop(admin_dsn: str, placement: DataPlacement) -> list[str]:
    """Take writing away (or put right what a stop in place misses); what was done, [] when nothing was."""
    return _bounded(admin_dsn, placement, lambda conn: _stop(conn, placement))


def lift(admin_dsn: str, placement: DataPlacement) -> list[str]:
    """Give everything back: the tenant owns its objects again, with the grants they had before the stop."""
    return _bounded(admin_dsn, placement, lambda conn: _lift(conn, placement))


def vacuum(admin_dsn: str, placement: DataPlacement) -> int:
    """Plain VACUUM of the stopped tenant's tables that have dead rows (only those can shrink); how many.

    Rows it deleted at a table's end give their space back, so its size may fall under the limit. A
    table that has none, and no autovacuum since ours, is left alone: vacuuming every table at every
    look changes no verdict. A table
    the tenant keeps locked is skipped (lock_timeout), to be tried at the next look.
    """
    owner = stop_owner(placement)
    done = 0
    with _data_session(admin_dsn, placement) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_stat_all_tables s ON s.relid = c.oid"
            " WHERE (n.nspname = %s OR c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s))"
            " AND c.relkind IN ('r', 'm') AND (s.n_dead_tup > 0"
            # autovacuum took the dead rows first, but may have left the table's end (it yields its lock)
            "  OR coalesce(s.last_autovacuum, '-infinity') > coalesce(s.last_vacuum, '-infinity'))",
            [placement.schema, owner]).fetchall()
        if not tables:
            return 0
        conn.execute(q.SQL("SET lock_timeout = {}").format(q.Literal(LOCK_TIMEOUT)))
        try:
            for schema, table in tables:
                try:
                    conn.execute(q.SQL("VACUUM {}").format(q.Identifier(schema, table)))
                    done += 1
                except psycopg.errors.LockNotAvailable:
                    pass
        finally:
            conn.execute("RESET lock_timeout")  # a kept session goes back as it came
    return done


def _bounded(admin_dsn: str, placement: DataPlacement, step: Callable[[psycopg.Connection], list[str]]) -> list[str]:
    """`step` in one transaction with a short lock_timeout; between tries the tenant's lock holders are ended."""
    ended = 0
    with _data_session(admin_dsn, placement) as conn:
        for attempt in range(ATTEMPTS):
            try:
                with conn.transaction():
                    conn.execute(q.SQL("SET LOCAL lock_timeout = {}").format(q.Literal(LOCK_TIMEOUT)))
                    done = step(conn)
                if ended:
                    done.append(f"ended {ended} session(s) of {placement.role} that held locks on its data")
                return done
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                # A deadlock too: REASSIGN takes its tables' locks one by one, a writer of the tenant
                # its table's and its sequence's, and PostgreSQL may pick the stop to fail.
                if attempt + 1 < ATTEMPTS:
                    ended += _end_lock_holders(conn, placement.role)
    raise StorageBusy(f"{placement.role}'s sessions kept their locks on {placement.schema} through {ATTEMPTS} tries "
                      f"(ended {ended} of them)")


def _end_lock_holders(conn: psycopg.Connection, role: str) -> int:
    """End the sessions of `role` (and of roles that are its members) holding locks in this database.

    Only the tenant's own: another tenant's or the operator's sessions are never ended here.
    """
    rows = conn.execute(
        "SELECT pg_terminate_backend(a.pid, 5000) FROM pg_stat_activity a"
        " WHERE a.pid <> pg_backend_pid() AND a.datname = current_database()"
        " AND a.usename IN (SELECT %(role)s UNION SELECT m.rolname FROM pg_auth_members x"
        "  JOIN pg_roles m ON m.oid = x.member WHERE x.roleid = (SELECT oid FROM pg_roles WHERE rolname = %(role)s))"
        " AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted"
        "  AND l.locktype IN ('relation', 'object', 'transactionid', 'tuple'))", {"role": role}).fetchall()
    return len(rows)


def _stop(conn: psycopg.Connection, placement: DataPlacement) -> list[str]:
    owner, role, schema = stop_owner(placement), placement.role, placement.schema
    isolated = placement.tier == ISOLATED
    done = []
    if fetch_one(conn, sql.role_state(owner)) is None:
        conn.execute(q.SQL("CREATE ROLE {} WITH NOLOGIN " + sql.ROLE_ATTRIBUTES).format(sql.ident(owner)))
    storage_grants.ensure_saved_table(conn)
    state = fetch_one(conn, sql.schema_state(schema))
    if state is None or state["owner"] == role:
        # A stop starts afresh: rows left by a tenant of the same name whose data was dropped while
        # stopped name objects by oid, and an oid may have been given to another object since.
        storage_grants.forget(conn, schema)
    if _owns_anything(conn, role):
        conn.execute(q.SQL("REASSIGN OWNED BY {} TO {}").format(sql.ident(role), sql.ident(owner)))
        done.append(f"writes stopped: {schema} belongs to {owner}")
    schemas = _covered_schemas(conn, schema, owner)
    making_room = not storage_grants.writes_as_owner_on_delete(conn, owner, schemas)
    revoked = storage_grants.take_away(conn, schema, role, owner, schemas, isolated, making_room)
    if revoked:
        done.append(f"revoked {revoked} grant(s) that could write")
    granted = _grant_reading(conn, placement, owner, schemas, making_room)
    if granted and not done:
        done.append(f"granted {granted} missing right(s) to read and make room")
    if done:
        done.append(f"{role} may select" + (", delete and truncate" if making_room else " only"))
    return done


def _lift(conn: psycopg.Connection, placement: DataPlacement) -> list[str]:
    owner, role, schema = stop_owner(placement), placement.role, placement.schema
    if fetch_one(conn, sql.role_state(owner)) is None:
        return []
    # Taken from the tenant before its ownership returns: an owner's own privileges are ACL entries too.
    relations = conn.execute(
        "SELECT c.relkind = 'S', n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        " AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s)", [owner]).fetchall()
    for sequence, namespace, name in relations:
        conn.execute(q.SQL("REVOKE ALL ON {} {} FROM {}").format(q.SQL("SEQUENCE" if sequence else "TABLE"),
                                                                q.Identifier(namespace, name), sql.ident(role)))
    conn.execute(q.SQL("REASSIGN OWNED BY {} TO {}").format(sql.ident(owner), sql.ident(role)))
    restored = storage_grants.give_back(conn, schema) if storage_grants.has_saved(conn) else 0
    conn.execute(q.SQL("DROP OWNED BY {}").format(sql.ident(owner)))  # grants made to it, nothing it owns
    conn.execute(sql.drop_role(owner))
    return [f"writes allowed again: {schema} belongs to {role}", f"{restored} saved grant(s) given back"]


def _owns_anything(conn: psycopg.Connection, role: str) -> bool:
    """Whether REASSIGN has work to do: the role owns an object in this database, or the database."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_shdepend d WHERE d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)"
        " AND d.deptype = 'o' AND d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())))",
        [role]).fetchone()
    return bool(row and row[0])


def _covered_schemas(conn: psycopg.Connection, schema: str, owner: str) -> list[str]:
    """The tenant's schema and every other the stop owner holds here (an isolated tenant may make more)."""
    rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles"
                        " WHERE rolname = %s) AND nspname <> %s ORDER BY 1", [owner, schema]).fetchall()
    return [schema, *(row[0] for row in rows)]


def _grant_reading(conn: psycopg.Connection, placement: DataPlacement, owner: str, schemas: list[str],
                   making_room: bool) -> int:
    """USAGE on the covered schemas, SELECT (and DELETE, TRUNCATE to make room) on what the stop owner holds,
    CONNECT on an isolated database; only what the tenant lacks. How many grants were made."""
    role = placement.role
    wanted = "SELECT, DELETE, TRUNCATE" if making_room else "SELECT"
    missing = conn.execute(
        "SELECT c.relkind = 'S', n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        " AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %(owner)s)"
        " AND NOT (CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(%(role)s, c.oid, 'SELECT')"
        "  ELSE has_table_privilege(%(role)s, c.oid, 'SELECT') AND (NOT %(making_room)s"
        "   OR has_table_privilege(%(role)s, c.oid, 'DELETE') AND has_table_privilege(%(role)s, c.oid, 'TRUNCATE'))"
        "  END)",  # has_table_privilege with several privileges answers whether any is held: one at a time
        {"owner": owner, "role": role, "making_room": making_room}).fetchall()
    for sequence, namespace, name in missing:
        conn.execute(q.SQL("GRANT {} ON {} {} TO {}").format(
            q.SQL("SELECT" if sequence else wanted), q.SQL("SEQUENCE" if sequence else "TABLE"),
            q.Identifier(namespace, name), sql.ident(role)))
    count = len(missing)
    for schema in schemas:
        if not first_row(conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", [role, schema]))[0]:
            conn.execute(q.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.ident(schema), sql.ident(role)))
            count += 1
    if placement.tier == ISOLATED and not first_row(conn.execute(
            "SELECT has_database_privilege(%s, current_database(), 'CONNECT')", [role]))[0]:
        conn.execute(sql.grant_connect(placement.database, role))
        count += 1
    return count
