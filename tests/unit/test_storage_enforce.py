"""What a reconcile does about maxSize: stop, repair, lift, or say that the tenant's locks are in the way."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tenant_operator.api import limits
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import storage
from tenant_operator.infra.postgres import placement
from tenant_operator.reconcile import storage as storage_step
from tenant_operator.reconcile.context import Context

URL = "postgresql://postgres:secret@db.example:5432/postgres"
WHERE = placement("acme", "shared", "tenants")
TENANT = Tenant.from_body({"metadata": {"name": "acme", "generation": 1}, "spec": {"plan": "p"}})
CAPPED = limits.DatabaseLimits.model_validate({"maxSize": "3Mi"})


class Events:
    def __init__(self) -> None:
        self.posted: list[str] = []

    def post(self, tenant, reason, message, warning=False) -> None:
        self.posted.append(reason)


@pytest.fixture
def world(monkeypatch):
    state = {"size": 0, "stop": [], "busy": False, "calls": []}

    def act(name):
        def call(dsn, where):
            state["calls"].append(name)
            if state["busy"]:
                raise storage.StorageBusy("locked")
            return state["stop"] if name == "stop" else ["lifted"]
        return call

    monkeypatch.setattr(storage, "size", lambda dsn, where: state["size"])
    monkeypatch.setattr(storage, "vacuum", lambda dsn, where: state["calls"].append("vacuum") or 0)
    monkeypatch.setattr(storage, "stop", act("stop"))
    monkeypatch.setattr(storage, "lift", act("lift"))
    return state


def context() -> Context:
    return Context(kube=None, settings=Settings(database_url=URL), plan_body=lambda name: None,  # type: ignore[arg-type]
                   events=Events())  # type: ignore[arg-type]


def test_a_tenant_still_over_has_its_stop_applied_again_and_a_repair_is_told(world):
    ctx = context()
    world["size"], world["stop"] = 4 * 2**20, []
    told = storage_step.enforce(ctx, TENANT, WHERE, CAPPED, stopped=True)
    assert told.status == "True" and told.reason == "OverMaxSize"
    assert world["calls"] == ["vacuum", "stop"] and ctx.events.posted == []
    world["stop"] = ["revoked 1 grant(s) that could write"]
    storage_step.enforce(ctx, TENANT, WHERE, CAPPED, stopped=True)
    assert ctx.events.posted == ["StorageStopRepaired"]
    assert REGISTRY.get_sample_value("tenant_storage_exceeded", {"tenant": "acme"}) == 1


def test_locks_in_the_way_are_a_condition_to_retry_not_a_hung_worker(world):
    world["size"], world["busy"] = 4 * 2**20, True
    told = storage_step.enforce(context(), TENANT, WHERE, CAPPED, stopped=False)
    assert told.reason == storage_step.BUSY and told.status == "False" and "locks" in told.message


def test_back_under_the_stop_is_lifted_and_the_series_says_so(world):
    ctx = context()
    world["size"] = 2**20
    told = storage_step.enforce(ctx, TENANT, WHERE, CAPPED, stopped=True)
    assert told.reason == "WithinMaxSize" and world["calls"] == ["vacuum", "lift"]
    assert ctx.events.posted == ["StorageRestored"]
    assert REGISTRY.get_sample_value("tenant_storage_exceeded", {"tenant": "acme"}) == 0
    assert storage_step.enforce(ctx, TENANT, WHERE, limits.DatabaseLimits(), stopped=False) is None
    assert REGISTRY.get_sample_value("tenant_storage_exceeded", {"tenant": "acme"}) is None
