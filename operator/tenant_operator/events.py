"""Events on Tenants, posted only when something happened (a write each, so never on a no-op)."""

from __future__ import annotations

import logging
import uuid

from tenant_operator.conditions import now
from tenant_operator.kube import Kube
from tenant_operator.names import API_VERSION

log = logging.getLogger(__name__)

# Events about cluster-scoped objects live in "default", where `kubectl describe` looks for them.
EVENTS_NAMESPACE = "default"


def post(kube: Kube, tenant_body: dict, reason: str, message: str, warning: bool = False) -> None:
    meta = tenant_body["metadata"]
    timestamp = now()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": EVENTS_NAMESPACE},
        "involvedObject": {"apiVersion": API_VERSION, "kind": "Tenant", "name": meta["name"],
                           "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "tenant-operator"},
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
        "reportingComponent": "tenant-operator",
    }
    try:
        kube.create(f"/api/v1/namespaces/{EVENTS_NAMESPACE}/events", event)
    except Exception as error:  # noqa: BLE001 - an event lost is not worth failing a reconcile
        log.warning("could not post event %s for tenant %s: %s", reason, meta["name"], error)
