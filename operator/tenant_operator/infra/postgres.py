"""A tenant's data tier on PostgreSQL: its role, schema and (isolated) database.

Synchronous psycopg: these functions run in worker threads, one short-lived
connection each, in autocommit (CREATE DATABASE refuses to run in a transaction,
and every step is idempotent on its own, so a crash between two steps is
repaired by the next reconcile).

Every `ensure_*` observes first and changes only what is missing or wrong: a
reconcile of a provisioned tenant runs SELECTs and nothing else, and reports
what it did in `EnsureResult.actions` so the caller can log and count writes.

Passwords are sent as SCRAM verifiers computed client-side (what psql's
\\password does): the server may log DDL (log_statement=ddl) and logs every
failing statement (log_min_error_statement), and a verifier there is not a
password. Still, no statement carrying one is ever logged by this module, and
no password appears in an exception message.

The admin needs CREATEROLE and CREATEDB and must be able to act as the roles it
creates (a superuser, or on PG16+ a CREATEROLE role with createrole_self_grant
'set'). Catalogs stay readable by every role: a shared-tier tenant can list the
names of the other schemas, but not use them; the isolated tier is the answer
for tenants who mind.

An isolated tenant owns its database, and a database owner can `ALTER DATABASE
... SET` parameters every later session there starts with, the admin's too: a
search_path naming the tenant's schema first would make the admin (a
superuser) run the tenant's functions in place of pg_catalog's. So every admin
session pins its search_path (and, in a tenant's database, its role and the
parameters that could stall it) in the startup packet, which outranks
database and role settings: `admin_session_dsn`.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from tenant_operator.api import limits
from tenant_operator.api.names import database_name, role_name, schema_name, storage_owner
from tenant_operator.infra import role_grants, sql
from tenant_operator.infra.connection import admin_session, fetch_one, fetch_row

log = logging.getLogger(__name__)

SHARED = "shared"
ISOLATED = "isolated"
TIERS = (SHARED, ISOLATED)

DEFAULT_CONNECTION_LIMIT = limits.DEFAULT_CONNECTION_LIMIT
@dataclasses.dataclass(frozen=True)
class DataPlacement:
    """Where a tenant's data lives."""

    tier: str
    database: str
    # Same name in both tiers so that search_path keeps working across a tier migration.
    schema: str
    role: str


@dataclasses.dataclass(frozen=True)
class EnsureResult:
    """What a call changed, in words fit for a log line; never holds a secret."""

    actions: tuple[str, ...] = ()
    stopped: bool = False
    """The tenant's objects belong to its storage owner: it is over its maxSize (storage.py)."""

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class RoleMissing(LookupError):
    """The tenant's role does not exist (yet): provision before suspending or rotating."""


def placement(tenant_name: str, tier: str, shared_database: str) -> DataPlacement:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: expected one of {', '.join(TIERS)}")
    if not shared_database:
        raise ValueError("the shared database name is empty")
    database = shared_database if tier == SHARED else database_name(tenant_name)
    return DataPlacement(tier, database, schema_name(tenant_name), role_name(tenant_name))


def new_password() -> str:
    return secrets.token_urlsafe(24)


# --- public operations ---------------------------------------------------------

def ensure_tenant_data(
    admin_dsn: str,
    placement: DataPlacement,
    password: str | None,
    *,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    login: bool | None = None,
    served: bool | None = None,
    settings: dict[str, str] | None = None,
) -> EnsureResult:
    """Bring the tenant's role, schema and (isolated) database to the desired state.

    `password` creates the role, or replaces the password of an existing one
    (the caller passes one only when it generated it, e.g. the Secret was lost);
    None leaves an existing password alone. `login` True/False makes the role's
    LOGIN so (suspension, retained data adopted again); None leaves it alone.
    `served`: whether the shared workload may act as the tenant (shared_app.py);
    None leaves its membership alone. `settings`: the role's limits as parameter ->
    value (api/limits.py); the limits' parameters it leaves out are reset.
    """
    actions: list[str] = []
    if placement.tier == ISOLATED:
        with admin_session(admin_dsn) as admin:
            actions += _ensure_role(admin, placement, password, connection_limit, login, served, settings or {})
            actions += _ensure_database(admin, placement.database, placement.role, stop_owner(placement))
    # Roles are cluster-wide: in the shared tier one connection does it all.
    with admin_session(_data_dsn(admin_dsn, placement), tenant_database=placement.tier == ISOLATED) as data:
        if placement.tier == SHARED:
            actions += _ensure_role(data, placement, password, connection_limit, login, served, settings or {})
        schema_actions, stopped = _ensure_schema(data, placement.schema, placement.role, stop_owner(placement))
        actions += schema_actions
        if placement.tier == ISOLATED:
            actions += _ensure_public_schema_locked(data)
    return EnsureResult(tuple(actions), stopped)


