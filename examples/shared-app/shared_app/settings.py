"""The app's settings, from the environment the operator's manifests give it.

Shared mode is chosen by TENANT_ROUTES_DIR, isolated mode by TENANT_ID; a
deployment that sets both or neither is refused at start rather than serving
the wrong tenants. In shared mode DATABASE_URL (the shared-app-db Secret's)
names no user: each route names the login to use with its password.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from shared_app.pools import MAX_POOLS, Address, Pools, where
from shared_app.routing import Routes, SingleTenant

TENANT_POOL_IDLE = 60.0
"""Seconds a tenant pool's connection may sit unused before it is closed."""


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
    pool_size: int = 4
    pool_timeout: float = 5.0
    max_pools: int = MAX_POOLS

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
    try:
        conninfo_to_dict(environ["DATABASE_URL"])
    except psycopg.ProgrammingError as error:
        # Not the message: it may quote the URL, password and all.
        raise SettingsError(f"DATABASE_URL is not a PostgreSQL URL or conninfo ({type(error).__name__})") from None
    return Settings(
        database_url=environ["DATABASE_URL"],
        routes_dir=routes_dir or None,
        tenant_id=tenant_id or None,
        schema=environ.get("DATABASE_SCHEMA") or None,
        host=environ.get("HOST") or "0.0.0.0",
        port=int(_number(environ, "PORT", 8080, int)),
        pool_size=int(_number(environ, "POOL_SIZE", 4, int)),
        pool_timeout=_number(environ, "POOL_TIMEOUT", 5.0, float),
        max_pools=int(_number(environ, "MAX_POOLS", MAX_POOLS, int)),
    )


def routes_from_settings(settings: Settings) -> Routes | SingleTenant:
    if settings.routes_dir:
        return Routes(settings.routes_dir)
    if settings.tenant_id:
        return SingleTenant(settings.tenant_id, settings.schema)
    raise SettingsError("set TENANT_ROUTES_DIR (shared mode) or TENANT_ID (isolated mode)")


def open_pool(settings: Settings) -> ConnectionPool:
    """Isolated mode's one pool, of DATABASE_URL, made at start.

    It opens its connections in the background, so the app starts while the
    database is down. check= tests an idle connection before handing it out:
    the operator ends the tenant's sessions when it moves or suspends it, and
    such a connection is replaced instead of failing a request.
    """
    pool = ConnectionPool(settings.database_url, min_size=1, max_size=settings.pool_size, open=False,
                          check=ConnectionPool.check_connection, timeout=settings.pool_timeout, name="shared-app")
    pool.open(wait=False)
    return pool


def open_tenant_pool(settings: Settings, conninfo: str, name: str) -> ConnectionPool:
    """A pool of one tenant's login in shared mode, made when a route first names it.

    Empty until used and emptied again after a minute idle (min_size=0,
    max_idle), with one worker thread: an app may hold dozens of these.
    """
    pool = ConnectionPool(conninfo, min_size=0, max_size=settings.pool_size, open=False, max_idle=TENANT_POOL_IDLE,
                          num_workers=1, check=ConnectionPool.check_connection, timeout=settings.pool_timeout,
                          name=name)
    pool.open(wait=False)
    return pool


def login_conninfo(database_url: str, login: str, address: Address | None) -> str:
    """DATABASE_URL's database and password, as `login`, on the server at `address` (None: DATABASE_URL's)."""
    params = conninfo_to_dict(database_url)
    if address is not None:
        params.pop("hostaddr", None)  # it would win over the new host
        params.update(host=address[0], port=address[1])
    params["user"] = login
    return make_conninfo("", **params)


def url_address(database_url: str) -> Address | None:
    """DATABASE_URL's (host, port) as routing entries write it (libpq's defaults), None if it names several."""
    params = conninfo_to_dict(database_url)
    try:
        return str(params.get("host") or "localhost"), int(params.get("port") or 5432)
    except ValueError:
        return None


def open_pools(settings: Settings) -> Pools:
    """Isolated mode: DATABASE_URL's pool now. Shared mode: none now, one per (address, login) when first named."""
    if settings.mode == "isolated":
        return Pools(open_pool(settings))

    def open_for(address: Address | None, login: str) -> ConnectionPool:
        return open_tenant_pool(settings, login_conninfo(settings.database_url, login, address),
                                f"shared-app {login}@{where(address)}")

    return Pools(None, open_for, address=url_address(settings.database_url), limit=settings.max_pools)

