"""Where a tenant's data lives: the server chosen at birth, kept, and changed only when asked.

At first provisioning the tenant goes to its pin (`spec.database.server`), else
to the server with the most free capacity among those that serve its tier, match
its plan's selector for that tier, are Ready, neither cordoned nor draining, and
have room (ties by name). The choice is recorded in status.database.server and
never changed by the operator on its own: a move starts only when the pin names
another server, the tier changes to one the home server does not serve, or the
home server drains. None fits: NoServerAvailable, naming each server and why.

Counts come from the controller's cache of Tenants (their server, and the target
of a move under way) plus this process's own choices not yet in the cache, so
that tenants created together do not all see the same free room.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable

from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import servers as servers_
from tenant_operator.infra.servers import Server, ServerUnusable
from tenant_operator.reconcile.context import Context

NO_SERVER = "NoServerAvailable"


@dataclasses.dataclass(frozen=True)
class Destination:
    server: Server | None
    """Where the tenant's data is to live; None: nowhere fits (`problem` says why)."""
    problem: str | None = None
    moving: bool = False
    """The tenant lives elsewhere now (another server or tier): a move takes it there."""
    drained: bool = False
    """The move empties a draining server (limited to drainParallel at a time)."""


class Reservations:
    """Servers this process chose for tenants whose status does not say so yet (for `seconds` at most:
    by then the cache has the tenant's status, or the tenant is gone)."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._chosen: dict[str, tuple[str, float]] = {}

    def hold(self, tenant: str, server: str) -> None:
        with self._lock:
            self._chosen[tenant] = (server, time.monotonic())

    def drop(self, tenant: str) -> None:
        with self._lock:
            self._chosen.pop(tenant, None)

    def items(self) -> list[tuple[str, str]]:
        now = time.monotonic()
        with self._lock:
            self._chosen = {tenant: held for tenant, held in self._chosen.items() if now - held[1] < self.seconds}
            return [(tenant, server) for tenant, (server, _) in self._chosen.items()]


RESERVED = Reservations()


class DrainSlots:
    """Moves off draining servers this process started, until the cache shows their records (at most `seconds`):
    from then on the cache counts them, and a move that ended frees its slot at once."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._taken: dict[str, dict[str, float]] = {}

    def take(self, server: str, tenant: str, limit: int, moving: set[str]) -> bool:
        """Whether `tenant` may start its move off `server`: fewer than `limit` are under way."""
        now = time.monotonic()
        with self._lock:
            mine = {name: at for name, at in self._taken.get(server, {}).items()
                    if now - at < self.seconds and name not in moving}
            under_way = (moving | set(mine)) - {tenant}
            if len(under_way) >= limit:
                self._taken[server] = mine
                return False
            mine[tenant] = now
            self._taken[server] = mine
            return True


DRAIN_SLOTS = DrainSlots()


def moving_off(ctx: Context, server: str) -> set[str]:
    """Tenants whose move leaves `server`, as the cache has them."""
    return {tenant for tenant, where in ctx.placed().items() if where.get("fromServer") == server}


def home_of(tenant: Tenant) -> str | None:
    """The server the tenant's data lives on; `default` for one provisioned before servers existed."""
    database = tenant.status.database
    if database is not None and database.server:
        return database.server
    return servers_.DEFAULT if tenant.status.tier else None


def counts(ctx: Context) -> dict[str, set[str]]:
    """Tenants per server: placed there, moving there, or chosen for it by this process."""
    found: dict[str, set[str]] = {}
    placed = ctx.placed()
    for tenant, where in placed.items():
        for server in {where.get("server"), where.get("toServer")} - {None}:
            found.setdefault(str(server), set()).add(tenant)
    for tenant, server in RESERVED.items():
        if (placed.get(tenant) or {}).get("server"):
            RESERVED.drop(tenant)  # its status says where it is now
        else:
            found.setdefault(server, set()).add(tenant)
    return found