def set_login(admin_dsn: str, role: str, enabled: bool) -> bool:
    """Allow or block the role's logins; blocking also ends its open sessions.

    Returns whether the LOGIN attribute changed.
    """
    with admin_session(admin_dsn) as conn:
        state = fetch_one(conn, sql.role_state(role, member=role_grants.app_login(role)))
        if state is None:
            raise RoleMissing(f"PostgreSQL role {role} does not exist")
        changed = state["rolcanlogin"] != enabled
        if changed:
            conn.execute(sql.alter_role_login(role, enabled))
        if not enabled:
            # NOLOGIN only stops new sessions; a suspended tenant keeps none, nor does the shared app.
            conn.execute(*sql.terminate_sessions(role))
            changed = bool(role_grants.cut_shared_app(conn, role, state)) or changed
        return changed



class StillConnected(Exception):
    """Sessions of a tenant's role outlived pg_terminate_backend: its writes are not frozen."""


def lock_out(admin_dsn: str, role: str) -> str:
    """Freeze a tenant's writes for a move; returns the one-move password only the operator knows.

    The role keeps LOGIN, so that the operator can log in as the tenant itself and run
    the tenant's own code (CHECK constraints, triggers, index expressions, defaults) only
    on the tenant's own connection, never on an admin one. Everyone else is out: the
    tenant's clients hold the old password, roles the tenant made members of itself lose
    that membership, and every session of either is ended and proven gone. Called again
    by each step that logs in as the tenant, and before verify: whatever the tenant's code
    did meanwhile (a password of its choosing, a membership) does not survive it.
    """
    password = new_password()
    with admin_session(admin_dsn) as conn:
        if fetch_one(conn, sql.role_state(role)) is None:
            raise RoleMissing(f"PostgreSQL role {role} does not exist")
        conn.execute(sql.alter_role_password(role, scram_verifier(conn, role, password)))
        conn.execute(sql.alter_role_login(role, True))
        members = [row[0] for row in conn.execute(*sql.members_of(role)).fetchall()]
        for member in members:
            conn.execute(sql.revoke_membership(role, member))
        for who in [role, *members]:
            conn.execute(*sql.terminate_sessions(who))
        left = fetch_row(conn, sql.sessions_of([role, *members]))["sessions"]
        if left:
            raise StillConnected(f"{left} session(s) of role {role} did not end; writes are not frozen yet")
    return password


def restore_password(admin_dsn: str, role: str, password: str, login: bool) -> None:
    """End a move's freeze: the password of the tenant's Secret is the role's again, LOGIN as the spec says."""
    with admin_session(admin_dsn) as conn:
        if fetch_one(conn, sql.role_state(role)) is None:
            raise RoleMissing(f"PostgreSQL role {role} does not exist")
        conn.execute(sql.alter_role_password(role, scram_verifier(conn, role, password)))
        conn.execute(sql.alter_role_login(role, login))
        if not login:
            conn.execute(*sql.terminate_sessions(role))


def revoke_connect(admin_dsn: str, database: str, role: str) -> None:
    """The role may no longer connect to `database` (the shared one, once its tenant moved away)."""
    with admin_session(admin_dsn) as conn:
        conn.execute(sql.revoke_connect(database, role))


def shut_out_of(admin_dsn: str, database: str, role: str) -> None:
    """The role may not connect to `database`, and its sessions there end."""
    with admin_session(admin_dsn) as conn:
        conn.execute(sql.revoke_connect(database, role))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
                     [role, database])


def grant_connect(admin_dsn: str, database: str, role: str) -> None:
    with admin_session(admin_dsn) as conn:
        conn.execute(sql.grant_connect(database, role))


