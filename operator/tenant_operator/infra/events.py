"""Events on Tenants, posted only when something happened (a write each, so never on a no-op).

The operator posts them from a thread of its own, as client-go's event recorder
does: a reconcile never waits for an event, and a slow or failing API server
costs events, not reconciles. Tests and one-shot tools post synchronously.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from tenant_operator.api.conditions import now
from tenant_operator.api.names import API_VERSION
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra.kube import Kube

log = logging.getLogger(__name__)

# Events about cluster-scoped objects live in "default", where `kubectl describe` looks for them.
EVENTS_NAMESPACE = "default"
# Beyond this many events waiting to be posted, new ones are dropped (and logged), not queued.
BACKLOG = 10_000


class Recorder:
    """Posts each event before returning."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def post(self, tenant: Tenant, reason: str, message: str, warning: bool = False) -> None:
        self._send(event(tenant, reason, message, warning))

    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for events not yet posted."""

    def post_body(self, body: dict) -> None:
        self._send(body)

    def _send(self, body: dict) -> None:
        try:
            self.kube.create(f"/api/v1/namespaces/{EVENTS_NAMESPACE}/events", body)
        except Exception as error:  # noqa: BLE001 - an event lost is not worth failing a reconcile
            log.warning("could not post event %s for tenant %s: %s", body["reason"],
                        body["involvedObject"]["name"], error)


class BackgroundRecorder(Recorder):
    """Queues events and posts them in order from one daemon thread."""

    def __init__(self, kube: Kube):
        super().__init__(kube)
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=BACKLOG)
        threading.Thread(target=self._run, name="events", daemon=True).start()

    def post(self, tenant: Tenant, reason: str, message: str, warning: bool = False) -> None:
        body = event(tenant, reason, message, warning)
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.warning("event backlog full, dropped event %s for tenant %s", reason, body["involvedObject"]["name"])

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self._send(body)
            finally:
                self._queue.task_done()


def event(tenant: Tenant, reason: str, message: str, warning: bool = False) -> dict:
    return object_event("Tenant", tenant.name, tenant.uid, tenant.resource_version, reason, message, warning)


def object_event(kind: str, name: str, uid: str | None, resource_version: str | None, reason: str, message: str,
                 warning: bool = False) -> dict:
    """An event about one of the operator's cluster-scoped objects (Tenant, DatabaseSchema)."""
    timestamp = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}", "namespace": EVENTS_NAMESPACE},
        "involvedObject": {"apiVersion": API_VERSION, "kind": kind, "name": name,
                           "uid": uid, "resourceVersion": resource_version},
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "tenant-operator"},
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
        "reportingComponent": "tenant-operator",
    }
