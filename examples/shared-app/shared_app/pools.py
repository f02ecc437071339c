"""One connection pool per database server the app's tenants live on.

The operator may place the shared tier's tenants on several PostgreSQL
servers; a routing entry names its server's host and port. The app role has
the same name and password on every one of them, so DATABASE_URL's login
works everywhere and only the address changes. The pool of DATABASE_URL is
made at start; a pool for another address is made the first time a route
names it, sized like the first, and kept until shutdown. The number of pools
is capped: a routing table is trusted, but a bad one must not open
connections without end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from psycopg_pool import ConnectionPool

from shared_app.database import DatabaseUnavailable
from shared_app.routing import Route

log = logging.getLogger(__name__)

MAX_POOLS = 16

Address = tuple[str, int]


class Pools:
    """The pool for each server address; `for_route` picks (or makes) a route's.

    `default` serves routes without an address and those naming `address`.
    Without `open_pool` there is one server: every route is served by `default`.
    """

    def __init__(self, default: ConnectionPool, address: Address | None = None,
                 open_pool: Callable[[str, int], ConnectionPool] | None = None, *, limit: int = MAX_POOLS) -> None:
        self.default = default
        self.address = address
        self._open_pool = open_pool
        self._limit = limit
        self._lock = threading.Lock()
        self._others: dict[Address, ConnectionPool] = {}

    def for_route(self, route: Route) -> ConnectionPool:
        address = route.address
        if address is None or address == self.address or self._open_pool is None:
            return self.default
        pool = self._others.get(address)
        if pool is not None:
            return pool
        with self._lock:
            return self._others.get(address) or self._open(address, route.server)

    def _open(self, address: Address, server: str | None) -> ConnectionPool:
        assert self._open_pool is not None
        if 1 + len(self._others) >= self._limit:
            raise DatabaseUnavailable(f"already {self._limit} database servers; none opened for "
                                      f"{address[0]}:{address[1]}")
        log.info("opening a pool for database server %s at %s:%d", server or "?", *address)
        pool = self._open_pool(*address)
        self._others[address] = pool
        return pool

    def addresses(self) -> list[Address]:
        """The addresses of the pools made since start, besides the default's."""
        with self._lock:
            return sorted(self._others)

    def close(self) -> None:
        """Close every pool; the app is stopping."""
        with self._lock:
            pools, self._others = [self.default, *self._others.values()], {}
        for pool in pools:
            pool.close()
