"""The running operator's state: caches fed by watch events, the work queue and its workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time

from kubernetes.client.exceptions import ApiException

from tenant_operator import metrics, postgres, render
from tenant_operator.drift import needs_apply
from tenant_operator.kube import Kube, ObjectRef
from tenant_operator.reconcile import Context, Outcome, reconcile
from tenant_operator.workqueue import WorkQueue

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Controller:
    context: Context
    queue: WorkQueue
    executor: concurrent.futures.ThreadPoolExecutor
    tenants: dict[str, dict] = dataclasses.field(default_factory=dict)
    plans: dict[str, dict] = dataclasses.field(default_factory=dict)
    tasks: list[asyncio.Task] = dataclasses.field(default_factory=list)

    @classmethod
    def create(cls, kube: Kube, settings) -> "Controller":
        plans: dict[str, dict] = {}
        context = Context(kube=kube, settings=settings, plan_body=plans.get)
        queue = WorkQueue(settings.backoff_base_seconds, settings.backoff_max_seconds)
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.workers,
                                                         thread_name_prefix="reconcile")
        return cls(context=context, queue=queue, executor=executor, plans=plans)

    def prepare(self) -> None:
        """Shared database and shared workload, before any tenant is reconciled (blocking)."""
        settings = self.context.settings
        postgres.ensure_shared_database(settings.maintenance_dsn(), settings.shared_database)
        for manifest in render.shared_infrastructure(settings):
            if needs_apply(manifest, self.context.kube.read(ObjectRef.of(manifest))):
                self.context.kube.apply(manifest)

    def start(self) -> None:
        settings = self.context.settings
        self.tasks = [asyncio.create_task(self._worker(i), name=f"worker-{i}") for i in range(settings.workers)]
        self.tasks.append(asyncio.create_task(self._resync(settings.resync_seconds), name="resync"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def tenant_seen(self, event_type: str, body: dict) -> None:
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            self.tenants.pop(name, None)
            self.queue.drop(name)
            metrics.forget_tenant(name)
            return
        self.tenants[name] = body
        self.queue.add(name)

    def plan_seen(self, event_type: str, body: dict) -> None:
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            self.plans.pop(name, None)
        else:
            previous = self.plans.get(name)
            self.plans[name] = body
            if previous is not None and previous.get("spec") == body.get("spec"):
                return
        for tenant_name, tenant in self.tenants.items():
            if (tenant.get("spec") or {}).get("plan") == name:
                self.queue.add(tenant_name)

    async def _resync(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for name in list(self.tenants):
                self.queue.add(name)

    async def _worker(self, number: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            name = await self.queue.get()
            try:
                body = self.tenants.get(name)
                if body is None:
                    continue
                started = time.monotonic()
                try:
                    outcome = await loop.run_in_executor(self.executor, reconcile, self.context, _copy(body))
                except ApiException as error:
                    log.warning("tenant %s: Kubernetes API error %s %s: %s; will retry", name, error.status,
                                error.reason, (error.body or b"")[:500])
                    outcome = Outcome(failed=True)
                except Exception:  # noqa: BLE001 - one tenant's bug must not stop the others
                    log.exception("tenant %s: reconcile failed; will retry", name)
                    outcome = Outcome(failed=True)
                metrics.observe_reconcile(time.monotonic() - started, "error" if outcome.failed else "ok")
                if outcome.failed:
                    delay = self.queue.retry(name)
                    log.info("tenant %s: retrying in %.0fs", name, delay)
                else:
                    self.queue.forget(name)
                    if outcome.requeue_after is not None:
                        self.queue.add_after(name, outcome.requeue_after)
            finally:
                self.queue.done(name)


def _copy(body: dict) -> dict:
    """The reconcile may annotate its copy (finalizers); the cache keeps what the watch said."""
    import copy

    return copy.deepcopy(body)
