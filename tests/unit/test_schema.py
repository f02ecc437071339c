"""DatabaseSchema: versions put in order, the rollout gate, the rollout's status."""

from __future__ import annotations

import pytest

from tenant_operator.api.schema import DatabaseSchema, DatabaseSchemaSpec, MigrationsProblem, ordered_migrations
from tenant_operator.api.tenant import Tenant
from tenant_operator.runtime.rollout import RolloutGate, rollout_status, tenants_of_schema


def spec(inline=(), configmap=False, **rollout) -> DatabaseSchemaSpec:
    migrations = {"inline": list(inline)}
    if configmap:
        migrations["configMapRef"] = {"namespace": "tenant-operator", "name": "shop-migrations"}
    return DatabaseSchemaSpec.model_validate({"migrations": migrations, "rollout": rollout})


def inline(version: int, sql: str = "SELECT 1") -> dict:
    return {"version": version, "description": f"v{version}", "sql": sql}


def test_versions_from_both_sources_apply_in_numeric_order():
    found = ordered_migrations(spec([inline(10), inline(2)], configmap=True),
                               {"003_add_orders.sql": "CREATE TABLE orders ();", "1_init.sql": "CREATE TABLE a ();"})
    assert [(m.version, m.description) for m in found] == [(1, "init"), (2, "v2"), (3, "add_orders"), (10, "v10")]


@pytest.mark.parametrize(("data", "reason"), [
    ({"add_orders.sql": "SELECT 1"}, "InvalidMigrationName"),
    ({"003_add orders.sql": "SELECT 1"}, "InvalidMigrationName"),
    ({"002_twice.sql": "SELECT 1"}, "DuplicateVersion"),
    ({"004_empty.sql": "  \n"}, "EmptyMigration"),
])
def test_a_configmap_that_cannot_be_put_in_order_is_refused_whole(data, reason):
    with pytest.raises(MigrationsProblem) as refused:
        ordered_migrations(spec([inline(2)], configmap=True), data)
    assert refused.value.reason == reason


def test_a_schema_without_versions_is_a_problem_not_an_empty_rollout():
    with pytest.raises(MigrationsProblem, match="no versions"):
        ordered_migrations(spec(), None)


def test_a_migration_opts_out_of_the_transaction_by_its_header_alone():
    (plain, concurrent) = ordered_migrations(spec([
        inline(1, "CREATE INDEX i ON t (a); -- no-transaction is not a header here"),
        inline(2, "-- tenant-operator: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);"),
    ]), None)
    assert plain.transactional and not concurrent.transactional
    assert plain.checksum != concurrent.checksum and len(plain.checksum) == 64


# --- the rollout gate --------------------------------------------------------------------------------

def tenant_body(name: str, version: int | None = None, failed_generation: int | None = None, **labels) -> dict:
    database = {"schemaVersion": version} if version is not None else {}
    if failed_generation is not None:
        database.update(schemaFailedVersion=2, schemaFailedGeneration=failed_generation)
    return {"metadata": {"name": name, "labels": labels}, "spec": {"plan": "shop"},
            "status": {"phase": "Ready", "database": database,
                       "conditions": [{"type": "SchemaReady", "status": "False", "reason": "SchemaMigrationFailed",
                                       "message": "boom", "lastTransitionTime": "2030-01-01T00:00:00Z"}]
                       if failed_generation is not None else []}}


def schema(generation: int = 1, **rollout) -> DatabaseSchema:
    return DatabaseSchema(name="app", generation=generation, spec=spec([inline(1), inline(2)], **rollout))


def gate_over(bodies: list[dict]) -> RolloutGate:
    return RolloutGate(lambda name: bodies)


def view(name: str) -> Tenant:
    return Tenant.from_body({"metadata": {"name": name}, "spec": {"plan": "shop"}})


def test_no_more_than_max_parallel_tenants_migrate_at_once_and_a_freed_slot_wakes_the_next():
    bodies = [tenant_body(n, 1) for n in "abc"]
    woken: list[str] = []
    gate, app = RolloutGate(lambda name: bodies, wake=woken.append), schema(maxParallel=2)
    assert gate.may_start(app, view("a"), 2) is None
    assert gate.may_start(app, view("b"), 2) is None
    turned_away = gate.may_start(app, view("c"), 2)
    assert "maxParallel 2" in turned_away.reason and turned_away.brief
    gate.finished(app, view("a"), failed=False)
    assert woken == ["c"]
    assert gate.may_start(app, view("c"), 2) is None


