"""Moves between servers survive the operator dying in any step, under live writers, and roll back cleanly.

These tests start and kill operator processes, so they run on a control plane of
their own (the fault cluster), with the session's PostgreSQL as the server
`default` and one more server of this module's own as `pg-far`.
"""

from __future__ import annotations

import base64
import shutil

import psycopg
import pytest

from tenant_operator.api.kinds import DATABASE_SERVER, KINDS, TENANT, ObjectRef
from tenant_operator.dev.postgres import start_postgres, stop_postgres
from tenant_operator.dev.wait import wait_for

from . import writers as writers_module
from .migration_data import can_write, read_fingerprint, tenant_secret, write_sample_data
from .writers import Writers, count_writes, wait_for_commits

FAR = "pg-far"


@pytest.fixture(scope="module")
def far(fault_kube):
    server = start_postgres()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "far-admin", "namespace": "default"},
              "data": {"uri": base64.b64encode(server.url().encode()).decode()}}
    fault_kube.create(KINDS[("v1", "Secret")].collection_path("default"), secret)
    fault_kube.create(DATABASE_SERVER.collection_path(), {
        "apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseServer", "metadata": {"name": FAR},
        "spec": {"adminSecretRef": {"namespace": "default", "name": "far-admin"}}})
    yield server
    stop_postgres(server, mode="immediate")
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def _tenant_under_load(fault_tenants, fault_kube, tier: str) -> tuple[str, dict, Writers]:
    name = fault_tenants.unique("far")
    fault_tenants.create(name, plan="professional", tier=tier, database={"server": "default"})
    fault_tenants.wait_ready(name, timeout=120)
    url = tenant_secret(fault_kube, name)["DATABASE_URL"]
    write_sample_data(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(writers_module.TABLE)
    before = read_fingerprint(url)
    writers = Writers(fault_kube, name, count=2).start()
    wait_for_commits(writers, 30)
    return name, before, writers


def _can_log_in(server, url: str) -> bool:
    params = psycopg.conninfo.conninfo_to_dict(url)
    try:
        with psycopg.connect(server.dsn(user=params["user"], password=params["password"]), connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@pytest.mark.parametrize("step,tier", [("copy", "shared"), ("switch", "isolated"), ("retire", "shared")])
def test_operator_killed_in_a_move_between_servers_resumes_and_loses_no_write(step, tier, launch, fault_tenants,
                                                                             fault_kube, far, postgres):
    first = launch()
    try:
        name, before, writers = _tenant_under_load(fault_tenants, fault_kube, tier)
    finally:
        first.stop()
    dying = launch(fault=f"crash:{step}")
    try:
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"database": {"server": FAR}}})
        wait_for(lambda: dying.process.poll() is not None, timeout=90, what=f"the operator to die in step {step}")
        assert dying.process.returncode == 137
        assert fault_tenants.get(name)["status"]["migration"]["step"] == step
        survivor = launch()
        try:
            wait_for(lambda: (c := fault_tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted",
                     timeout=180, what=f"the move of {name} to finish after the restart")
            tenant = fault_tenants.wait_ready(name, timeout=60)
            wait_for_commits(writers, writers.committed_total() + 30)
        finally:
            survivor.stop()
    finally:
        writers.stop()
    assert tenant["status"]["database"]["server"] == FAR
    assert tenant["status"]["tier"] == tier
    url = tenant_secret(fault_kube, name)["DATABASE_URL"]
    count = count_writes(url, writers)
    assert count.missing == [] and count.changed_ids == [] and count.phantoms == [], count
    after = read_fingerprint(url)
    assert after == before  # the sample data, untouched by the writers
    assert can_write(url)
    assert _can_log_in(far, url)
    assert not _can_log_in(postgres, url), "the tenant still logs in on the server it left"


def test_a_move_between_servers_that_fails_verification_rolls_back(launch, fault_tenants, fault_kube, far):
    operator = launch(fault="corrupt:copy")
    try:
        name, before, writers = _tenant_under_load(fault_tenants, fault_kube, "shared")
        try:
            fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"database": {"server": FAR}}})
            condition = fault_tenants.wait_condition(name, "Migrating", "False", reason="VerificationFailed",
                                                     timeout=120)
            wait_for_commits(writers, writers.committed_total() + 30)  # unfrozen on its old home
        finally:
            writers.stop()
        assert "stays on shared on default" in condition["message"], condition["message"]
        tenant = fault_tenants.get(name)
        assert tenant["status"]["database"]["server"] == "default"
        assert "migration" not in tenant["status"]
        url = tenant_secret(fault_kube, name)["DATABASE_URL"]
        count = count_writes(url, writers)
        assert count.missing == [] and count.phantoms == []
        assert can_write(url)
        with psycopg.connect(far.dsn(dbname=launch.shared_database), autocommit=True) as conn:
            left = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                " WHERE n.nspname = %s", [tenant["status"]["database"]["schema"]]).fetchone()[0]
        assert left == 0, "the target's copy stayed on the other server"
        assert not _can_log_in(far, url)
    finally:
        operator.stop()
