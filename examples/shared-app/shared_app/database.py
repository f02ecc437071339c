"""One request's transaction, as its tenant, on a pooled connection.

In shared mode the app logs in as the tenant's own app login, a NOINHERIT
member of the tenant's role: it reaches no data until it runs `SET ROLE
<tenant role>`. Doing that with SET LOCAL inside the request's one
transaction means the role and search_path end with the transaction: a
connection goes back to the pool as the login again, whatever the handler
did or however it failed. Identifiers come from the routing table and are
quoted by psycopg.sql, never formatted into the text.

The operator revokes a membership (a move's freeze, a suspension) and then
ends the login's sessions, so two failures are expected here and told apart
for the caller: SET ROLE refused (the routing file not updated yet) and a
connection that broke.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from shared_app.routing import Route

# PostgreSQL's answers to SET ROLE for a role we may no longer use, or that is gone.
_REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidParameterValue)


class AccessRevoked(Exception):
    """PostgreSQL refused SET ROLE: the tenant's role is not ours to use now."""


class DatabaseUnavailable(Exception):
    """No working connection: the server is down, or ended our session."""


def tenant_statements(route: Route) -> list[sql.Composed]:
    """What a transaction runs first to act as the route's tenant, in order."""
    statements = []
    if route.role:
        statements.append(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(route.role)))
    if route.schema:
        statements.append(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(route.schema)))
    return statements


def _enter_tenant(conn: psycopg.Connection, route: Route) -> None:
    for statement in tenant_statements(route):
        try:
            conn.execute(statement)
        except _REFUSED as error:
            raise AccessRevoked(str(error).strip()) from error


@contextlib.contextmanager
def tenant_transaction(pool: ConnectionPool, route: Route, timeout: float) -> Iterator[psycopg.Connection]:
    """A connection inside one transaction that acts as the route's tenant.

    A broken connection is not put back for reuse: the pool discards it on
    return and opens another, and checks idle ones before handing them out.
    """
    try:
        with pool.connection(timeout=timeout) as conn, conn.transaction():
            _enter_tenant(conn, route)
            yield conn
    except psycopg.OperationalError as error:
        # PoolTimeout is one too (no connection could be had in time), and PoolClosed (the
        # pool was closed as least recently used between for_route and here).
        raise DatabaseUnavailable(str(error).strip()) from error