def drop_tenant_data(admin_dsn: str, placement: DataPlacement) -> EnsureResult:
    """Drop the tenant's schema or database, then its role: only for reclaimPolicy Delete.

    Idempotent. Privileges other tenants granted the role are revoked first, so
    that no tenant can keep another from being deleted. If the role still owns
    objects elsewhere (the other tier's copy during a migration), DROP ROLE fails
    with DependentObjectsStillExist: drop that placement too, then call again.
    """
    actions: list[str] = []
    with admin_session(admin_dsn) as admin:
        state = fetch_one(admin, sql.role_state(placement.role, member=role_grants.app_login(placement.role)))
        role_exists = state is not None
        if state is not None:
            # Block new sessions, then end the open ones: they hold locks DROP waits for.
            admin.execute(sql.alter_role_login(placement.role, False))
            admin.execute(*sql.terminate_sessions(placement.role))
            actions += role_grants.cut_shared_app(admin, placement.role, state)
        if placement.tier == ISOLATED:
            if fetch_one(admin, sql.database_state(placement.database)) is not None:
                admin.execute(sql.drop_database(placement.database))
                actions.append("dropped database")
        else:
            with admin_session(_data_dsn(admin_dsn, placement)) as data:
                if fetch_one(data, sql.schema_state(placement.schema)) is not None:
                    data.execute(sql.drop_schema(placement.schema))
                    actions.append("dropped schema")
        if role_exists:
            actions += _revoke_grants_of_others(admin, admin_dsn, placement.role)
            admin.execute(sql.drop_role(placement.role))
            actions.append("dropped role")
        if fetch_one(admin, sql.role_state(stop_owner(placement))) is not None:
            admin.execute(sql.drop_role(stop_owner(placement)))  # it owned only the data dropped above
        login = role_grants.app_login(placement.role)
        if fetch_one(admin, sql.role_state(login)) is not None:
            _revoke_grants_of_others(admin, admin_dsn, login)  # CONNECT on the shared database, nothing else
            admin.execute(sql.drop_role(login))
            actions.append("dropped the shared app's login")
    return EnsureResult(tuple(actions))


def _revoke_grants_of_others(admin: psycopg.Connection, admin_dsn: str, role: str) -> list[str]:
    """Take back what other roles granted this one, which would make DROP ROLE fail.

    Another tenant can GRANT on its own schema, tables or database to this role; that
    must not keep this tenant from being deleted. Only privileges are revoked: in a
    database where the role still owns something (the other tier's copy during a
    migration) nothing is done there, and DROP ROLE refuses, as it should.
    """
    actions = []
    for row in admin.execute(*sql.databases_granted_to(role)).fetchall():
        admin.execute(sql.revoke_database_from_role(row[0], role))
        actions.append(f"revoked privileges on database {row[0]}")
    with admin.cursor(row_factory=dict_row) as cur:
        dependencies = cur.execute(*sql.role_dependencies(role)).fetchall()
    for dependency in dependencies:
        if dependency["owns"] or not dependency["database"]:
            continue
        with admin_session(make_conninfo(admin_dsn, dbname=dependency["database"]), tenant_database=True) as conn:
            conn.execute(sql.drop_owned_by(role))
        actions.append(f"revoked privileges granted in database {dependency['database']}")
    return actions


def tenant_data_exists(admin_dsn: str, placement: DataPlacement) -> bool:
    """Whether the placement's schema (shared) or database (isolated) exists; the role is not data."""
    if placement.tier == ISOLATED:
        with admin_session(admin_dsn) as admin:
            return fetch_one(admin, sql.database_state(placement.database)) is not None
    with admin_session(_data_dsn(admin_dsn, placement)) as data:
        return fetch_one(data, sql.schema_state(placement.schema)) is not None


def role_exists(admin_dsn: str, role: str) -> bool:
    with admin_session(admin_dsn) as admin:
        return fetch_one(admin, sql.role_state(role)) is not None


# --- the steps of ensure_tenant_data --------------------------------------------

def _ensure_role(
    conn: psycopg.Connection, placement: DataPlacement, password: str | None, connection_limit: int,
    login: bool | None = None, served: bool | None = None, settings: dict[str, str] | None = None,
) -> list[str]:
    role = placement.role
    state = fetch_one(conn, sql.role_state(role, placement.schema, role_grants.app_login(role)))
    actions = []
    if state is None:
        if password is None:
            raise ValueError(f"PostgreSQL role {role} does not exist and no password was given to create it")
        conn.execute(sql.create_login_role(role, scram_verifier(conn, role, password), connection_limit))
        actions.append("created role")
    else:
        if not _role_attributes_ok(state, connection_limit):
            conn.execute(sql.alter_role_attributes(role, connection_limit))
            actions.append("reset role attributes")
        if password is not None:
            conn.execute(sql.alter_role_password(role, scram_verifier(conn, role, password)))
            actions.append("set password")
    can_login = True if state is None else state["rolcanlogin"]
    if login is not None and can_login != login:
        conn.execute(sql.alter_role_login(role, login))
        actions.append("enabled login" if login else "disabled login")
        if not login:
            conn.execute(*sql.terminate_sessions(role))
    if state is None or not state["search_path_ok"]:
        conn.execute(sql.alter_role_search_path(role, placement.schema))
        actions.append("set search_path")
    # PUBLIC may not connect to the shared database: each shared tenant is granted it.
    if placement.tier == SHARED and (state is None or not state["connect_granted"]):
        conn.execute(sql.grant_connect(placement.database, role))
        actions.append("granted CONNECT on shared database")
    actions += role_grants.ensure_role_settings(conn, role, state, settings or {})
    if served is not None:
        actions += role_grants.serve_by_shared_app(conn, role, state, served and placement.tier == SHARED,
                                                  connection_limit)
    return actions


