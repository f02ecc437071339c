"""Events tell each condition change; Warning only for what a person should look at."""

from __future__ import annotations

import pytest

from tenant_operator.api import conditions as cond
from tenant_operator.api.conditions import Condition
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.reconcile.context import Context
from tenant_operator.reconcile.report import report


class FakeKube:
    """Takes status writes; keeps the events posted as (type, reason)."""

    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def apply_status(self, kind, name, status, resource_version=None):
        return {"metadata": {"resourceVersion": "8"}}

    def create(self, path, body):
        self.events.append((body["type"], body["reason"]))
        return body


def tenant(conditions: list[dict] | None = None) -> Tenant:
    return Tenant.from_body({
        "apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "acme", "generation": 1, "resourceVersion": "7", "uid": "u"},
        "spec": {"plan": "starter", "tier": "isolated"},
        "status": {"phase": "Provisioning", "conditions": conditions or []}})


def events_of(*updates: Condition, before: list[dict] | None = None) -> list[tuple[str, str]]:
    kube = FakeKube()
    ctx = Context(kube=kube, settings=Settings(database_url="postgresql://a@db/postgres"), plan_body=lambda n: None)
    report(ctx, tenant(before), list(updates), phase="Provisioning", tier="isolated")
    return kube.events


@pytest.mark.parametrize("reason", ["WorkloadsProgressing", "AccessPending", "WaitingForDatabase"])
def test_normal_progress_is_told_in_normal_events(reason):
    posted = events_of(Condition(cond.WORKLOADS_READY, False, reason, "waiting for deployment web"),
                       Condition(cond.READY, False, reason, "WorkloadsReady: waiting for deployment web"))

    assert posted == [("Normal", reason), ("Normal", reason)]


@pytest.mark.parametrize("reason", ["ApplyFailed", "DatabaseUnavailable", "TemplateError", "PlanNotFound"])
def test_trouble_is_told_in_warnings(reason):
    posted = events_of(Condition(cond.READY, False, reason, "something a person must fix"))

    assert posted == [("Warning", reason)]


def test_a_completed_migration_is_normal_and_becoming_ready_is_normal():
    posted = events_of(Condition(cond.MIGRATING, False, "MigrationCompleted", "moved to isolated"),
                       Condition(cond.READY, True, "TenantReady", "all parts of the tenant are in place"))

    assert posted == [("Normal", "TenantReady"), ("Normal", "MigrationCompleted")]


def test_a_condition_restated_posts_nothing():
    before = [{"type": "Ready", "status": "False", "reason": "WorkloadsProgressing", "message": "waiting",
               "observedGeneration": 1, "lastTransitionTime": "2030-01-01T00:00:00Z"}]

    assert events_of(Condition(cond.READY, False, "WorkloadsProgressing", "waiting"), before=before) == []
