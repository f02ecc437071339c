"""The shared tier's database, and the server's own databases, locked down for tenants.

Created at start-up if missing (several replicas may race: losing is not an
error). PUBLIC loses CONNECT and TEMPORARY there: only shared-tier roles are
granted CONNECT, so an isolated tenant cannot even list the shared tenants'
schema names; the maintenance database and template1 keep nothing a tenant
could use.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.conninfo import make_conninfo

from tenant_operator.infra import sql
from tenant_operator.infra.connection import admin_session, fetch_one, fetch_row
from tenant_operator.infra.postgres import EnsureResult

log = logging.getLogger(__name__)

# Databases of every server that tenants have no business in: they keep nothing a
# tenant could use, and a session held open in template1 makes CREATE DATABASE from it fail.
TEMPLATE_DATABASE = "template1"


def ensure_shared_database(admin_dsn: str, name: str) -> EnsureResult:
    """Create the shared database if missing and take from PUBLIC what tenants must not have.

    `admin_dsn` points at a maintenance database (postgres). Several replicas may
    start at once, so losing the race to create the database is not an error.
    """
    actions: list[str] = []
    with admin_session(admin_dsn) as conn:
        state = fetch_one(conn, sql.database_state(name))
        if state is None:
            try:
                conn.execute(sql.create_database(name))
                actions.append("created shared database")
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass
            state = fetch_row(conn, sql.database_state(name))
        if "CONNECT" in state["public_privileges"]:
            actions += _connect_for_shared_tenants_only(admin_dsn, name)
            conn.execute(sql.revoke_connect_from_public(name))
            actions.append("revoked CONNECT on shared database from PUBLIC")
        if "TEMPORARY" in state["public_privileges"]:
            conn.execute(sql.revoke_temporary_from_public(name))
            actions.append("revoked TEMPORARY on shared database from PUBLIC")
        # Tenants may connect to the maintenance database too: they find nothing to use there.
        maintenance = conn.info.dbname
        if maintenance != name:
            actions += _best_effort(lambda: _lock_server_databases(conn, maintenance))
            actions += _best_effort(lambda: _lock_database_for_tenants(conn, f"database {maintenance}"))
    with admin_session(make_conninfo(admin_dsn, dbname=name)) as conn:
        actions += _lock_database_for_tenants(conn, "shared database")
    return EnsureResult(tuple(actions))


def _connect_for_shared_tenants_only(admin_dsn: str, name: str) -> list[str]:
    """Before PUBLIC loses CONNECT on the shared database (an install from before that rule),
    every role owning a tenant schema there gets CONNECT of its own, so no shared tenant is
    cut off while it waits for its reconcile. Isolated tenants never get it: they have no
    business in the shared database, where they could list the others' schema names."""
    with admin_session(make_conninfo(admin_dsn, dbname=name)) as conn:
        owners = [row[0] for row in conn.execute(*sql.shared_schema_owners("tenant_")).fetchall()]
        for role in owners:
            conn.execute(sql.grant_connect(name, role))
    return [f"granted CONNECT on shared database to {len(owners)} shared tenant role(s)"] if owners else []


def _lock_database_for_tenants(conn: psycopg.Connection, what: str) -> list[str]:
    """In a database tenants can connect to but own nothing in: no CREATE in public, no large objects."""
    actions = []
    public = fetch_one(conn, sql.schema_state("public"))
    if public is not None and "CREATE" in public["public_privileges"]:
        conn.execute(sql.revoke_create_on_public_schema())
        actions.append(f"revoked CREATE on schema public from PUBLIC in {what}")
    if fetch_one(conn, sql.public_large_object_creators()) is not None:
        conn.execute(sql.revoke_large_object_creators_from_public())
        actions.append(f"revoked large object creation in {what} from PUBLIC")
    return actions


def _lock_server_databases(conn: psycopg.Connection, maintenance: str) -> list[str]:
    """The maintenance database loses TEMPORARY for PUBLIC, template1 CONNECT and TEMPORARY."""
    actions = []
    state = fetch_row(conn, sql.database_state(maintenance))
    if "TEMPORARY" in state["public_privileges"]:
        conn.execute(sql.revoke_temporary_from_public(maintenance))
        actions.append(f"revoked TEMPORARY on database {maintenance} from PUBLIC")
    template = fetch_one(conn, sql.database_state(TEMPLATE_DATABASE))
    if template is not None and {"CONNECT", "TEMPORARY"} & set(template["public_privileges"]):
        conn.execute(sql.revoke_database_from_public(TEMPLATE_DATABASE))
        actions.append(f"revoked CONNECT, TEMPORARY on database {TEMPLATE_DATABASE} from PUBLIC")
    return actions


def _best_effort(step) -> list[str]:
    """Hardening of databases the operator does not own: an admin that may not change them
    (a managed service's restricted superuser) gets a warning, not an operator that cannot start."""
    try:
        return step()
    except psycopg.errors.InsufficientPrivilege as error:
        log.warning("could not restrict PUBLIC on the server's own databases: %s", " ".join(str(error).split()))
        return []