def test_a_slot_handed_to_a_tenant_that_no_longer_needs_it_is_handed_on_by_the_pump():
    bodies = [tenant_body(n, 1) for n in "abcd"]
    woken: list[str] = []
    gate, app = RolloutGate(lambda name: bodies, wake=woken.append), schema(maxParallel=1)
    assert gate.may_start(app, view("a"), 2) is None
    assert gate.may_start(app, view("b"), 2).brief
    assert gate.may_start(app, view("c"), 2).brief
    assert gate.may_start(app, view("d"), 2).brief
    gate.pump()
    assert woken == []  # no free slot: nobody woken for nothing
    gate.finished(app, view("a"), failed=False)
    assert woken == ["b"]  # b was deleted meanwhile, say: it never asks, the slot stays free
    gate.pump()
    assert woken == ["b", "c"]  # the next in line
    assert gate.may_start(app, view("c"), 2) is None
    gate.pump()
    assert woken == ["b", "c"]  # c took the slot: d waits for it


def test_a_paused_rollout_starts_nobody():
    assert "paused" in gate_over([tenant_body("a", 1)]).may_start(schema(paused=True), view("a"), 2).reason


def test_the_rollout_halts_at_max_failures_of_the_current_generation_only():
    bodies = [tenant_body("a", 1, failed_generation=1), tenant_body("b", 1)]
    assert "halted" in gate_over(bodies).may_start(schema(generation=1), view("b"), 2).reason
    assert gate_over(bodies).may_start(schema(generation=2), view("b"), 2) is None  # changed: resumes


def test_a_failure_in_this_process_halts_before_the_watch_tells_it():
    gate, app = gate_over([tenant_body("a", 1), tenant_body("b", 1)]), schema(maxFailures=1)
    assert gate.may_start(app, view("a"), 2) is None
    gate.finished(app, view("a"), failed=True)
    assert "halted" in gate.may_start(app, view("b"), 2).reason


def test_a_tenant_is_not_halted_by_its_own_failure_when_a_view_without_its_record_comes_by():
    """Its record stops it (ensure_schema); a stale view lacking the record must not leave it "halted" for ever,
    telling SchemaRolloutPending where its failure should be: it tries again and records the failure anew."""
    gate, app = gate_over([tenant_body("a", 1), tenant_body("b", 1)]), schema(maxFailures=1)
    assert gate.may_start(app, view("a"), 2) is None
    gate.finished(app, view("a"), failed=True)

    assert gate.may_start(app, view("a"), 2) is None
    assert "halted" in gate.may_start(app, view("b"), 2).reason


def test_the_others_wait_for_every_canary_to_serve_the_latest_version():
    canary = {"selector": {"matchLabels": {"ring": "canary"}}, "healthySeconds": 0}
    bodies = [tenant_body("c", 1, ring="canary"), tenant_body("x", 1)]
    gate = gate_over(bodies)
    app = schema(canary=canary)
    assert "waiting for the canaries" in gate.may_start(app, view("x"), 2).reason
    assert gate.may_start(app, view("c"), 2) is None
    bodies[0] = tenant_body("c", 2, ring="canary")
    assert gate.may_start(app, view("x"), 2) is None


def test_canaries_must_stay_healthy_for_a_while_before_the_rest_follow():
    canary = {"selector": {"matchLabels": {"ring": "canary"}}, "healthySeconds": 3600}
    gate = gate_over([tenant_body("c", 2, ring="canary"), tenant_body("x", 1)])
    assert "follow in" in gate.may_start(schema(canary=canary), view("x"), 2).reason


# --- the DatabaseSchema's status --------------------------------------------------------------------

def test_status_counts_tenants_at_latest_pending_and_failed():
    bodies = [tenant_body("a", 2), tenant_body("b", 1), tenant_body("c", 1, failed_generation=1)]
    status = rollout_status(schema(maxFailures=1), 2, None, bodies, {}, "2030-01-01T00:00:00Z")
    assert (status["latestVersion"], status["tenants"], status["atLatest"], status["pending"], status["failed"]) == (
        2, 3, 1, 1, 1)
    assert status["failures"] == [{"tenant": "c", "version": 2, "message": "boom"}]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Halted"]["status"] == "True" and conditions["RolledOut"]["status"] == "False"


def test_only_tenants_on_plans_naming_the_schema_count():
    plans = {"shop": {"spec": {"database": {"schema": "app"}}}, "other": {"spec": {}}}
    bodies = [tenant_body("a", 1), {**tenant_body("b", 1), "spec": {"plan": "other"}},
              {**tenant_body("c", 1), "metadata": {"name": "c", "deletionTimestamp": "2030-01-01T00:00:00Z"}}]
    assert [b["metadata"]["name"] for b in tenants_of_schema(bodies, plans, "app")] == ["a"]
