"""Moves stop where they should: a flip-back cancels, a deletion settles, a deposed leader never acts.

The operators here run through the test harness's fault entry point with
`pause:<step>`: they stop inside that step until told to go on, which is how a
test holds a move in one step while it changes the Tenant, or stops the process
(SIGSTOP) past its Lease. A module control plane of its own: no other operator
watches these tenants.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import psycopg
import pytest

from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from .migration_data import (
    can_write,
    read_fingerprint,
    tenant_secret,
    write_sample_data,
)

LEASE = KINDS[("coordination.k8s.io/v1", "Lease")]


def _sql(name: str) -> str:
    return f"tenant_{name.replace('-', '_')}"


def _ready_with_data(fault_tenants, fault_kube, tier: str = "shared", **spec) -> tuple[str, dict]:
    name = fault_tenants.unique("fence")
    fault_tenants.create(name, plan="professional", tier=tier, **spec)
    fault_tenants.wait_ready(name, timeout=120)
    url = tenant_secret(fault_kube, name)["DATABASE_URL"]
    write_sample_data(url)
    return name, read_fingerprint(url)


def _events(fault_kube, name: str) -> list[str]:
    items = fault_kube.request("GET", "/api/v1/namespaces/default/events",
                               [("fieldSelector", f"involvedObject.name={name}")])["items"]
    return [item["reason"] for item in items]


def _database_exists(postgres, database: str) -> bool:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [database]).fetchone()[0] == 1


def _schema_rows(postgres, database: str, schema: str) -> int | None:
    with psycopg.connect(postgres.dsn(dbname=database), autocommit=True) as conn:
        if not conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()[0]:
            return None
        return conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}.orders").format(
            psycopg.sql.Identifier(schema))).fetchone()[0]


@pytest.mark.parametrize("step", ["prepare", "freeze", "copy"])
def test_setting_the_tier_back_before_the_switch_cancels_with_one_freeze(step, launch, fault_tenants, fault_kube,
                                                                        postgres):
    operator = launch(fault=f"pause:{step}")
    try:
        name, before = _ready_with_data(fault_tenants, fault_kube)
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
        wait_for(lambda: operator.paused_in() == step, timeout=60, what=f"the move to pause in step {step}")
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "shared"}})
        operator.resume()

        fault_tenants.wait_condition(name, "Migrating", "False", reason="MigrationCancelled", timeout=60)
        tenant = fault_tenants.wait_ready(name, timeout=60)
        assert tenant["status"]["tier"] == "shared" and "migration" not in tenant["status"]
        url = tenant_secret(fault_kube, name)["DATABASE_URL"]
        assert read_fingerprint(url) == before
        assert can_write(url)  # unfrozen
        assert not _database_exists(postgres, _sql(name))  # the target went
        reasons = _events(fault_kube, name)
        assert reasons.count("MigrationStarted") == 1 and "MigrationCompleted" not in reasons
    finally:
        operator.stop()


@pytest.mark.parametrize("policy", ["Retain", "Snapshot", "Delete"])
def test_deletion_during_the_copy_keeps_the_data_where_the_policy_says(policy, launch, fault_tenants, fault_kube,
                                                                      postgres, tmp_path):
    snapshots = tmp_path / "snapshots"
    operator = launch(fault="pause:copy", snapshot_dir=str(snapshots))
    try:
        name, before = _ready_with_data(fault_tenants, fault_kube, database={"reclaimPolicy": policy})
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
        wait_for(lambda: operator.paused_in() == "copy", timeout=60, what="the move to pause in its copy")
        fault_tenants.delete(name)
        operator.resume()
        fault_tenants.wait_gone(name, timeout=120)

        assert not _database_exists(postgres, _sql(name))  # before the switch: the target goes
        home = _schema_rows(postgres, launch.shared_database, _sql(name))
        if policy == "Retain":
            assert home == before["orders"][0]  # the data stays on the source, whole
        else:
            assert home is None
        if policy == "Snapshot":
            assert list(snapshots.glob(f"{name}-*.dump"))
    finally:
        operator.stop()


def _reconciles(operator) -> float:
    found = re.findall(r"^tenant_operator_reconciles_total(?:\{[^}]*\})? ([0-9.e+]+)$", operator.metrics(), re.M)
    return sum(float(value) for value in found)


def _writes(operator) -> float:
    found = re.findall(r"^tenant_operator_writes_total(?:\{[^}]*\})? ([0-9.e+]+)$", operator.metrics(), re.M)
    return sum(float(value) for value in found)


def _leader(fault_kube) -> str | None:
    lease = fault_kube.read(ObjectRef(LEASE, "tenant-operator", "default"))
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def _connections_after(server_log: Path, offset: int, identity_prefix: str) -> list[str]:
    text = server_log.read_text(errors="replace")[offset:]
    return [line for line in text.splitlines()
            if "connection authorized" in line and f"application_name=tenant-operator/{identity_prefix}" in line]


@pytest.mark.parametrize("step", ["prepare", "freeze", "copy", "verify", "switch", "retire"])
def test_leader_paused_past_its_lease_never_acts_after_waking(step, launch, fault_tenants, fault_kube, postgres):
    election = ("--leader-election",)
    timing = {"lease_duration_seconds": 4, "lease_renew_seconds": 1}
    pod = f"paused-{step}"
    paused = launch(fault=f"pause:{step}", run_args=election, extra_env={"POD_NAME": pod}, **timing)
    wait_for(lambda: (_leader(fault_kube) or "").startswith(pod), timeout=60, what="the first replica to lead")
    standby = launch(run_args=election, extra_env={"POD_NAME": f"standby-{step}"}, **timing)
    try:
        name, before = _ready_with_data(fault_tenants, fault_kube, tier="shared" if step != "freeze" else "isolated")
        target = "isolated" if step != "freeze" else "shared"
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": target}})
        wait_for(lambda: paused.paused_in() == step, timeout=60, what=f"the leader to pause in step {step}")
        written = _writes(paused)  # to either API, by this process: what it may never add to once it wakes
        paused.process.send_signal(signal.SIGSTOP)

        def completed():
            found = fault_tenants.condition(name, "Migrating")
            return found and found["reason"] == "MigrationCompleted"

        wait_for(completed, timeout=120, what="the new leader to complete the move")
        fault_tenants.wait_ready(name, timeout=60)
        assert (_leader(fault_kube) or "").startswith(f"standby-{step}")

        def settled() -> str | None:
            """The new leader's own follow-up writes (usage on the new home, ...) are over: three reconciles
            of it change nothing. Only then does a write tell of the woken replica."""
            seen = fault_tenants.get(name)["metadata"]["resourceVersion"]
            done = _reconciles(standby)
            wait_for(lambda: _reconciles(standby) >= done + 3, timeout=30, what="three more reconciles")
            return seen if fault_tenants.get(name)["metadata"]["resourceVersion"] == seen else None

        wait_for(settled, timeout=90, what="the new leader to settle")
        server_log = postgres.data_dir.parent / "server.log"
        offset = len(server_log.read_text(errors="replace"))

        paused.resume()
        paused.process.send_signal(signal.SIGCONT)
        # Its worker was inside the step: on waking it must notice before its next action, and stop.
        wait_for(lambda: "migration stops here" in paused.log_text(), timeout=30,
                 what="the woken replica to stop its move")
        # No write of its own (the new leader may still write the tenant's status: usage, a resync), no SQL.
        assert _writes(paused) == written
        assert _connections_after(server_log, offset, pod) == []
        assert fault_tenants.get(name)["status"]["tier"] == target
        url = tenant_secret(fault_kube, name)["DATABASE_URL"]
        assert read_fingerprint(url) == before
        assert can_write(url)
    finally:
        paused.stop()
        standby.stop()

