"""The running operator's state: caches fed by watch events, the work queue and its workers.

With leader election the caches and the queue are kept on every replica, so a
follower that becomes leader starts from a warm cache; only the workers wait
for leadership, and they ask again before each reconcile.

Whether the caches are synced (readiness, health.py) is judged against a LIST of
the tenants taken at start-up: kopf does not tell its handlers when a watch's
initial listing is over. Every tenant of that list must have come through the
watch, or be gone (looked up again while any is missing).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from tenant_operator.api import names
from tenant_operator.api.kinds import DATABASE_SCHEMA, DATABASE_SERVER, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.desired.drift import needs_apply
from tenant_operator.infra import access, connection, events, metrics, shared_database
from tenant_operator.infra.kube import Kube
from tenant_operator.infra.listing import MAX_AGE_SECONDS, ListedKube
from tenant_operator.reconcile import shared_app
from tenant_operator.reconcile.context import Context, Outcome
from tenant_operator.reconcile.converge import WAIT_FOR_WORKLOADS
from tenant_operator.reconcile.dispatch import reconcile
from tenant_operator.reconcile.placement import RESERVED
from tenant_operator.reconcile.state import available as _available
from tenant_operator.runtime.bodies import OwnWrites, asks_for_reconcile, at_rest
from tenant_operator.runtime.rollout import RolloutGate, tenants_of_schema, write_rollout_status
from tenant_operator.runtime.servers import STATUS_SECONDS as SERVER_STATUS_SECONDS
from tenant_operator.runtime.servers import Measurements, ServerKeeper, ensure_default, placed_tenants, waiting_on
from tenant_operator.runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)

# A tenant whose last status write the watch has not brought back yet looks again this much later.
OWN_WRITE_WAIT = 0.1
# On shutdown, events not yet posted get this long; they tell what the last reconciles did.
EVENTS_FLUSH_SECONDS = 5.0
# How often the DatabaseSchemas' rollout status is brought up to date from the tenants.
ROLLOUT_STATUS_SECONDS = 2.0
# While tenants listed at start-up have not come through the watch, they are looked up again this often:
# one deleted between that LIST and the watch's own would otherwise keep the caches "not synced" for ever.
SYNC_RECHECK_SECONDS = 10.0


@dataclasses.dataclass
class Controller:
    context: Context
    queue: WorkQueue
    executor: concurrent.futures.ThreadPoolExecutor
    kube: Kube
    """The API client itself (the context's may be a pass's listing in front of it)."""
    tenants: dict[str, dict] = dataclasses.field(default_factory=dict)
    plans: dict[str, dict] = dataclasses.field(default_factory=dict)
    schemas: dict[str, dict] = dataclasses.field(default_factory=dict)
    """DatabaseSchemas as the watch last gave them."""
    servers: dict[str, dict] = dataclasses.field(default_factory=dict)
    """DatabaseServers as the watch last gave them."""
    keeper: ServerKeeper | None = None
    own_writes: OwnWrites = dataclasses.field(default_factory=OwnWrites)
    workloads: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)
    """Whether each of our Deployments (namespace, name) was Available when last seen."""
    schema_turns: set[str] = dataclasses.field(default_factory=set)
    """Tenants queued only for their turn in a schema rollout (nothing else about them changed)."""
    examining: set[str] = dataclasses.field(default_factory=set)
    """Tenants queued by a pass over all of them (start, resync, new leader), not by a change."""
    tasks: list[asyncio.Task] = dataclasses.field(default_factory=list)
    leading: Callable[[], bool] = lambda: True
    """Whether this replica may reconcile now: always, unless leader election says otherwise."""
    _may_work: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop = dataclasses.field(default_factory=asyncio.new_event_loop)
    _running: set[concurrent.futures.Future] = dataclasses.field(default_factory=set)
    _listing: ListedKube | None = None
    _listing_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    unseen: set[str] | None = None
    credentials: str = ""
    """A digest of the shared app's password its workload's pods hold."""
    _usage: Measurements | None = None
    """Per server: the pass's measurement of its tenants (the leader's)."""
    """Tenants that existed at start-up and have not come through the watch yet; None before prepare()."""

    @classmethod
    def create(cls, kube: Kube, settings: Settings) -> Controller:
        plans: dict[str, dict] = {}
        schemas: dict[str, dict] = {}
        tenants: dict[str, dict] = {}
        database_servers: dict[str, dict] = {}
        own_writes = OwnWrites()
        gate = RolloutGate(lambda name: tenants_of_schema(tenants.values(), plans, name))  # wake: set in start()
        context = Context(kube=kube, settings=settings, plan_body=plans.get, events=events.BackgroundRecorder(kube),
                          schema_body=schemas.get, rollouts=gate, server_body=database_servers.get,
                          server_bodies=lambda: list(database_servers.values()),
                          placed=lambda: placed_tenants(tenants.values()), wrote=own_writes.wrote)
        queue = WorkQueue(settings.backoff_base_seconds, settings.backoff_max_seconds)
        # A worker may hold two admin sessions at once: its statements' and a tenant's lock.
        connection.IDLE_SESSIONS.keep = 2 * settings.workers
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.workers,
                                                         thread_name_prefix="reconcile")
        keeper = ServerKeeper(kube, context.servers, context.health, context.events, database_servers, context.placed,
                              retention=settings.quarantine_retention_seconds)
        return cls(context=context, queue=queue, executor=executor, kube=kube, plans=plans, schemas=schemas,
                   tenants=tenants, servers=database_servers, keeper=keeper, own_writes=own_writes)

    def prepare(self) -> None:
        """Plans, shared database and shared workload, before any tenant is reconciled (blocking).

        The plans are listed here rather than left to the watch: kopf starts the
        tenant and plan watches together, and a tenant reconciled before its plan
        arrived would be reported PlanNotFound and then Ready again, two status
        writes per tenant on every restart.
        """
        for plan in self.kube.list(TENANT_PLAN):
            self.plans.setdefault(plan["metadata"]["name"], plan)
        for schema in self.kube.list(DATABASE_SCHEMA):
            self.schemas.setdefault(schema["metadata"]["name"], schema)
        ensure_default(self.kube)
        for server in self.kube.list(DATABASE_SERVER):
            self.servers.setdefault(server["metadata"]["name"], server)
        self.unseen = self._tenant_names() - set(self.tenants)
        if not self.unseen:
            log.info("caches synced: no tenant to wait for, %d plans", len(self.plans))
        settings, kube = self.context.settings, self.kube
        self.context = dataclasses.replace(self.context, access=access.Access.from_settings(settings))
        shared_database.ensure_shared_database(settings.maintenance_dsn(), settings.shared_database)
        namespace = render.shared_infrastructure(settings)[0]
        if self.context.access:
            access.ensure_namespace(kube, self.context.access, namespace, self.context.access.shared_role)
        if needs_apply(namespace, kube.read(ObjectRef.of(namespace))):
            kube.apply(namespace)
        # The workload's Secret before the workload that mounts it.
        self.credentials = shared_app.ensure_credentials(kube, settings)
        self._apply_shared_workload()

    def _apply_shared_workload(self) -> None:
        kube = self.kube
        for manifest in render.shared_infrastructure(self.context.settings, self.credentials)[1:]:
            if needs_apply(manifest, kube.read(ObjectRef.of(manifest))):
                kube.apply(manifest)

    async def _every(self, seconds: float, what: str, work: Callable[[], None]) -> None:
        """`work` in a thread every `seconds`, by the leader only; a failure waits for the next round."""
        while True:
            await asyncio.sleep(seconds)
            if not self.leading():
                continue
            try:
                await asyncio.get_running_loop().run_in_executor(None, work)
            except Exception:  # noqa: BLE001 - the next round tries again; the tenants are unaffected
                log.exception("could not %s", what)

    def _shared_credentials_once(self) -> None:
        """The app logins' password matching its Secret, and rotated when asked (shared_app.py)."""
        if not self.leading():
            return  # asked again in the thread: a process paused since the loop asked acts on nothing
        others = self.keeper.shared_servers() if self.keeper else []
        credentials = shared_app.ensure_credentials(self.kube, self.context.settings, others)
        if credentials != self.credentials:
            self.credentials = credentials
            self._apply_shared_workload()

    def start(self, leading: Callable[[], bool] | None = None) -> None:
        """Start the workers; with `leading` (leader election) they wait for leadership_gained()."""
        settings = self.context.settings
        self._may_work = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if leading is None:
            self._may_work.set()
        else:
            self.leading = leading
            # A move asks again before each of its steps, not only before its reconcile.
            self.context = dataclasses.replace(self.context, leading=leading)
        self.tasks = [asyncio.create_task(self._worker(self._may_work), name=f"worker-{i}")
                      for i in range(settings.workers)]
        self.tasks.append(asyncio.create_task(self._resync(settings.resync_seconds), name="resync"))
        self.tasks.append(asyncio.create_task(
            self._every(ROLLOUT_STATUS_SECONDS, "write the status of the DatabaseSchemas", self._write_rollout_status),
            name="rollout-status"))
        if self.keeper is not None:
            self.tasks.append(asyncio.create_task(
                self._every(SERVER_STATUS_SECONDS, "write the status of the DatabaseServers", self.keeper.keep_all),
                name="server-status"))
        self.tasks.append(asyncio.create_task(
            self._every(shared_app.CHECK_SECONDS, "check the shared app's credentials", self._shared_credentials_once),
            name="shared-credentials"))
        loop = asyncio.get_running_loop()

        def wake(name: str) -> None:
            # Read live: one tenant at a time, a pass's listing would be taken again for each.
            loop.call_soon_threadsafe(self._schema_turn, name)

        if isinstance(self.context.rollouts, RolloutGate):
            self.context.rollouts.wake = wake
        self.tasks.append(asyncio.create_task(self._forget_unseen_gone(), name="sync"))

    @property
    def synced(self) -> bool:
        """Whether every tenant that existed at start-up is in the cache (or gone): able to reconcile them all."""
        return self.unseen is not None and not self.unseen

    def _tenant_names(self) -> set[str]:
        return {tenant["metadata"]["name"] for tenant in self.kube.list(TENANT)}

    async def _forget_unseen_gone(self) -> None:
        while not self.synced:
            await asyncio.sleep(SYNC_RECHECK_SECONDS)
            if self.unseen:
                existing = await asyncio.get_running_loop().run_in_executor(self.executor, self._tenant_names)
                self._saw(*(self.unseen - existing))

    def _saw(self, *names: str) -> None:
        if self.unseen:
            self.unseen.difference_update(names)
            if not self.unseen:
                log.info("caches synced: %d tenants, %d plans", len(self.tenants), len(self.plans))

    async def stop(self, drain_seconds: float = 0) -> None:
        """Stop the workers; wait up to `drain_seconds` for reconciles already running in threads."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        running = list(self._running)
        if drain_seconds and running:
            log.info("waiting up to %.0fs for %d running reconcile(s)", drain_seconds, len(running))
            await asyncio.get_running_loop().run_in_executor(None, concurrent.futures.wait, running, drain_seconds)
        self.executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self.context.events.flush, EVENTS_FLUSH_SECONDS)
        connection.IDLE_SESSIONS.close()  # sessions still in use by a reconcile left running end with the process

    def leadership_gained(self) -> None:
        """Reconcile every tenant: the previous leader may have left any of them half done."""
        self._examine_all()
        log.info("leading: %d tenants queued for reconcile", len(self.tenants))
        if self._may_work:
            self._may_work.set()

    def leadership_lost(self) -> None:
        if self._may_work:
            self._may_work.clear()

    def tenant_seen(self, event_type: str, body: dict) -> None:
        name = body["metadata"]["name"]
        self._saw(name)
        if event_type == "DELETED":
            self.tenants.pop(name, None)
            self.queue.drop(name)
            metrics.forget_tenant(name)
            self.context.passwords.forget(name)
            RESERVED.drop(name)
            return
        previous = self.tenants.get(name)
        self.tenants[name] = body
        self.own_writes.seen(name, body)
        if previous is None:
            self._examine(name)  # at start-up, every tenant is first seen: one pass over all
        elif asks_for_reconcile(previous, body):
            self._wake(name)

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
                self._wake(tenant_name)

    def schema_seen(self, event_type: str, body: dict) -> None:
        """A DatabaseSchema changed: the tenants on plans naming it look again (a new version, a resume)."""
        name = body["metadata"]["name"]
        previous = self.schemas.pop(name, None) if event_type == "DELETED" else self.schemas.get(name)
        if event_type != "DELETED":
            self.schemas[name] = body
            if previous is not None and previous.get("spec") == body.get("spec"):
                return  # our own status write coming back
        self.context.schemas.forget(name)
        # Only the schema changed for them: tenants at rest are looked at from a listing, not read live.
        self._listing = None
        for tenant in tenants_of_schema(self.tenants.values(), self.plans, name):
            self._schema_turn(tenant["metadata"]["name"])

    def server_seen(self, event_type: str, body: dict) -> None:
        """A DatabaseServer changed: its tenants look again (a drain), and so do tenants waiting for room."""
        name = body["metadata"]["name"]
        previous = self.servers.pop(name, None) if event_type == "DELETED" else self.servers.get(name)
        if event_type != "DELETED":
            self.servers[name] = body
            if previous is not None and previous.get("spec") == body.get("spec") and \
                    previous["metadata"].get("labels") == body["metadata"].get("labels"):
                return  # our own status write coming back
        if self.keeper is not None:
            self.keeper.drain_changed(name, event_type != "DELETED" and bool((body.get("spec") or {}).get("drain")))
        self.context.servers.forget(name)
        self.context.health.forget(name)
        for tenant in waiting_on(name, self.tenants.values()):
            self._wake(tenant)

    def _write_rollout_status(self) -> None:
        """Each DatabaseSchema's status from its tenants' (written only when it changed)."""
        if isinstance(self.context.rollouts, RolloutGate):
            self.context.rollouts.pump()  # a slot freed and handed to nobody
        for name in list(self.schemas):
            write_rollout_status(self.kube, self.context.schemas, self.context.events, name,
                                 tenants_of_schema(list(self.tenants.values()), self.plans, name))

    def workload_seen(self, event_type: str, body: dict) -> None:
        """The shared Deployment changed: shared tenants are reconciled when it became (un)available or vanished.

        Only the shared namespace is watched (the operator may not watch Deployments
        across the cluster); tenants waiting for their own Deployments poll them, and
        a tenant's Deployment deleted by someone is put back by the next resync.
        """
        meta = body["metadata"]
        key = (meta.get("namespace"), meta["name"])
        available = _available(body)
        previous = self.workloads.get(key)
        if event_type == "DELETED":
            self.workloads.pop(key, None)
        else:
            self.workloads[key] = available
            if previous is None or previous == available:
                return  # first sight (start-up, or our own create): tenants are reconciled anyway
        tenant = (meta.get("labels") or {}).get(names.LABEL_TENANT)
        if tenant:
            if tenant in self.tenants:
                self._wake(tenant)
        elif key[0] == self.context.settings.shared_namespace:
            self.context.shared_workload.forget()
            for name, known in self.tenants.items():
                if (known.get("status") or {}).get("tier") != "isolated":
                    self._wake(name)

    def _wake(self, name: str) -> None:
        """Something about the tenant changed: its reconcile reads everything live."""
        self.examining.discard(name)
        self.schema_turns.discard(name)
        self.queue.add(name)

    def _schema_turn(self, name: str) -> None:
        """The rollout gives the tenant its turn: only its schema need be looked at, if nothing else changed."""
        if name not in self.queue:
            self.schema_turns.add(name)
        self.queue.add(name)

    def _examine(self, name: str) -> None:
        self.examining.add(name)
        self.queue.add(name)

    def _examine_all(self) -> None:
        self._listing = None  # a new pass lists afresh
        if self._usage is not None:
            self._usage.forget()  # and measures afresh
        for name in list(self.tenants):
            self._examine(name)

    async def _resync(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self._examine_all()

    def _listed(self) -> ListedKube:
        """The pass's listing, taken by the first examination that needs it (in a worker thread)."""
        with self._listing_lock:
            if self._listing is None or self._listing.age() > MAX_AGE_SECONDS:
                started = time.monotonic()
                routes = render.routes_ref(self.context.settings)
                self._listing = ListedKube.take(self.kube, shared=frozenset([routes]))
                log.info("listed %d objects for examining tenants in %.2fs", len(self._listing),
                         time.monotonic() - started)
            return self._listing

    def _reconcile(self, body: dict, examined: bool, schema_turn: bool = False) -> Outcome:
        """In a worker thread: the body typed once, then one reconcile (from the pass's listing if examined)."""
        tenant = Tenant.from_body(body)
        if self._usage is None:
            self._usage = Measurements(self.context.servers, lambda: self.leading(), MAX_AGE_SECONDS)
        context = dataclasses.replace(self.context, kube=self._listed(), usage=self._usage.of) if examined \
            else self.context
        return reconcile(context, tenant, schema_only=True) if schema_turn else reconcile(context, tenant)

    async def _worker(self, may_work: asyncio.Event) -> None:
        while True:
            await may_work.wait()
            name = await self.queue.get()
            try:
                body = self.tenants.get(name)
                if body is None or not self.leading():
                    # A follower drops the key: leadership_gained() queues every tenant again.
                    continue
                if self.own_writes.behind(name):
                    self.queue.add_after(name, OWN_WRITE_WAIT)  # from a view that has our last write
                    continue
                examined = name in self.examining and at_rest(body)
                schema_turn = name in self.schema_turns and not examined
                self.schema_turns.discard(name)
                self.examining.discard(name)
                started = time.monotonic()
                try:
                    future = self.executor.submit(self._reconcile, body, examined, schema_turn)
                    self._running.add(future)
                    future.add_done_callback(self._running.discard)
                    outcome = await asyncio.wrap_future(future)
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
                    if outcome.waiting:
                        self.queue.poll(name, outcome.requeue_after or WAIT_FOR_WORKLOADS)
                    else:
                        self.queue.settled(name)
                        if outcome.requeue_after is not None:
                            self.queue.add_after(name, outcome.requeue_after)
                if examined and not self.examining:
                    self._listing = None  # the pass is over: its thousands of objects need not stay in memory
            finally:
                self.queue.done(name)
