"""The shared workload's own login: it reaches a tenant's data only by SET ROLE to that tenant.

One role per shared database (names.shared_app_role): LOGIN NOINHERIT,
CONNECT on the shared database, no privilege of its own on any tenant's data.
It is a member of each shared tenant's role while that tenant is served (Ready,
not suspended, not frozen for a move), so `SET ROLE tenant_x` is the only way in,
and only while x is served; postgres.py grants and takes that membership with the
tenant's other attributes. A superuser DSN for the shared app would throw the
tenants' isolation away; this role cannot even read a table without SET ROLE.

Its password lives in the Secret names.SHARED_APP_SECRET: the Secret is the truth,
the role is made to match it (checked by logging in with it, which writes nothing).
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from tenant_operator.api.names import shared_app_role
from tenant_operator.infra import sql
from tenant_operator.infra.connection import admin_session, fetch_one
from tenant_operator.infra.postgres import EnsureResult, scram_verifier

# The shared workload's pool across its replicas; a runaway pool must not take the server's max_connections.
CONNECTION_LIMIT = 200
LOGIN_TIMEOUT = 10


def ensure_app_role(shared_dsn: str, password: str) -> EnsureResult:
    """The app role as it must be, with `password`; `shared_dsn` is the admin's, on the shared database."""
    actions: list[str] = []
    with admin_session(shared_dsn) as conn:
        database = conn.info.dbname
        app = shared_app_role(database)
        state = fetch_one(conn, sql.role_state(app))
        if state is None:
            conn.execute(sql.create_login_role(app, scram_verifier(conn, app, password),
                                               CONNECTION_LIMIT))
            actions.append("created the shared app role")
        else:
            if _attributes_wrong(state):
                conn.execute(sql.alter_role_attributes(app, CONNECTION_LIMIT))
                conn.execute(sql.alter_role_login(app, True))
                actions.append("reset the shared app role's attributes")
        if state is None or not state["connect_granted"]:
            conn.execute(sql.grant_connect(database, app))
            actions.append("granted CONNECT on the shared database to the shared app role")
        if state is not None and not _logs_in(shared_dsn, app, password):
            conn.execute(sql.alter_role_password(app, scram_verifier(conn, app, password)))
            actions.append("set the shared app role's password")
    return EnsureResult(tuple(actions))


def _attributes_wrong(state: dict) -> bool:
    powers = ("rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
    return (any(state[power] for power in powers) or not state["rolcanlogin"]
            or state["rolconnlimit"] != CONNECTION_LIMIT)


def _logs_in(shared_dsn: str, app: str, password: str) -> bool:
    """Whether the role takes this password: what the shared workload will try."""
    dsn = make_conninfo(shared_dsn, user=app, password=password, connect_timeout=LOGIN_TIMEOUT,
                        options="")
    try:
        psycopg.connect(dsn).close()
    except psycopg.OperationalError:
        return False
    return True

