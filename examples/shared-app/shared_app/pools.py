"""One connection pool per database server address and login.

In shared mode each tenant has a login of its own (`tenancy_app_for_<tenant>`,
NOINHERIT, a member of that tenant's role alone). Tenant code runs inside the
app's transactions (a trigger, a DEFAULT), and RESET ROLE there goes back to
the login: a login per tenant means that gets nowhere but the same tenant. So
a pool holds one tenant's connections on one server, and its key is the
route's (host, port) and login. Every login has the same password and the
shared database the same name on every server, so DATABASE_URL with the
route's login, host and port is the pool's conninfo (settings.py).

A pool is made the first time a route names its key and starts empty, so a
tenant that gets no requests costs no connection. The number of pools is
capped: past the cap the least recently used one is closed, in the
background, rather than a tenant refused. psycopg_pool lets the connections
in use finish and closes them when they come back; a request that took the
pool just before gets PoolClosed, an OperationalError, and so a 503.

In isolated mode the login is the tenant: one pool, made at start, serves its
routes (which have no login).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from psycopg_pool import ConnectionPool

from shared_app.database import DatabaseUnavailable
from shared_app.routing import Route

log = logging.getLogger(__name__)

MAX_POOLS = 64

Address = tuple[str, int]
PoolKey = tuple[Address | None, str]
"""A server address (None: DATABASE_URL's, when it has no single one) and a login."""


class Pools:
    """The pool for each (address, login); `for_route` picks (or makes) a route's.

    `default` serves routes without a login (isolated mode). Without
    `open_pool` it serves every route (one login: in-process tests).
    `address` is DATABASE_URL's, the server of routes that name none.
    """

    def __init__(self, default: ConnectionPool | None = None,
                 open_pool: Callable[[Address | None, str], ConnectionPool] | None = None, *,
                 address: Address | None = None, limit: int = MAX_POOLS) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.default = default
        self.address = address
        self._open_pool = open_pool
        self._limit = limit
        self._lock = threading.Lock()
        # Least recently used first.
        self._pools: collections.OrderedDict[PoolKey, ConnectionPool] = collections.OrderedDict()

    def for_route(self, route: Route) -> ConnectionPool:
        if route.login is None or self._open_pool is None:
            if self.default is None:
                raise DatabaseUnavailable(f"no login to serve tenant {route.tenant!r} with")
            return self.default
        key = (route.address or self.address, route.login)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            evicted = self._pools.popitem(last=False) if len(self._pools) >= self._limit else None
            log.info("opening a pool for %s on database server %s at %s", route.login, route.server or "?",
                     where(key[0]))
            # Cheap under the lock: the pool connects in its own thread (open(wait=False)).
            pool = self._pools[key] = self._open_pool(*key)
        if evicted is not None:
            (address, login), old = evicted
            log.info("closing the least recently used pool, %s at %s: %d pools at most", login, where(address),
                     self._limit)
            _close_in_background(old)
        return pool

    def keys(self) -> list[PoolKey]:
        """The keys of the pools open now, least recently used first (not the default's)."""
        with self._lock:
            return list(self._pools)

    def close(self) -> None:
        """Close every pool; the app is stopping."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        if self.default is not None:
            pools.insert(0, self.default)
        for pool in pools:
            pool.close()


def where(address: Address | None) -> str:
    """An address for logs and pool names."""
    return f"{address[0]}:{address[1]}" if address else "DATABASE_URL's server"


def _close_in_background(pool: ConnectionPool) -> None:
    # close() waits for the pool's worker threads: not on a request's time.
    threading.Thread(target=pool.close, name=f"close {pool.name}", daemon=True).start()
