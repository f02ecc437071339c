"""Which tenant is which: the routing table, and the one tenant of isolated mode.

In shared mode the operator keeps a ConfigMap with one key per tenant, mounted
as a directory. The kubelet updates such a volume atomically: the files live
in a hidden timestamped directory (`..2026_...`), `..data` links to the current
one, and each visible name is a symlink through `..data`. So a change shows as
a new `..data` target, hidden entries are never tenants, and a file is read
through its link.

The app looks a tenant up on every request, so the directory is checked at
most once an interval (stat calls only) and re-read only when it changed.
Lookups are exact dictionary keys: a header value never reaches the filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ACTIVE = "active"
SUSPENDED = "suspended"
MOVING = "moving"
STATES = frozenset({ACTIVE, SUSPENDED, MOVING})

DATA_LINK = "..data"
CHECK_INTERVAL_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Route:
    """Where one tenant's data is and whether it may be served now.

    `login` is what the app logs in as to serve this tenant in shared mode: a
    role of its own that can become `role` and no other tenant's. Both are
    None in isolated mode, where the login already is the tenant. `host` and
    `port` are the database server the tenant lives on; None (an entry from
    before servers, or isolated mode) is the server of DATABASE_URL.
    """

    tenant: str
    schema: str | None
    role: str | None
    login: str | None = None
    database: str | None = None
    state: str = ACTIVE
    server: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the tenant's server, or None for DATABASE_URL's own."""
        return (self.host, self.port) if self.host is not None and self.port is not None else None


class MalformedRoute(ValueError):
    """A routing entry the app cannot use; its tenant is treated as unknown."""


def parse_route(tenant: str, text: str) -> Route:
    """One routing file's JSON, checked field by field."""
    try:
        entry = json.loads(text)
    except ValueError as error:
        raise MalformedRoute(f"not JSON: {error}") from None
    if not isinstance(entry, dict):
        raise MalformedRoute("not a JSON object")
    # An entry without a login is an older operator's (the new one rewrites them at its start):
    # DATABASE_URL names no user, and there is no shared login to fall back on (pools.py).
    for field in ("schema", "role", "login"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise MalformedRoute(f"{field!r} is missing or not a non-empty string")
    database = entry.get("database")
    if database is not None and not isinstance(database, str):
        raise MalformedRoute("'database' is not a string")
    # An unknown state is not served: only the operator knows what it would mean.
    state = entry.get("state")
    if not isinstance(state, str) or state not in STATES:
        raise MalformedRoute(f"'state' is not one of {sorted(STATES)}")
    server, host, port = _server(entry)
    return Route(tenant, entry["schema"], entry["role"], entry["login"], database, state, server, host, port)


def _server(entry: dict) -> tuple[str | None, str | None, int | None]:
    """The entry's server name, host and port; host and port come together or not at all."""
    server, host, port = entry.get("server"), entry.get("host"), entry.get("port")
    if server is not None and (not isinstance(server, str) or not server):
        raise MalformedRoute("'server' is not a non-empty string")
    if host is None and port is None:
        return server, None, None
    if not isinstance(host, str) or not host:
        raise MalformedRoute("'host' is missing or not a non-empty string")
    # bool is an int to Python; "5432" is a string: neither is a port.
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise MalformedRoute("'port' is missing or not a number from 1 to 65535")
    return server, host, port


def _visible_names(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def directory_signature(directory: Path) -> tuple:
    """What changes whenever the routing directory's content does, from stat calls only.

    `..data`'s target changes on every ConfigMap update; the names, inodes,
    mtimes and sizes cover a plain directory (local runs, tests).
    """
    try:
        data = os.readlink(directory / DATA_LINK)
    except OSError:
        data = None
    try:
        names = _visible_names(directory)
    except OSError:
        return (data, None)
    entries = []
    for name in names:
        try:
            stat = os.stat(directory / name)
        except OSError:
            continue  # a dangling link while the kubelet swaps `..data`
        entries.append((name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return (data, tuple(entries))


def read_table(directory: Path) -> dict[str, Route]:
    """Every well-formed entry of the directory; a malformed one is logged and left out."""
    try:
        names = _visible_names(directory)
    except OSError as error:
        log.warning("routing directory %s unreadable (%s): no tenant is served", directory, error)
        return {}
    table = {}
    for name in names:
        path = directory / name
        if not path.is_file():
            continue
        try:
            table[name] = parse_route(name, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, MalformedRoute) as error:
            log.warning("routing entry %r ignored, the tenant is unknown until it is fixed: %s", name, error)
    return table


class Routes:
    """Shared mode: the routing table read from TENANT_ROUTES_DIR, kept current."""

    default_tenant: str | None = None
    """Shared mode has no default: a request must name its tenant."""

    def __init__(self, directory: Path | str, *, clock: Callable[[], float] = time.monotonic,
                 interval: float = CHECK_INTERVAL_SECONDS) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._table: dict[str, Route] = {}
        self._checked_at = clock()
        self.refresh()

    def lookup(self, tenant: str) -> Route | None:
        """The tenant's route, or None for any name that is not exactly a key of the table."""
        self._refresh_if_due()
        return self._table.get(tenant)

    def tenants(self) -> frozenset[str]:
        return frozenset(self._table)

    def refresh(self) -> bool:
        """Re-read the directory if it changed since the last look; True when the table changed."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_if_due(self) -> None:
        if self._clock() - self._checked_at < self._interval:
            return
        # One request thread looks; the others go on with the table they have.
        if self._lock.acquire(blocking=False):
            try:
                self._refresh_locked()
            finally:
                self._lock.release()

    def _refresh_locked(self) -> bool:
        self._checked_at = self._clock()
        # Taken before reading: a change made while reading shows at the next look.
        signature = directory_signature(self.directory)
        if signature == self._signature:
            return False
        table = read_table(self.directory)
        self._signature = signature
        changed, self._table = table != self._table, table
        if changed:
            log.info("routing table now has %d tenants", len(table))
        return changed


class SingleTenant:
    """Isolated mode: the one tenant this deployment serves, as its own login."""

    def __init__(self, tenant: str, schema: str | None = None) -> None:
        self.default_tenant = tenant
        self._route = Route(tenant, schema, role=None)

    def lookup(self, tenant: str) -> Route | None:
        return self._route if tenant == self._route.tenant else None

    def tenants(self) -> frozenset[str]:
        return frozenset({self._route.tenant})
