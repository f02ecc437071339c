"""The app's settings, from the environment the operator's manifests give it.

Shared mode is chosen by TENANT_ROUTES_DIR, isolated mode by TENANT_ID; a
deployment that sets both or neither is refused at start rather than serving
the wrong tenants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from shared_app.pools import Address, Pools
from shared_app.routing import Routes, SingleTenant


class SettingsError(ValueError):
    """The environment does not describe a way to run; the message says what to set."""


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str
    routes_dir: str | None = None
    tenant_id: str | None = None
    schema: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    pool_size: int = 10
    pool_timeout: float = 5.0

    @property
    def mode(self) -> str:
        return "shared" if self.routes_dir else "isolated"


def _number(environ: Mapping[str, str], name: str, default: float, kind: type) -> float:
    try:
        value = kind(environ.get(name) or default)
    except ValueError:
        raise SettingsError(f"{name} is not a number: {environ[name]!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    if not environ.get("DATABASE_URL"):
        raise SettingsError("set DATABASE_URL to the DSN the app logs in with")
    routes_dir, tenant_id = environ.get("TENANT_ROUTES_DIR"), environ.get("TENANT_ID")
    if bool(routes_dir) == bool(tenant_id):
        raise SettingsError("set TENANT_ROUTES_DIR (shared mode) or TENANT_ID (isolated mode), exactly one")
    return Settings(
        database_url=environ["DATABASE_URL"],
        routes_dir=routes_dir or None,
        tenant_id=tenant_id or None,
        schema=environ.get("DATABASE_SCHEMA") or None,
        host=environ.get("HOST") or "0.0.0.0",
        port=int(_number(environ, "PORT", 8080, int)),
        pool_size=int(_number(environ, "POOL_SIZE", 10, int)),
        pool_timeout=_number(environ, "POOL_TIMEOUT", 5.0, float),
    )


def routes_from_settings(settings: Settings) -> Routes | SingleTenant:
    if settings.routes_dir:
        return Routes(settings.routes_dir)
    if settings.tenant_id:
        return SingleTenant(settings.tenant_id, settings.schema)
    raise SettingsError("set TENANT_ROUTES_DIR (shared mode) or TENANT_ID (isolated mode)")


def open_pool(settings: Settings, conninfo: str | None = None, name: str = "shared-app") -> ConnectionPool:
    """A pool that opens its connections in the background, so the app starts while the database is down.

    check= tests an idle connection before handing it out: the operator ends
    the app's sessions when it revokes a membership, and such a connection
    is replaced instead of failing a request. `conninfo` is another server's
    (server_conninfo); by default DATABASE_URL's.
    """
    pool = ConnectionPool(conninfo or settings.database_url, min_size=1, max_size=settings.pool_size, open=False,
                          check=ConnectionPool.check_connection, timeout=settings.pool_timeout, name=name)
    pool.open(wait=False)
    return pool


def server_conninfo(database_url: str, host: str, port: int) -> str:
    """DATABASE_URL's login and database on another server: the app role is the same on every one."""
    params = conninfo_to_dict(database_url)
    params.pop("hostaddr", None)  # it would win over the new host
    params.update(host=host, port=port)
    return make_conninfo("", **params)


def url_address(database_url: str) -> Address | None:
    """DATABASE_URL's (host, port) as routing entries write it (libpq's defaults), None if it names several."""
    params = conninfo_to_dict(database_url)
    try:
        return str(params.get("host") or "localhost"), int(params.get("port") or 5432)
    except ValueError:
        return None


def open_pools(settings: Settings) -> Pools:
    """DATABASE_URL's pool now, and one per other server address when a route first names it."""
    def open_other(host: str, port: int) -> ConnectionPool:
        return open_pool(settings, server_conninfo(settings.database_url, host, port), f"shared-app {host}:{port}")

    return Pools(open_pool(settings), url_address(settings.database_url), open_other)
