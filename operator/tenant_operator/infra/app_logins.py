"""The shared workload's logins: one per shared tenant, reaching that tenant alone.

Each shared tenant has a login names.shared_app_login(tenant): LOGIN NOINHERIT,
CONNECT on the shared database, no privilege of its own, and a member of the
tenant's role while the tenant is served (role_grants.py). The shared app opens a
tenant's connections as that login and runs each request as `SET LOCAL ROLE` to
the tenant.

Why not one app role for every tenant: the tenant's own code (a trigger, a
DEFAULT, a function behind a CHECK) runs inside the app's transaction, and there
`RESET ROLE` goes back to the session's login. A login that could SET ROLE to
every tenant would hand any tenant every other one; a login of its own reaches
nothing but the tenant whose code it is.

Every login has the same password, the Secret names.SHARED_APP_SECRET's (the
Secret is the truth). This process remembers the password the logins of each
server take: a Secret holding another one (a rotation, a Secret made again) sets
it on every login of that server, and a login made later gets it too. Both
happen under one lock, so a login made during a rotation cannot keep the old
password. At start-up one login is tried with the Secret's password: logins are
only ever set all together (a rotation cut short is redone, its request still
unanswered), so a restart costs one login, not a write per tenant.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql as q
from psycopg.conninfo import make_conninfo

from tenant_operator.api import names
from tenant_operator.infra import sql

_lock = threading.Lock()
_password: str | None = None
_set_on: dict[str, str] = {}
"""Server (its admin DSN) -> the password every login there takes, as this process knows."""
LOGIN_TIMEOUT = 10


def _verifier(conn: psycopg.Connection, login: str, password: str) -> str:
    # An explicit algorithm keeps libpq from asking the server (no round trip).
    return conn.pgconn.encrypt_password(password.encode(), login.encode(), b"scram-sha-256").decode()


def logins(conn: psycopg.Connection) -> list[str]:
    """The tenant logins granted CONNECT on the session's database (this installation's shared database)."""
    rows = conn.execute(
        "SELECT r.rolname FROM pg_roles r WHERE starts_with(r.rolname, %s) AND EXISTS ("
        " SELECT 1 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()"
        "  AND a.grantee = r.oid AND a.privilege_type = 'CONNECT') ORDER BY 1",
        [names.SHARED_APP_LOGIN_PREFIX]).fetchall()
    return [row[0] for row in rows]


def set_password(conn: psycopg.Connection, server: str, password: str) -> int:
    """Make `password` every login's on the session's server (`server`: its admin DSN); how many were set."""
    global _password
    with _lock:
        _password = password
        if _set_on.get(server) == password:
            return 0
        every = logins(conn)
        if every and _accepts(server, every[0], password):
            _set_on[server] = password
            return 0
        verifier = _verifier(conn, "", password)  # SCRAM's verifier does not depend on the name: one for all
        for login in every:
            conn.execute(sql.alter_role_password(login, verifier))
        _set_on[server] = password
        return len(every)


def _accepts(server: str, login: str, password: str) -> bool:
    try:
        psycopg.connect(make_conninfo(server, user=login, password=password, connect_timeout=LOGIN_TIMEOUT,
                                      options="")).close()
    except psycopg.OperationalError:
        return False
    return True


def forget(server: str) -> None:
    """The server's logins are looked at again next time (it was unreachable, or a login was made elsewhere)."""
    with _lock:
        _set_on.pop(server, None)


def make_login(conn: psycopg.Connection, login: str, connection_limit: int) -> bool:
    """Create the login with the app's password, CONNECT on the session's database; False before one is known."""
    with _lock:
        if _password is None:
            return False
        conn.execute(sql.create_login_role(login, _verifier(conn, login, _password), connection_limit))
        conn.execute(sql.grant_connect(conn.info.dbname, login))
        return True


def drop_old_app_role(conn: psycopg.Connection) -> list[str]:
    """Earlier builds' one app role of the shared database (names.shared_app_role): its ways in go, then it.

    Its memberships are taken first, and its sessions ended, so that even if DROP ROLE
    fails (something else granted it a privilege) it reaches no tenant any more.
    """
    old = names.shared_app_role(conn.info.dbname)
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [old]).fetchone() is None:
        return []
    conn.execute(sql.alter_role_login(old, False))
    granted = conn.execute("SELECT m.roleid::regrole::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                           " WHERE r.rolname = %s", [old]).fetchall()
    for (role,) in granted:
        conn.execute(q.SQL("REVOKE {} FROM {} CASCADE").format(q.SQL(role), sql.ident(old)))
    conn.execute(*sql.terminate_sessions(old))
    conn.execute(sql.revoke_connect(conn.info.dbname, old))
    try:
        with conn.transaction():
            conn.execute(sql.drop_role(old))
    except psycopg.errors.DependentObjectsStillExist:
        return [f"took every tenant from {old} (it is still granted something elsewhere, so it stays, NOLOGIN)"]
    return [f"dropped {old}, the one app role of earlier builds"]