def _role_attributes_ok(state: dict[str, Any], connection_limit: int) -> bool:
    powers = ("rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
    return not any(state[p] for p in powers) and state["rolconnlimit"] == connection_limit


def stop_owner(placement: DataPlacement) -> str:
    """Who owns the tenant's objects while it is over its maxSize (storage.py)."""
    return storage_owner(placement.role.removeprefix("tenant_"))


def _ensure_database(conn: psycopg.Connection, database: str, owner: str, stop_owner: str) -> list[str]:
    """`stop_owner` may own it instead while the tenant is over its maxSize (storage.py decides)."""
    actions = []
    state = fetch_one(conn, sql.database_state(database, owner))
    if state is None:
        conn.execute(sql.create_database(database, owner))
        actions.append("created database")
        state = fetch_row(conn, sql.database_state(database, owner))
    elif state["owner"] not in (owner, stop_owner):
        conn.execute(sql.alter_database_owner(database, owner))
        actions.append("changed database owner")
    if {"CONNECT", "TEMPORARY"} & set(state["public_privileges"]):
        conn.execute(sql.revoke_database_from_public(database))
        actions.append("revoked CONNECT, TEMPORARY on database from PUBLIC")
    # The owner holds CONNECT by default, but an owner can revoke its own.
    if "CONNECT" not in state["role_privileges"]:
        conn.execute(sql.grant_connect(database, owner))
        actions.append("granted CONNECT on database")
    return actions


def _ensure_schema(conn: psycopg.Connection, schema: str, owner: str, stop_owner: str) -> tuple[list[str], bool]:
    """The schema's actions, and whether `stop_owner` holds it (the tenant is over its maxSize)."""
    state = fetch_one(conn, sql.schema_state(schema))
    if state is None:
        conn.execute(sql.create_schema(schema, owner))
        # A new schema gives PUBLIC nothing, unless an admin set default privileges.
        conn.execute(sql.revoke_schema_from_public(schema))
        return ["created schema"], False
    actions = []
    if state["owner"] not in (owner, stop_owner):
        conn.execute(sql.alter_schema_owner(schema, owner))
        actions.append("changed schema owner")
    if state["public_privileges"]:
        conn.execute(sql.revoke_schema_from_public(schema))
        actions.append("revoked schema privileges from PUBLIC")
    return actions, state["owner"] == stop_owner


def _ensure_public_schema_locked(conn: psycopg.Connection) -> list[str]:
    """In PG15+ `public` belongs to pg_database_owner, i.e. the tenant: it could then
    create there, and grant others rights there. The admin takes it over instead."""
    state = fetch_one(conn, sql.schema_state("public"))
    if state is None:
        return []
    actions = []
    if not state["owned_by_current_user"]:
        conn.execute(sql.own_public_schema())
        actions.append("took ownership of schema public")
    if "CREATE" in state["public_privileges"]:
        conn.execute(sql.revoke_create_on_public_schema())
        actions.append("revoked CREATE on schema public from PUBLIC")
    return actions


# --- connections ------------------------------------------------------------------

def _data_dsn(admin_dsn: str, placement: DataPlacement) -> str:
    return make_conninfo(admin_dsn, dbname=placement.database)


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    # An explicit algorithm keeps libpq from asking the server (no round trip).
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


@dataclasses.dataclass(frozen=True)
class TableName:
    schema: str
    name: str
    has_data: bool = True
    """False for a partitioned table: its rows are dumped with its partitions."""


def snapshot_tables(admin_dsn: str, placement: DataPlacement) -> list[TableName]:
    """The tables a snapshot of the placement must contain (its schema, or the whole database)."""
    schema = placement.schema if placement.tier == SHARED else None
    with admin_session(_data_dsn(admin_dsn, placement), tenant_database=placement.tier == ISOLATED) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(*sql.snapshot_tables(schema)).fetchall()
    return [TableName(row["schema"], row["name"], row["has_data"]) for row in rows]
