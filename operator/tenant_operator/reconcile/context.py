"""What every phase of a reconcile is given (Context) and what it answers (Outcome).

Sits below the phases and the dispatcher, so that a phase that wants another
pass says so in its Outcome instead of calling back up.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from tenant_operator.api.schema import DatabaseSchema
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import access as access_
from tenant_operator.infra import events
from tenant_operator.infra import servers as servers_
from tenant_operator.infra.kube import KubeAPI
from tenant_operator.infra.schemas import SchemaCatalog
from tenant_operator.infra.usage import DataUsage


class Recent:
    """A value read from the API server and shared by every reconcile for a few seconds.

    Every shared tenant's WorkloadsReady depends on the one shared Deployment: a
    thousand reconciles in a resync need not read it a thousand times.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._lock = threading.Lock()
        self._value: tuple[float, Any] | None = None

    def get(self, load: Callable[[], Any]) -> Any:
        with self._lock:
            if self._value and time.monotonic() - self._value[0] < self.seconds:
                return self._value[1]
        value = load()
        with self._lock:
            self._value = (time.monotonic(), value)
        return value

    def forget(self) -> None:
        """The value changed (a watch said so): the next get() loads it again."""
        with self._lock:
            self._value = None


class Passwords:
    """Each tenant's password as this process last read or wrote it in the tenant's Secret.

    A rollout logs in as each of a thousand tenants in turn: reading their Secrets
    again cost as much as the migrations. A password found stale (the login refused:
    someone rotated it elsewhere) is forgotten and read from the Secret again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}

    def get(self, tenant: str) -> str | None:
        with self._lock:
            return self._known.get(tenant)

    def put(self, tenant: str, password: str) -> None:
        with self._lock:
            self._known[tenant] = password

    def forget(self, tenant: str) -> None:
        with self._lock:
            self._known.pop(tenant, None)


@dataclasses.dataclass(frozen=True)
class Wait:
    """Why a tenant does not move to the new version yet."""

    reason: str
    brief: bool = False
    """Only until a slot frees (maxParallel): the tenant is woken then, its status need not say so."""


class Rollouts(Protocol):
    """Who may move to a new schema version now (maxParallel, canaries first, halted, paused)."""

    def may_start(self, schema: DatabaseSchema, tenant: Tenant, latest: int) -> Wait | None:
        """None: go (a slot is taken until finished()); else why the tenant waits."""

    def finished(self, schema: DatabaseSchema, tenant: Tenant, failed: bool) -> None: ...


class EveryoneAtOnce:
    """No rollout policy: what a one-shot reconcile (a test, a tool) uses."""

    def may_start(self, schema: DatabaseSchema, tenant: Tenant, latest: int) -> Wait | None:
        return None

    def finished(self, schema: DatabaseSchema, tenant: Tenant, failed: bool) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Context:
    kube: KubeAPI
    settings: Settings
    plan_body: Callable[[str], dict | None]
    """Looks a TenantPlan up in the operator's cache (no request per reconcile)."""
    shared_workload: Recent = dataclasses.field(default_factory=lambda: Recent(5.0))
    events: events.Recorder = None  # type: ignore[assignment]  # filled in by __post_init__
    """Where events go; posted synchronously unless the operator gives its background recorder."""
    leading: Callable[[], bool] = lambda: True
    """Whether this replica may act now (leader election); asked again before every step of a move."""
    access: access_.Access | None = None
    """The ClusterRoles the operator holds in the namespaces it manages (None: it holds its rights cluster-wide)."""
    schema_body: Callable[[str], dict | None] = lambda name: None
    """Looks a DatabaseSchema up in the operator's cache."""
    schemas: SchemaCatalog = None  # type: ignore[assignment]  # filled in by __post_init__
    rollouts: Rollouts = dataclasses.field(default_factory=EveryoneAtOnce)
    passwords: Passwords = dataclasses.field(default_factory=Passwords)
    usage: Callable[[str, str], DataUsage | None] = lambda server, sql_name: None
    """A tenant's bytes and sessions by its server and PostgreSQL name: measured for a resync pass, else None."""
    server_body: Callable[[str], dict | None] = lambda name: None
    """Looks a DatabaseServer up in the operator's cache."""
    server_bodies: Callable[[], list[dict]] = lambda: []
    servers: servers_.Servers = None  # type: ignore[assignment]  # filled in by __post_init__
    health: servers_.Health = dataclasses.field(default_factory=servers_.Health)
    placed: Callable[[], dict[str, dict]] = lambda: {}
    """Each tenant's (server, tier) as the operator's cache has it, for capacity and drain (placement.py)."""
    wrote: Callable[[str, str | None], None] = lambda tenant, resource_version: None
    """Told of every status write: the controller reconciles the tenant again only from a view that has it."""
    server: servers_.Server = None  # type: ignore[assignment]  # the default server until dispatch says
    """The server the reconciled tenant's data lives on (a move names its source's and target's)."""

    def __post_init__(self) -> None:
        if self.events is None:
            object.__setattr__(self, "events", events.Recorder(self.kube))
        if self.schemas is None:
            object.__setattr__(self, "schemas", SchemaCatalog(self.kube, self.schema_body))
        if self.servers is None:
            object.__setattr__(self, "servers", servers_.Servers(self.kube, self.settings, self.server_body,
                                                                  self.server_bodies))
        if self.server is None:
            object.__setattr__(self, "server", servers_.default_server(self.settings,
                                                                        self.server_body(servers_.DEFAULT)))

    def on(self, server: servers_.Server) -> Context:
        """The same context acting on `server`."""
        return self if server == self.server else dataclasses.replace(self, server=server)


@dataclasses.dataclass(frozen=True)
class Outcome:
    requeue_after: float | None = None
    failed: bool = False
    """Something went wrong that may pass: retry with backoff."""
    waiting: bool = False
    """Waiting for something that will come (workloads rolling out): look again soon, then less often."""