def refusal(ctx: Context, server: Server, tier: str, tenant: str, placed: dict[str, set[str]],
            selector: dict[str, str] | None) -> str | None:
    """Why `server` cannot take the tenant on `tier` (None: it can)."""
    if tier not in server.tiers:
        return f"does not serve the {tier} tier"
    if selector is not None and any(server.labels.get(key) != value for key, value in selector.items()):
        return "its labels do not match the plan's selector"
    if server.drain:
        return "draining"
    if server.cordoned:
        return "cordoned"
    on = placed.get(server.name, set()) - {tenant}
    if len(on) >= server.max_tenants:
        return f"full ({len(on)} of {server.max_tenants} tenants)"
    probe = ctx.health.of(server)
    if not probe.ok:
        return f"not Ready ({probe.reason}: {probe.message})"
    return None


def _selector(plan: TenantPlan, tier: str) -> dict[str, str] | None:
    chosen = plan.spec.database.servers
    wanted = getattr(chosen, tier, None) if chosen is not None else None
    return dict(wanted.match_labels) if wanted is not None else None


def choose(ctx: Context, tenant: str, plan: TenantPlan, tier: str, exclude: Iterable[str] = ()) -> tuple[
        Server | None, str]:
    """The server with the most free room that fits, or None and why each one was refused."""
    placed = counts(ctx)
    selector = _selector(plan, tier)
    fitting: list[tuple[int, str, Server]] = []
    refused: list[str] = []
    skip = set(exclude)
    for name in ctx.servers.names():
        if name in skip:
            refused.append(f"{name}: the server being left")
            continue
        try:
            server = ctx.servers.get(name)
        except ServerUnusable as error:
            refused.append(f"{name}: {error}")
            continue
        why = refusal(ctx, server, tier, tenant, placed, selector)
        if why is not None:
            refused.append(f"{name}: {why}")
            continue
        fitting.append((-(server.max_tenants - len(placed.get(name, set()) - {tenant})), name, server))
    if not fitting:
        return None, f"no DatabaseServer can take a {tier} tenant of plan {plan.name}: " + "; ".join(refused)
    server = min(fitting)[2]
    RESERVED.hold(tenant, server.name)
    return server, ""


def _pinned(ctx: Context, tenant: str, pin: str, tier: str, moving_in: bool) -> tuple[Server | None, str]:
    """The pinned server, if it can take the tenant (its plan's selector does not apply: a pin is explicit)."""
    try:
        server = ctx.servers.get(pin)
    except ServerUnusable as error:
        return None, f"spec.database.server {pin!r}: {error}"
    why = refusal(ctx, server, tier, tenant, counts(ctx), None) if moving_in else (
        f"does not serve the {tier} tier" if tier not in server.tiers else None)
    if why is not None:
        return None, f"spec.database.server {pin!r} cannot take the tenant: {why}"
    RESERVED.hold(tenant, server.name)
    return server, ""


def stand_in(ctx: Context, name: str, host: str | None, port: int | None) -> Server:
    """A server that cannot be resolved now, as the tenant's status last told it (its status keeps it)."""
    return Server(name, "", host or "", port or 5432, ctx.settings.shared_database)


def destination(ctx: Context, tenant: Tenant, plan: TenantPlan) -> Destination:
    """Where the tenant's data is to live now, on the tier its spec asks for."""
    tier = render.value(tenant.spec.tier)
    home_name, pin = home_of(tenant), tenant.spec.database.server
    if home_name is None:
        server, why = _pinned(ctx, tenant.name, pin, tier, True) if pin else choose(ctx, tenant.name, plan, tier)
        return Destination(server, why or None)
    current_tier = render.value(tenant.status.tier) if tenant.status.tier else tier
    try:
        home: Server | None = ctx.servers.get(home_name)
    except ServerUnusable:
        home = None
    if pin and pin != home_name:
        server, why = _pinned(ctx, tenant.name, pin, tier, True)
        return Destination(server, why or None, moving=server is not None)
    if home is not None and not (home.drain and not pin) and tier in home.tiers:
        return Destination(home, moving=tier != current_tier)
    if home is None:
        # Its server's object or Secret is gone: the tenant stays put and its reconcile says why.
        return Destination(ctx.servers.get(home_name) if home_name == servers_.DEFAULT else None,
                           f"DatabaseServer {home_name!r} (where the tenant lives) cannot be used")
    server, why = choose(ctx, tenant.name, plan, tier, exclude=[home_name] if home.drain else [])
    return Destination(server, why or None, moving=server is not None, drained=home.drain)
