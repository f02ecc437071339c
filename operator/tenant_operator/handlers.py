"""kopf handlers: thin glue between watch events and the controller.

Only event handlers and start-up/clean-up are used. kopf's change handlers
(create/update/resume) keep progress and a diff base in annotations on every
object, which would make a restart of the operator write to every tenant; our
reconcile compares live state with desired state instead and needs neither.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from tenant_operator import metrics, postgres
from tenant_operator.controller import Controller
from tenant_operator.kube import Kube
from tenant_operator.names import GROUP, VERSION
from tenant_operator.settings import from_environment

log = logging.getLogger(__name__)


def api_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    operator_settings = from_environment()
    controller = Controller.create(Kube(api_client()), operator_settings)
    try:
        await asyncio.get_running_loop().run_in_executor(controller.executor, controller.prepare)
    except postgres.DatabaseUnavailable as error:
        controller.executor.shutdown(wait=False)
        raise kopf.TemporaryError(f"PostgreSQL is not reachable yet: {error}", delay=5) from None
    metrics.serve(operator_settings.metrics_port)
    controller.start()
    memo["controller"] = controller
    log.info("tenant-operator started: %s", operator_settings)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        await controller.stop()


@kopf.on.event(GROUP, VERSION, "tenants")
async def tenant_event(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.tenant_seen(event.get("type") or "ADDED", dict(body))


@kopf.on.event(GROUP, VERSION, "tenantplans")
async def plan_event(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    controller: Controller | None = memo.get("controller")
    if controller:
        controller.plan_seen(event.get("type") or "ADDED", dict(body))
