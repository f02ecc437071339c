"""Which watch events put a tenant on the work queue."""

from __future__ import annotations

from tenant_operator.controller import Controller
from tenant_operator.settings import Settings


def controller() -> Controller:
    return Controller.create(kube=None, settings=Settings(database_url="postgresql://x@y/z"))


def tenant(generation: int = 1, status: dict | None = None, **metadata) -> dict:
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
