"""Which watch events put a tenant on the work queue."""

from __future__ import annotations

from tenant_operator.api.names import FINALIZER
from tenant_operator.api.settings import Settings
from tenant_operator.runtime.controller import Controller


def controller() -> Controller:
    return Controller.create(kube=None, settings=Settings(database_url="postgresql://x@y/z"))


def tenant(generation: int = 1, status: dict | None = None, **metadata) -> dict:
    metadata.setdefault("finalizers", [FINALIZER])
    return {"metadata": {"name": "acme", "generation": generation, **metadata}, "status": status or {}}


def seen_before(body: dict) -> Controller:
    one = controller()
    one.tenants["acme"] = body
    return one


def test_a_new_tenant_is_queued():
    one = controller()
    one.tenant_seen("ADDED", tenant())
    assert len(one.queue) == 1


def test_the_operators_own_status_write_coming_back_is_not_queued_but_cached():
    one = seen_before(tenant())
    one.tenant_seen("MODIFIED", tenant(status={"phase": "Ready"}))
    assert len(one.queue) == 0
    assert one.tenants["acme"]["status"] == {"phase": "Ready"}  # the next reconcile sees it


def test_spec_annotation_label_finalizer_and_deletion_changes_are_queued():
    changes = [tenant(generation=2), tenant(annotations={"tenancy.dev/rotate-password": "1"}),
               tenant(labels={"team": "a"}), tenant(finalizers=[]), tenant(deletionTimestamp="2030-01-01T00:00:00Z")]
    for change in changes:
        one = seen_before(tenant())
        one.tenant_seen("MODIFIED", change)
        assert len(one.queue) == 1, change


def test_the_echo_of_the_operators_own_finalizer_is_not_queued():
    one = seen_before(tenant(finalizers=[]))
    one.tenant_seen("MODIFIED", tenant(finalizers=[FINALIZER]))
    assert len(one.queue) == 0


def test_another_controllers_finalizer_alone_is_not_queued_but_losing_ours_is():
    one = seen_before(tenant())
    one.tenant_seen("MODIFIED", tenant(finalizers=[FINALIZER, "example.com/backup"]))
    assert len(one.queue) == 0
    one.tenant_seen("MODIFIED", tenant(finalizers=["example.com/backup"]))
    assert len(one.queue) == 1


def deployment(available: bool, namespace: str = "tenant-acme", tenant_label: str | None = "acme") -> dict:
    labels = {"tenancy.dev/tenant": tenant_label} if tenant_label else {}
    condition = {"type": "Available", "status": "True" if available else "False"}
    return {"metadata": {"name": "web", "namespace": namespace, "generation": 1, "labels": labels},
            "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "conditions": [condition]}}


def test_a_tenant_is_woken_when_its_deployment_becomes_available_not_on_every_event():
    one = seen_before(tenant())
    one.workload_seen("ADDED", deployment(available=False))
    one.workload_seen("MODIFIED", deployment(available=False))
    assert len(one.queue) == 0
    one.workload_seen("MODIFIED", deployment(available=True))
    assert len(one.queue) == 1


def test_a_deleted_deployment_is_put_back_by_its_tenants_reconcile():
    one = seen_before(tenant())
    one.workload_seen("ADDED", deployment(available=True))
    one.workload_seen("DELETED", deployment(available=True))
    assert len(one.queue) == 1


def test_the_shared_workload_changing_wakes_the_shared_tenants_and_forgets_its_cached_state():
    one = seen_before(tenant(status={"tier": "shared"}))
    one.tenants["solo"] = {"metadata": {"name": "solo"}, "status": {"tier": "isolated"}}
    one.context.shared_workload.get(lambda: False)
    shared = {"namespace": "tenancy-shared", "tenant_label": None}
    one.workload_seen("ADDED", deployment(available=False, **shared))
    one.workload_seen("MODIFIED", deployment(available=True, **shared))
    assert len(one.queue) == 1  # acme, not the isolated tenant
    assert one.context.shared_workload.get(lambda: True) is True


def test_a_tenant_is_reconciled_again_only_from_a_view_that_has_the_last_status_write(monkeypatch):
    from tenant_operator.runtime import bodies

    writes = bodies.OwnWrites()
    writes.wrote("acme", "120")
    assert writes.behind("acme")
    writes.seen("acme", {"metadata": {"resourceVersion": "119"}})
    assert writes.behind("acme"), "a view from before the write"
    writes.seen("acme", {"metadata": {"resourceVersion": "121"}})  # ours, folded into a later event
    assert not writes.behind("acme")

    writes.wrote("acme", "130")
    later = bodies.time.monotonic() + bodies.OWN_WRITE_SECONDS + 1
    monkeypatch.setattr(bodies.time, "monotonic", lambda: later)
    assert not writes.behind("acme"), "a write whose event never came holds the tenant back no longer"
