"""Leader election on a coordination.k8s.io/v1 Lease: one replica reconciles, the others wait warm.

Why not kopf's peering: it is not a lease. The replica with the highest priority
runs; replicas of equal priority (every replica of one Deployment) all freeze on
purpose; a dead leader is noticed only when its peering entry ages out, about a
minute later. A Lease is what kube-controller-manager and controller-runtime use,
and `kubectl get lease` shows who leads. So in this mode kopf runs standalone.

The algorithm is client-go's: read the Lease; take it when it is absent, free
(no holder) or expired; renew it while held; every write carries the
resourceVersion that was read, so when two replicas race, the API server lets
one win (409 Conflict for the other).

Expiry is judged by the local monotonic clock, never by comparing the holder's
renewTime with our wall clock (machines' clocks differ): a follower notes when
it first saw the current lease record, and the record has expired when it has
not changed for leaseDurationSeconds since. The leader, in turn, counts itself
leader only until `renew_deadline` after the start of its last successful
renewal, which is shorter than the lease duration: it stops before any
follower may take over, even when its renewals hang. Workers ask `is_leader`
before each reconcile, so a lost lease stops new reconciles at once.

Lease writes are not counted in tenant_operator_writes_total: that counter is
about tenants. `tenant_operator_leader` is 1 on the replica that leads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kubernetes.client.exceptions import ApiException
from prometheus_client import Gauge

from tenant_operator.api.kinds import KINDS
from tenant_operator.infra.kube import Kube

log = logging.getLogger(__name__)

LEASE = KINDS[("coordination.k8s.io/v1", "Lease")]
LEADER = Gauge("tenant_operator_leader", "Whether this replica holds the leader Lease and reconciles (1) or not (0)")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    """leaseDurationSeconds: how long followers wait for a renewal before taking over."""
    renew_period: float = 5.0
    """How often the leader renews."""
    renew_deadline: float = 10.0
    """The leader steps down when it could not renew for this long; less than `duration`."""
    retry_period: float = 2.0
    """How often a follower looks at the Lease."""

    def __post_init__(self) -> None:
        if not 0 < self.renew_period < self.renew_deadline < self.duration:
            raise ValueError("leader election needs 0 < renew period < renew deadline < lease duration "
                             f"(got {self.renew_period}, {self.renew_deadline}, {self.duration})")

    @classmethod
    def from_settings(cls, settings, identity: str | None = None) -> LeaseConfig:
        duration, renew = settings.lease_duration_seconds, settings.lease_renew_seconds
        return cls(
            namespace=settings.leader_election_namespace or default_namespace(),
            name=settings.leader_election_name,
            identity=identity or default_identity(),
            duration=duration,
            renew_period=renew,
            # client-go's defaults are 15/10/2: step down a third of a duration before anyone may take over.
            renew_deadline=max(renew * 1.5, duration * 2 / 3),
            retry_period=min(2.0, renew),
        )


def default_namespace() -> str:
    """The pod's own namespace in a cluster, else "default"."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def default_identity() -> str:
    """Unique per process: the pod name (a pod's hostname) and a random suffix, as client-go does.

    The suffix matters: two processes of one host or pod must never both believe they hold the lease.
    """
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Conflict(Exception):
    """Somebody else wrote the Lease since we read it (or created it first)."""


class LeaseStore(Protocol):
    def read(self) -> dict | None: ...
    def create(self, lease: dict) -> dict: ...
    def replace(self, lease: dict) -> dict: ...


