"""What each tenant uses of the server: bytes on disk and sessions open, for every tenant in one query.

Measured once per resync pass (not per tenant): the sizes of the shared tier's
schemas (the sum of pg_total_relation_size over each schema's tables and
materialized views: their indexes and TOAST included), the sizes of the
isolated tier's databases (pg_database_size), and the sessions each tenant has
open (pg_stat_activity): its role's, and its shared app login's (the app's
connections to it, names.shared_app_login). Keyed by the tenant's PostgreSQL name
(names.sql_name); a quarantined copy has another name and is not counted.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from tenant_operator.api import names
from tenant_operator.infra.connection import admin_session


@dataclasses.dataclass(frozen=True)
class DataUsage:
    bytes: int
    connections: int


# A tenant name is at most 40 characters: tenant_ and 40 is the longest name to count.
_USAGE = sql.SQL("""
WITH schemas AS (
    SELECT n.nspname AS name, sum(pg_total_relation_size(c.oid))::bigint AS bytes
    FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm')
    WHERE n.nspname LIKE 'tenant\\_%' AND length(n.nspname) <= 47
    GROUP BY n.nspname
), databases AS (
    SELECT datname AS name, pg_database_size(oid) AS bytes FROM pg_database
    WHERE datname LIKE 'tenant\\_%' AND length(datname) <= 47 AND datallowconn
)
SELECT coalesce(s.name, d.name) AS name, coalesce(s.bytes, 0) + coalesce(d.bytes, 0) AS bytes
FROM schemas s FULL JOIN databases d ON d.name = s.name
""")
_SESSIONS = sql.SQL(
    "SELECT CASE WHEN starts_with(usename, %(login)s) THEN 'tenant_' || substr(usename, length(%(login)s) + 1)"
    " ELSE usename END, count(*) FROM pg_stat_activity"
    " WHERE usename LIKE 'tenant\\_%%' OR starts_with(usename, %(login)s) GROUP BY 1")


def tenant_bytes(conn: psycopg.Connection, schema: str, database: str | None) -> int:
    """One tenant's bytes as measure() counts them (`database`: its own, isolated tier), on an admin session."""
    if database is not None:
        row = conn.execute("SELECT pg_database_size(%s)", [database]).fetchone()
    else:
        row = conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c"
                           " JOIN pg_namespace n ON n.oid = c.relnamespace"
                           " WHERE n.nspname = %s AND c.relkind IN ('r', 'm')", [schema]).fetchone()
    return int(row[0]) if row else 0


def measure_one(shared_dsn: str, schema: str, database: str | None, role: str) -> DataUsage:
    """One tenant's usage, for its first status before any resync."""
    with admin_session(shared_dsn) as conn:
        size = tenant_bytes(conn, schema, database)
        sessions = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)",
                                [[role, names.shared_app_login_of_role(role)]]).fetchone()
    return DataUsage(size, int(sessions[0]) if sessions else 0)


def measure(shared_dsn: str) -> dict[str, DataUsage]:
    """Every tenant's usage on the server of `shared_dsn` (the admin's, on the shared database)."""
    with admin_session(shared_dsn) as conn:
        sizes = {name: int(size or 0) for name, size in conn.execute(_USAGE).fetchall()}
        sessions = {name: int(count) for name, count in conn.execute(
            _SESSIONS, {"login": names.SHARED_APP_LOGIN_PREFIX}).fetchall()}
    return {name: DataUsage(size, sessions.get(name, 0)) for name, size in sizes.items()}


class Snapshot:
    """One measurement shared by a resync pass; taken again once it is older than `max_age`."""

    def __init__(self, measure_now: Callable[[], dict[str, DataUsage]], max_age: float):
        self._measure = measure_now
        self.max_age = max_age
        self._lock = threading.Lock()
        self._taken: tuple[float, dict[str, DataUsage]] | None = None

    def get(self) -> dict[str, DataUsage]:
        with self._lock:  # the pass's workers wait for the one measurement rather than each taking one
            if self._taken is None or time.monotonic() - self._taken[0] > self.max_age:
                self._taken = (time.monotonic(), self._measure())
            return self._taken[1]

    def forget(self) -> None:
        with self._lock:
            self._taken = None
