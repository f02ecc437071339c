"""The WSGI application: endpoints, the tenant middleware, one log line and metrics per request.

A request to /notes goes through a chain of guards before any SQL: a known
path and method, a tenant header, a tenant the routing table knows, a state
that may be served. Only then does it take a connection from the pool of the
tenant's login on its database server (pools.py), inside one transaction as
that tenant (database.py). /healthz and /metrics touch no tenant.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import psycopg
from psycopg_pool import ConnectionPool

from shared_app import notes
from shared_app.database import AccessRevoked, DatabaseUnavailable, tenant_transaction
from shared_app.metrics import CONTENT_TYPE, Metrics, tenant_label
from shared_app.pools import Pools
from shared_app.responses import HttpError, Response, json_response, unavailable
from shared_app.routing import MOVING, SUSPENDED, Route

log = logging.getLogger(__name__)

TENANT_HEADER = "HTTP_X_TENANT_ID"
ENDPOINTS = {"/notes": ("GET", "POST"), "/healthz": ("GET",), "/metrics": ("GET",)}
# Probes and scrapes are not tenant traffic: counted, they would drown the "unknown" series.
UNCOUNTED_PATHS = frozenset({"/healthz", "/metrics"})
POOL_TIMEOUT_SECONDS = 5.0


class RoutingTable(Protocol):
    """What the app needs of Routes (shared mode) or SingleTenant (isolated mode)."""

    @property
    def default_tenant(self) -> str | None:
        """The tenant of a request without X-Tenant-ID; None when the header is required."""

    def lookup(self, tenant: str) -> Route | None: ...

    def tenants(self) -> frozenset[str]: ...


@dataclasses.dataclass
class Request:
    method: str
    path: str
    tenant: str
    environ: dict
    route: Route | None = None
    """Set once the tenant is found in the routing table."""

    @classmethod
    def of(cls, environ: dict) -> Request:
        return cls(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/", environ.get(TENANT_HEADER, ""), environ)

    def body(self) -> bytes:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length > notes.MAX_BODY_BYTES:
            raise HttpError(413, f"the body is larger than {notes.MAX_BODY_BYTES} bytes")
        return self.environ["wsgi.input"].read(length) if length > 0 else b""


class SharedApp:
    """The WSGI callable; make_app builds it."""

    def __init__(self, routes: RoutingTable, pools: Pools, metrics: Metrics, pool_timeout: float,
                 clock: Callable[[], float]) -> None:
        self.routes = routes
        self.pools = pools
        self.metrics = metrics
        self.pool_timeout = pool_timeout
        self._clock = clock

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = self._clock()
        request = Request.of(environ)
        response = self._respond(request)
        seconds = self._clock() - started
        tenant = tenant_label(request.route)
        if request.path not in UNCOUNTED_PATHS:
            self.metrics.observe(tenant, response.status, seconds)
        # The label, not the raw header: a client's bytes do not go into the log.
        log.info("%s %s %d tenant=%s %.1fms", request.method, request.path, response.status, tenant,
                 seconds * 1000)
        start_response(response.status_line, [*response.headers, ("Content-Length", str(len(response.body)))])
        return [response.body]

    def _respond(self, request: Request) -> Response:
        try:
            return self._dispatch(request)
        except HttpError as error:
            return error.response()
        except AccessRevoked as error:
            # Only an active route gets here: the operator took the membership away (a move's
            # freeze, a suspension) and the mounted routing file has not caught up yet (the kubelet
            # can take a minute). It will say why soon; until then the client retries.
            log.warning("tenant %s: SET ROLE refused (%s)", tenant_label(request.route), error)
            return unavailable("this tenant's data cannot be reached now; retry shortly").response()
        except DatabaseUnavailable as error:
            log.warning("tenant %s: database unavailable (%s)", tenant_label(request.route), error)
            return unavailable("the database is unavailable; retry shortly").response()
        except psycopg.errors.InsufficientPrivilege as error:
            # As the tenant, a write refused: it is over its storage limit (the operator stopped its writes).
            log.warning("tenant %s: write refused (%s)", tenant_label(request.route), str(error).strip())
            return HttpError(403, "this tenant's data is read-only now (over its storage limit)").response()
        except Exception:
            # Answered here rather than by the server so the request is still logged and counted.
            log.exception("%s %s failed", request.method, request.path)
            return HttpError(500, "internal error").response()

    def _dispatch(self, request: Request) -> Response:
        methods = ENDPOINTS.get(request.path)
        if methods is None:
            raise HttpError(404, "no such path")
        if request.method not in methods:
            raise HttpError(405, "method not allowed", (("Allow", ", ".join(methods)),))
        if request.path == "/healthz":
            return json_response(200, {"status": "ok"})
        if request.path == "/metrics":
            return Response(200, self.metrics.render().encode(), (("Content-Type", CONTENT_TYPE),))
        route = self._admit(request)
        if request.method == "POST":
            return self._add_note(route, request)
        return self._list_notes(route)

    def _admit(self, request: Request) -> Route:
        """The request's tenant, if it may be served now."""
        name = request.tenant or self.routes.default_tenant
        if not name:
            raise HttpError(400, "the X-Tenant-ID header is required")
        route = self.routes.lookup(name)
        if route is None:
            raise HttpError(404, "unknown tenant")
        request.route = route
        if route.state == SUSPENDED:
            raise HttpError(403, "the tenant is suspended")
        if route.state == MOVING:
            raise unavailable("the tenant is moving; retry shortly")
        return route

    def _list_notes(self, route: Route) -> Response:
        with tenant_transaction(self.pools.for_route(route), route, self.pool_timeout) as conn:
            found = notes.list_notes(conn)
        return json_response(200, {"tenant": route.tenant, "notes": found})

    def _add_note(self, route: Route, request: Request) -> Response:
        try:
            body = notes.note_body(request.body())
        except notes.BadNote as error:
            raise HttpError(400, str(error)) from None
        with tenant_transaction(self.pools.for_route(route), route, self.pool_timeout) as conn:
            note = notes.add_note(conn, body)
        return json_response(201, note)


def make_app(routes: RoutingTable, pool: ConnectionPool | Pools, *, metrics: Metrics | None = None,
             pool_timeout: float = POOL_TIMEOUT_SECONDS,
             clock: Callable[[], float] = time.perf_counter) -> SharedApp:
    """The WSGI application for a routing table (Routes or SingleTenant) and its connection pools.

    A bare pool is one login on one server: every tenant is served from it
    (isolated mode, tests). pool_timeout is how long a request waits for a
    connection before 503.
    """
    pools = pool if isinstance(pool, Pools) else Pools(pool)
    return SharedApp(routes, pools, metrics or Metrics(), pool_timeout, clock)
