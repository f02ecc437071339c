"""A tenant over its plan's maxSize: its reads keep working, its writes stop, and it cannot lift that.

`ALTER ROLE ... SET default_transaction_read_only` is only a default the tenant's
session overrides. A stop that holds must take writing away as a privilege, and
an owner always holds every privilege on what it owns. So while the tenant is
over, its objects belong to another role: `REASSIGN OWNED BY tenant_x TO
tenancy_owner_x` (NOLOGIN, nobody's member, so nothing of the tenant's can act as
it), and the tenant keeps USAGE on its schema and SELECT on its tables and
sequences, with DELETE and TRUNCATE so that it can make room. Back under the limit,
ownership returns and everything is as it was: at rest a tenant owns its objects,
so applications that run their own DDL keep working, and nothing changes for a
tenant that never reaches its limit.

What could still write as the owner is closed too: SECURITY DEFINER functions lose
EXECUTE for the tenant (they would run as the new owner), and a tenant with rules
or SECURITY DEFINER trigger functions on its tables (which DELETE would fire as the
owner) gets no DELETE or TRUNCATE while stopped: its platform team raises the limit
or deletes for it. In the isolated tier the database changes owner as well, so the
tenant cannot create a schema of its own to write in.

Every statement here runs on an admin session and none runs the tenant's code:
REASSIGN, GRANT and plain VACUUM evaluate no function, index expression or
trigger (VACUUM FULL would, and is never used).
"""

from __future__ import annotations

from psycopg import sql as q
from psycopg.conninfo import make_conninfo

from tenant_operator.infra import sql, usage
from tenant_operator.infra.connection import admin_session, fetch_one
from tenant_operator.infra.postgres import ISOLATED, DataPlacement, stop_owner


def _data_session(admin_dsn: str, placement: DataPlacement):
    isolated = placement.tier == ISOLATED
    return admin_session(make_conninfo(admin_dsn, dbname=placement.database), tenant_database=isolated)


def stopped(admin_dsn: str, placement: DataPlacement) -> bool:
    """Whether the tenant's schema belongs to its stop owner now."""
    with _data_session(admin_dsn, placement) as conn:
        state = fetch_one(conn, sql.schema_state(placement.schema))
    return state is not None and state["owner"] == stop_owner(placement)


def size(admin_dsn: str, placement: DataPlacement) -> int:
    """What maxSize is compared with: what status.usage.databaseBytes says (infra/usage.py)."""
    with admin_session(admin_dsn) as conn:
        return usage.tenant_bytes(conn, placement.schema, placement.database if placement.tier == ISOLATED else None)


def stop(admin_dsn: str, placement: DataPlacement) -> list[str]:
    """Take writing away: the objects to the stop owner, reading (and making room) to the tenant."""
    owner, role, schema = stop_owner(placement), placement.role, placement.schema
    with _data_session(admin_dsn, placement) as conn:
        if fetch_one(conn, sql.role_state(owner)) is None:
            conn.execute(q.SQL("CREATE ROLE {} WITH NOLOGIN " + sql.ROLE_ATTRIBUTES).format(sql.ident(owner)))
        conn.execute(q.SQL("REASSIGN OWNED BY {} TO {}").format(sql.ident(role), sql.ident(owner)))
        if placement.tier == ISOLATED:
            conn.execute(sql.grant_connect(placement.database, role))
        conn.execute(q.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.ident(schema), sql.ident(role)))
        unsafe = _writes_as_owner_on_delete(conn, schema)
        rights = "SELECT" if unsafe else "SELECT, DELETE, TRUNCATE"
        conn.execute(q.SQL(f"GRANT {rights} ON ALL TABLES IN SCHEMA {{}} TO {{}}").format(sql.ident(schema),
                                                                                       sql.ident(role)))
        conn.execute(q.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(sql.ident(schema),
                                                                                    sql.ident(role)))
        for function in _security_definers(conn, schema):
            conn.execute(q.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC, {}").format(q.SQL(function),
                                                                                        sql.ident(role)))
    return [f"writes stopped: {schema} belongs to {owner}; {role} may {rights.lower()}"]


def lift(admin_dsn: str, placement: DataPlacement) -> list[str]:
    """Give everything back: the tenant owns its objects again, as before the stop."""
    owner, role, schema = stop_owner(placement), placement.role, placement.schema
    with _data_session(admin_dsn, placement) as conn:
        if fetch_one(conn, sql.role_state(owner)) is None:
            return []
        # Taken from the tenant before its ownership returns: an owner's own privileges are ACL entries too.
        conn.execute(q.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(sql.ident(schema),
                                                                                 sql.ident(role)))
        conn.execute(q.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(sql.ident(schema),
                                                                                    sql.ident(role)))
        for function in _security_definers(conn, schema):
            conn.execute(q.SQL("GRANT EXECUTE ON FUNCTION {} TO PUBLIC").format(q.SQL(function)))
        conn.execute(q.SQL("REASSIGN OWNED BY {} TO {}").format(sql.ident(owner), sql.ident(role)))
        conn.execute(q.SQL("DROP OWNED BY {}").format(sql.ident(owner)))  # grants made by it, nothing it owns
        conn.execute(sql.drop_role(owner))
    return [f"writes allowed again: {schema} belongs to {role}"]


def vacuum(admin_dsn: str, placement: DataPlacement) -> None:
    """Plain VACUUM of the tenant's tables: rows it deleted at a table's end give their space back."""
    with _data_session(admin_dsn, placement) as conn:
        tables = conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                              " WHERE n.nspname = %s AND c.relkind IN ('r', 'm')", [placement.schema]).fetchall()
        for (table,) in tables:
            conn.execute(q.SQL("VACUUM {}").format(q.Identifier(placement.schema, table)))


def _security_definers(conn, schema: str) -> list[str]:
    """The schema's SECURITY DEFINER functions as regprocedure text: name and argument types, each
    identifier quoted by the server itself (the one form a function's signature can be named in)."""
    rows = conn.execute("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                        " WHERE n.nspname = %s AND p.prosecdef", [schema]).fetchall()
    return [row[0] for row in rows]


def _writes_as_owner_on_delete(conn, schema: str) -> bool:
    """Rules, or triggers running SECURITY DEFINER functions, on the schema's tables: DELETE would fire them."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s AND r.ev_type <> '1')"
        " OR EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid"
        "  WHERE n.nspname = %(s)s AND NOT t.tgisinternal AND p.prosecdef)", {"s": schema}).fetchone()
    return bool(row and row[0])
