"""How the operator opens PostgreSQL sessions: named, pinned, kept, and failing with a clear reason.

Every admin session carries the process's identity as application_name (a new
leader ends exactly a deposed process's sessions, tenantlock.py) and pins its
search_path in the startup packet, which outranks database and role settings: a
tenant owning its database cannot put its own functions ahead of pg_catalog for
us (postgres.py's docstring tells the whole story). A server that is not there
becomes DatabaseUnavailable with libpq's reason and without the password.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from tenant_operator.infra import sql
from tenant_operator.infra.sessions import IdleSessions

# Used only when the DSN names no connect_timeout: a worker thread must not hang.
DEFAULT_CONNECT_TIMEOUT = 10

# Errors that mean "the server is not there right now", not "the statement is wrong":
# connection exceptions (08), shutdown/crash/starting up (57P), too many connections.
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")

# Startup parameters of every admin session (see the module docstring). pg_catalog alone:
# every statement of the operator names its objects, so nothing else need be found.
ADMIN_SESSION_SETTINGS = {"search_path": "pg_catalog"}
# And in a database a tenant owns: who we are, and what a tenant could set to make our
# statements fail (read-only, timeouts, a library to preload that is not there).
TENANT_DATABASE_SESSION_SETTINGS = {
    **ADMIN_SESSION_SETTINGS,
    "role": "none",
    "default_transaction_read_only": "off",
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "local_preload_libraries": "",
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
}
# Every session the operator opens carries its process identity as application_name: a new
# leader that must take a tenant's lock from a deposed process ends exactly that process's
# sessions (tenantlock.py). Set once at start-up by identify().
APPLICATION_PREFIX = "tenant-operator/"
_application_name = APPLICATION_PREFIX + "unnamed"


def identify(identity: str) -> None:
    """Name this process's sessions (before the first connection)."""
    global _application_name
    _application_name = (APPLICATION_PREFIX + identity)[:63]
    _session_conninfo.cache_clear()


def application_name() -> str:
    return _application_name


class DatabaseUnavailable(Exception):
    """The server cannot be reached (or is going away); worth retrying later."""


def first_row(cursor: psycopg.Cursor[Any]) -> Any:
    """The row of a statement that always answers one (an aggregate, a function call)."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.ProgrammingError("no row from a statement that always answers one")
    return row


def admin_session_dsn(dsn: str, tenant_database: bool = False) -> str:
    """The admin conninfo with the session settings no database owner can override.

    `tenant_database`: the session goes into a database a tenant owns (isolated tier).
    Settings already in the DSN's `options` are kept; ours come last, so they win.
    """
    settings = TENANT_DATABASE_SESSION_SETTINGS if tenant_database else ADMIN_SESSION_SETTINGS
    ours = " ".join(f"-c {key}={value}" for key, value in settings.items())
    theirs = _parse_dsn(dsn).get("options")
    return make_conninfo(dsn, options=f"{theirs} {ours}" if theirs else ours, application_name=_application_name)


@functools.lru_cache(maxsize=4096)
def _session_conninfo(dsn: str, tenant_database: bool) -> tuple[str, dict[str, Any]]:
    """What admin_session connects with, and the DSN's parts for messages.

    Cached: parsing a conninfo costs more than a query.
    """
    params = _parse_dsn(dsn)
    dsn = admin_session_dsn(dsn, tenant_database)
    if "connect_timeout" not in params:
        dsn = make_conninfo(dsn, connect_timeout=DEFAULT_CONNECT_TIMEOUT)
    return dsn, params


IDLE_SESSIONS = IdleSessions()


def take_admin_session(dsn: str) -> psycopg.Connection:
    """An admin session of the caller's own until keep_admin_session(): a kept one, else a new one."""
    dsn, params = _session_conninfo(dsn, False)
    conn = IDLE_SESSIONS.take(dsn)
    if conn is None:
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise _unavailable(params, exc) from None
    return conn


def keep_admin_session(dsn: str, conn: psycopg.Connection) -> None:
    """Hand back a session of take_admin_session(): kept if it ended cleanly, closed otherwise."""
    IDLE_SESSIONS.give(_session_conninfo(dsn, False)[0], conn)


@contextmanager
def admin_session(dsn: str, tenant_database: bool = False) -> Iterator[psycopg.Connection]:
    """An admin session: one kept open from before when there is one, except in a tenant's own database."""
    dsn, params = _session_conninfo(dsn, tenant_database)
    conn = None if tenant_database else IDLE_SESSIONS.take(dsn)
    if conn is None:
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise _unavailable(params, exc) from None
    try:
        yield conn
    except psycopg.Error as exc:
        lost = conn.broken
        conn.close()
        if lost or _means_unavailable(exc):
            raise _unavailable(params, exc) from None
        raise
    except BaseException:
        conn.close()
        raise
    if tenant_database:
        conn.close()
    else:
        IDLE_SESSIONS.give(dsn, conn)


def _parse_dsn(dsn: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's parse errors quote the offending text, which may be the password.
        raise ValueError("the admin DSN is not a valid libpq connection string") from None


def _means_unavailable(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    return isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(_UNAVAILABLE_SQLSTATES))


def _unavailable(params: dict[str, Any], exc: psycopg.Error) -> DatabaseUnavailable:
    """A message naming the server and libpq's reason, scrubbed of the password.

    Raised `from None`: a chained psycopg error would print its own text into
    the operator's log, and that is text we did not check.
    """
    reason = " ".join(str(exc).split()) or type(exc).__name__
    password = params.get("password")
    if password:
        reason = reason.replace(str(password), "***")
    where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    return DatabaseUnavailable(f"PostgreSQL at {where} is unavailable: {reason}")


# --- snapshots (reclaimPolicy Snapshot) --------------------------------------------


def fetch_one(conn: psycopg.Connection, query: sql.Query) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(*query).fetchone()


def fetch_row(conn: psycopg.Connection, query: sql.Query) -> dict[str, Any]:
    """The one row of a query that always answers one (an aggregate, an object known to exist)."""
    row = fetch_one(conn, query)
    if row is None:
        raise psycopg.ProgrammingError(f"no row from a query that always answers one: {query.statement!r}")
    return row
