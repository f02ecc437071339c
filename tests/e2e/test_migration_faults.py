"""A migration survives the operator dying in any step, and a bad copy rolls back.

These tests start and kill operator processes, so they run on a control plane
of their own, where no other operator watches their tenants.
"""

from __future__ import annotations

import psycopg
import pytest

from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from .migration_data import (
    can_write,
    read_fingerprint,
    tenant_secret,
    write_sample_data,
)


def _ready_tenant_with_data(fault_tenants, fault_kube, tier: str) -> tuple[str, dict]:
    name = fault_tenants.unique("crash")
    fault_tenants.create(name, plan="professional", tier=tier)
    fault_tenants.wait_ready(name, timeout=120)
    url = tenant_secret(fault_kube, name)["DATABASE_URL"]
    write_sample_data(url)
    return name, read_fingerprint(url)


@pytest.mark.parametrize("step,source,target", [
    ("prepare", "shared", "isolated"),
    ("freeze", "isolated", "shared"),
    ("copy", "shared", "isolated"),
    ("verify", "isolated", "shared"),
    ("switch", "shared", "isolated"),
    ("retire", "isolated", "shared"),
])
def test_operator_killed_during_step_resumes_and_loses_nothing(step, source, target, launch, fault_tenants,
                                                               fault_kube, postgres):
    dying = launch(fault=f"crash:{step}")
    name, before = _ready_tenant_with_data(fault_tenants, fault_kube, source)

    fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": target}})
    wait_for(lambda: dying.process.poll() is not None, timeout=90, what=f"the operator to die in step {step}")
    assert dying.process.returncode == 137
    assert fault_tenants.get(name)["status"]["migration"]["step"] == step

    survivor = launch()
    try:
        def completed():
            found = fault_tenants.condition(name, "Migrating")
            return found and found["reason"] == "MigrationCompleted"

        wait_for(completed, timeout=120, what=f"the migration of {name} to finish after the restart")
        tenant = fault_tenants.wait_ready(name, timeout=60)
        assert tenant["status"]["tier"] == target
        url = tenant_secret(fault_kube, name)["DATABASE_URL"]
        assert read_fingerprint(url) == before  # nothing lost, nothing duplicated
        assert can_write(url)
    finally:
        survivor.stop()


def test_copy_that_fails_verification_rolls_back_with_writes_unfrozen(launch, fault_tenants, fault_kube, postgres):
    operator = launch(fault="corrupt:copy")
    try:
        name, before = _ready_tenant_with_data(fault_tenants, fault_kube, "shared")
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})

        condition = fault_tenants.wait_condition(name, "Migrating", "False", reason="VerificationFailed",
                                                 timeout=120)
        assert "rows" in condition["message"] and "stays on shared" in condition["message"]
        tenant = fault_tenants.get(name)
        assert tenant["status"]["tier"] == "shared"
        assert "migration" not in tenant["status"]
        assert fault_tenants.condition(name, "Ready")["reason"] == "TierMismatch"

        url = tenant_secret(fault_kube, name)["DATABASE_URL"]
        assert read_fingerprint(url) == before
        assert can_write(url)  # unfrozen on the source
        sql_name = f"tenant_{name.replace('-', '_')}"
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [sql_name]).fetchone()[0] == 0
    finally:
        operator.stop()