class KubeLeaseStore:
    """The Lease on the API server; create and replace are optimistic (resourceVersion)."""

    def __init__(self, kube: Kube, namespace: str, name: str):
        self.kube, self.namespace, self.name = kube, namespace, name

    def read(self) -> dict | None:
        try:
            return self.kube.request("GET", LEASE.path(self.name, self.namespace), timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, lease: dict) -> dict:
        return self._write("POST", LEASE.collection_path(self.namespace), lease)

    def replace(self, lease: dict) -> dict:
        return self._write("PUT", LEASE.path(self.name, self.namespace), lease)

    def _write(self, method: str, path: str, lease: dict) -> dict:
        query = [("fieldManager", self.kube.field_manager)]
        try:
            return self.kube.request(method, path, query, lease, timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(str(error.reason)) from None
            raise


def _micro_time(at: datetime.datetime | None = None) -> str:
    """A MicroTime, as Lease's acquireTime and renewTime are."""
    return (at or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds or waits for the Lease; `is_leader` is safe to ask from any thread at any time."""

    def __init__(self, store: LeaseStore, config: LeaseConfig,
                 on_started_leading: Callable[[], None] = lambda: None,
                 on_stopped_leading: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._leading_until = float("-inf")
        self._announced = False
        self._observed: tuple | None = None
        self._observed_at = 0.0
        self._task: asyncio.Task | None = None
        self._renewed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader")

    @property
    def identity(self) -> str:
        return self.config.identity

    @property
    def is_leader(self) -> bool:
        return self._clock() < self._leading_until

    # --- one round: blocking, the unit tests drive it with a fake clock and store -----------

    def try_acquire_or_renew(self) -> bool:
        """Read the Lease and take or renew it if we may; whether we hold it afterwards."""
        started = self._clock()
        self._renewed = False
        try:
            lease = self.store.read()
            if lease is None:
                self._written(self.store.create(self._lease_body(None, acquiring=True)), started)
                log.info("leader election: created Lease %s/%s; %s leads", self.config.namespace, self.config.name,
                         self.identity)
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            self._observe(lease, started)
            if holder != self.identity:
                if holder and not self._expired(spec, started):
                    self._step_down(f"{holder} holds the Lease")
                    return False
                log.info("leader election: taking over Lease %s/%s from %s", self.config.namespace,
                         self.config.name, holder or "nobody (released)")
            self._written(self.store.replace(self._lease_body(lease, acquiring=holder != self.identity)), started)
            return True
        except Conflict:
            # Another replica wrote first; the next round reads what it wrote. A leader keeps
            # leading until its deadline: a conflict alone does not prove that it lost.
            return self.is_leader
        except Exception as error:  # noqa: BLE001 - API trouble: try again next round
            log.warning("leader election: cannot read or write Lease %s/%s: %s", self.config.namespace,
                        self.config.name, error)
            return self.is_leader

    def _observe(self, lease: dict, now: float) -> None:
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, now

    def _expired(self, spec: dict, now: float) -> bool:
        duration = spec.get("leaseDurationSeconds") or self.config.duration
        return now >= self._observed_at + duration

    def _written(self, lease: dict, started: float) -> None:
        self._observe(lease, started)
        self._leading_until = started + self.config.renew_deadline
        self._renewed = True

    def _step_down(self, why: str) -> None:
        if self._leading_until != float("-inf") and self.is_leader:
            log.warning("leader election: lost the Lease: %s", why)
        self._leading_until = float("-inf")

    def _lease_body(self, current: dict | None, acquiring: bool) -> dict:
        spec = dict((current or {}).get("spec") or {})
        now = _micro_time()
        spec.update({"holderIdentity": self.identity, "leaseDurationSeconds": int(self.config.duration),
                     "renewTime": now})
        if acquiring:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1 if current else 0
        metadata = {"name": self.config.name, "namespace": self.config.namespace}
        if current:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": LEASE.api_version, "kind": LEASE.kind, "metadata": metadata, "spec": spec}

    def release(self) -> bool:
        """Give the Lease up (graceful shutdown), so a follower takes over without waiting for expiry.

        Call it when this replica's reconciles have stopped: it is no leader from here on.
        """
        self._leading_until = float("-inf")
        try:
            lease = self.store.read()
            if not lease or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            body = self._lease_body(lease, acquiring=False)
            body["spec"].pop("holderIdentity")
            body["spec"]["leaseDurationSeconds"] = 1
            self.store.replace(body)
        except Exception as error:  # noqa: BLE001 - the lease then simply expires
            log.warning("leader election: could not release the Lease: %s", error)
            return False
        log.info("leader election: released Lease %s/%s", self.config.namespace, self.config.name)
        return True

    # --- the loop, in the operator's event loop ------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        """Stop competing (the caller releases when its work has drained)."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._leading_until = min(self._leading_until, self._clock())
        self._announce()

    async def release_async(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.release)
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        log.info("leader election: %s competes for Lease %s/%s", self.identity, self.config.namespace,
                 self.config.name)
        while True:
            await loop.run_in_executor(self._executor, self.try_acquire_or_renew)
            self._announce()
            if self.is_leader and self._renewed:
                pause = self.config.renew_period
            else:
                pause = self.config.retry_period  # a follower, or a leader whose renewal failed
            await asyncio.sleep(pause)
            self._announce()

    def _announce(self) -> None:
        leading = self.is_leader
        if leading == self._announced:
            return
        self._announced = leading
        LEADER.set(1 if leading else 0)
        if leading:
            log.info("leader election: %s is the leader", self.identity)
            self._on_started()
        else:
            log.warning("leader election: %s is no longer the leader; reconciling stops", self.identity)
            self._on_stopped()

