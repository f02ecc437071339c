"""A schema rollout survives the operator killed in the middle of it.

On a control plane of its own (the `launch` fixture), where no other operator
watches these tenants.
"""

from __future__ import annotations

import copy
import secrets

import psycopg
import yaml

from tenant_operator.api.kinds import DATABASE_SCHEMA, TENANT_PLAN, ObjectRef
from tenant_operator.dev.cluster import REPO_ROOT
from tenant_operator.dev.wait import wait_for

from .migration_data import tenant_secret

V1 = {"version": 1, "description": "log", "sql": "CREATE TABLE applied_log (v int NOT NULL);"}
V2 = {"version": 2, "description": "slow", "sql": "SELECT pg_sleep(0.4); INSERT INTO applied_log VALUES (2);"}
V3 = {"version": 3, "description": "slow_again", "sql": "SELECT pg_sleep(0.4); INSERT INTO applied_log VALUES (3);"}


def _version(fault_tenants, name: str) -> int | None:
    return ((fault_tenants.get(name) or {}).get("status", {}).get("database") or {}).get("schemaVersion")


def test_operator_killed_mid_rollout_resumes_with_no_version_applied_twice_or_skipped(launch, fault_tenants,
                                                                                       fault_kube):
    schema = f"app-{secrets.token_hex(3)}"
    fault_kube.create(DATABASE_SCHEMA.collection_path(), {
        "apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseSchema", "metadata": {"name": schema},
        "spec": {"migrations": {"inline": [V1]}, "rollout": {"maxParallel": 2}}})
    plans = {d["metadata"]["name"]: d for d in yaml.safe_load_all((REPO_ROOT / "manifests" / "samples" /
                                                                   "plans.yaml").read_text()) if d}
    spec = copy.deepcopy(plans["starter"]["spec"])
    spec["database"] = {"schema": schema}
    plan = f"starter-{secrets.token_hex(3)}"
    fault_kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                      "metadata": {"name": plan}, "spec": spec})
    first = launch()
    names = [fault_tenants.unique("roll") for _ in range(8)]
    for name in names:
        fault_tenants.create(name, plan=plan, database={"reclaimPolicy": "Delete"})
    for name in names:
        fault_tenants.wait_ready(name, timeout=180)

    fault_kube.merge_patch(ObjectRef(DATABASE_SCHEMA, schema), {"spec": {"migrations": {"inline": [V1, V2, V3]}}})
    wait_for(lambda: any(_version(fault_tenants, n) == 3 for n in names), timeout=120,
             what="the rollout to reach its first tenant")
    behind = [n for n in names if _version(fault_tenants, n) != 3]
    assert behind, "the rollout finished before the operator could be killed: make the versions slower"
    first.kill()

    second = launch()
    try:
        wait_for(lambda: all(_version(fault_tenants, n) == 3 for n in names), timeout=180,
                 what="every tenant at version 3 after the restart")
    finally:
        second.stop()
    for name in names:
        with psycopg.connect(tenant_secret(fault_kube, name)["DATABASE_URL"], autocommit=True) as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_history ORDER BY version")]
            effects = [row[0] for row in conn.execute("SELECT v FROM applied_log ORDER BY v")]
        assert versions == [1, 2, 3], name
        assert effects == [2, 3], name  # each version's effect exactly once
