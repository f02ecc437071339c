"""kopf handlers: thin glue between watch events and the controller.

Only event handlers and start-up/clean-up are used. kopf's change handlers
(create/update/resume) keep progress and a diff base in annotations on every
object, which would make a restart of the operator write to every tenant; our
reconcile compares live state with desired state instead and needs neither.

With leader election (`run --leader-election`) every replica watches and
caches; the Lease decides whose workers reconcile (leader.py). On shutdown the
leader stops taking work, lets running reconciles finish, then releases the
Lease so that a follower takes over at once instead of after its expiry.

The health endpoints (health.py) start first, so that liveness answers while
the start-up handler still waits for PostgreSQL, and readiness says why not yet.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from tenant_operator import __version__
from tenant_operator.api.names import GROUP, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from tenant_operator.api.settings import from_environment
from tenant_operator.infra import connection, metrics
from tenant_operator.infra.access import AccessPending
from tenant_operator.infra.kube import Kube, api_client
from tenant_operator.runtime import health
from tenant_operator.runtime.controller import Controller
from tenant_operator.runtime.leader import (
    KubeLeaseStore,
    LeaderElector,
    LeaseConfig,
    default_identity,
)

log = logging.getLogger(__name__)

# A leader lets running reconciles finish before it releases the Lease; a pg_dump may take
# longer, and then the Lease is released anyway: the next leader repeats that idempotent step.
DRAIN_SECONDS = 20.0


@kopf.on.startup()
async def serve_health(memo: kopf.Memo, **_) -> None:
    """Registered before start(): kopf runs start-up handlers in order, and start() may retry for a while."""
    port = from_environment().health_port
    if port:
        memo["health"] = await health.serve(port, lambda: _readiness(memo))


def _readiness(memo: kopf.Memo) -> health.Readiness:
    elector: LeaderElector | None = memo.get("elector")
    return health.readiness(memo.get("controller"), memo.get("problem"),
                            leading=elector.is_leader if elector else None, stopping=bool(memo.get("stopping")))


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Only our own Deployments, filtered by the API server, and only in the shared namespace
    # (cli.py): the shared workload serves every shared tenant; isolated tenants poll theirs.
    settings.watching.label_selectors["apps", "deployments"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    operator_settings = from_environment()
    identity = default_identity()
    connection.identify(identity)  # names every PostgreSQL session of this process (tenantlock.py)
    kube = Kube(api_client())
    controller = Controller.create(kube, operator_settings)
    try:
        await asyncio.get_running_loop().run_in_executor(controller.executor, controller.prepare)
    except connection.DatabaseUnavailable as error:
        controller.executor.shutdown(wait=False)
        memo["problem"] = f"PostgreSQL is not reachable yet: {error}"
        raise kopf.TemporaryError(memo["problem"], delay=5) from None
    except AccessPending as error:
        controller.executor.shutdown(wait=False)
        memo["problem"] = f"the shared namespace is not open to the operator yet: {error}"
        raise kopf.TemporaryError(memo["problem"], delay=5) from None
    metrics.serve(operator_settings.metrics_port)
    if operator_settings.leader_election:
        config = LeaseConfig.from_settings(operator_settings, identity=identity)
        elector = LeaderElector(KubeLeaseStore(kube, config.namespace, config.name), config,
                                on_started_leading=controller.leadership_gained,
                                on_stopped_leading=controller.leadership_lost)
        controller.start(leading=lambda: elector.is_leader)
        elector.start()
        memo["elector"] = elector
    else:
        controller.start()
    memo["controller"] = controller
    log.info("tenant-operator %s started as %s: %s", __version__, identity, operator_settings)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    memo["stopping"] = True  # readiness answers 503 from now on
    controller: Controller | None = memo.get("controller")
    elector: LeaderElector | None = memo.get("elector")
    if elector:
        await elector.stop()
    if controller:
        await controller.stop(drain_seconds=DRAIN_SECONDS if elector else 0)
    if elector:
        await elector.release_async()
    runner = memo.get("health")
    if runner:
        await runner.cleanup()


@kopf.on.event(GROUP, VERSION, "tenants")
async def tenant_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.tenant_seen(event.get("type") or "ADDED", dict(body))


@kopf.on.event(GROUP, VERSION, "tenantplans")
async def plan_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.plan_seen(event.get("type") or "ADDED", dict(body))


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def deployment_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.workload_seen(event.get("type") or "ADDED", dict(body))


@kopf.on.event(GROUP, VERSION, "databaseschemas")
async def schema_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.schema_seen(event.get("type") or "ADDED", dict(body))


@kopf.on.event(GROUP, VERSION, "databaseservers")
async def server_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.server_seen(event.get("type") or "ADDED", dict(body))
