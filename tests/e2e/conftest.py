"""End-to-end fixtures: the real control plane, the real PostgreSQL, the operator as a process."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
import yaml

from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.dev.cluster import REPO_ROOT, existing_cluster, start_cluster
from tenant_operator.dev.session import OperatorProcess, install_crds, run_kubectl
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

RESYNC_SECONDS = 2


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster():
    found = existing_cluster()
    if found:
        install_crds(found)
        yield found
        return
    started = start_cluster()
    install_crds(started)
    yield started
    started.stop()
    shutil.rmtree(started.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(cluster) -> Kube:
    from kubernetes import config

    return Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)), field_manager="e2e-test")


@pytest.fixture(scope="session")
def shared_database() -> str:
    return f"tenants_{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def operator(cluster, postgres, shared_database):
    logdir = Path(tempfile.mkdtemp(prefix="tenant-operator-e2e-"))
    process = OperatorProcess(cluster, postgres.url(), logdir / "operator.log",
                              resync_seconds=RESYNC_SECONDS, shared_database=shared_database,
                              backoff_max_seconds=5)
    wait_for(lambda: process.process.poll() is None and process.metrics(), timeout=60,
             what="the operator to serve metrics")
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


class Tenants:
    """Creates tenants with unique names and reads them back, for readable tests."""

    def __init__(self, kube: Kube, cluster):
        self.kube = kube
        self.cluster = cluster
        self.created: list[str] = []

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(3)}"

    def create(self, name: str, plan: str, tier: str = "shared", **spec) -> dict:
        body = {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                "spec": {"plan": plan, "tier": tier, **spec}}
        self.created.append(name)
        return self.kube.create(TENANT.collection_path(), body)

    def get(self, name: str) -> dict | None:
        return self.kube.read(ObjectRef(TENANT, name))

    def condition(self, name: str, type_: str) -> dict | None:
        body = self.get(name) or {}
        return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == type_), None)

    def wait_condition(self, name: str, type_: str, status: str = "True", reason: str | None = None,
                       timeout: float = 90) -> dict:
        def check():
            found = self.condition(name, type_)
            if found and found["status"] == status and (reason is None or found["reason"] == reason):
                return found
            return None

        return wait_for(check, timeout=timeout, what=f"tenant {name} {type_}={status} {reason or ''}".strip())

    def wait_ready(self, name: str, timeout: float = 90) -> dict:
        self.wait_condition(name, "Ready", timeout=timeout)
        return self.get(name)

    def delete(self, name: str) -> None:
        self.kube.delete(ObjectRef(TENANT, name))

    def wait_gone(self, name: str, timeout: float = 90) -> None:
        wait_for(lambda: self.get(name) is None, timeout=timeout, what=f"tenant {name} to be deleted")


@pytest.fixture(scope="session")
def plans(kube, cluster) -> dict[str, dict]:
    """The sample plans, as a user installs them."""
    from tenant_operator.dev.cluster import REPO_ROOT

    path = REPO_ROOT / "manifests" / "samples" / "plans.yaml"
    run_kubectl(cluster, "apply", "-f", str(path))
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


@pytest.fixture
def tenants(kube, cluster, operator, plans):
    helper = Tenants(kube, cluster)
    yield helper
    # Wait until they are gone: a test that measures the operator's quiet must not see
    # the tail of another test's deletions.
    leftover = [name for name in helper.created if helper.get(name)]
    for name in leftover:
        helper.delete(name)
    for name in leftover:
        helper.wait_gone(name, timeout=120)


def namespaced(kube: Kube, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
    return kube.read(ObjectRef(KINDS[(api_version, kind)], name, namespace))


@pytest.fixture
def connect_dsn():
    """Opens autocommit connections by DSN and closes every one of them after the test."""
    opened: list[psycopg.Connection] = []

    def connect(dsn: str) -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


# --- a control plane of a test module's own, for tests that start and kill operators ---------------

@pytest.fixture(scope="module")
def fault_cluster():
    cluster = start_cluster()
    install_crds(cluster)
    run_kubectl(cluster, "apply", "-f", str(REPO_ROOT / "manifests" / "samples" / "plans.yaml"))
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_kube(fault_cluster) -> Kube:
    from kubernetes import config

    return Kube(config.new_client_from_config(config_file=str(fault_cluster.kubeconfig)), field_manager="e2e-test")


@pytest.fixture(scope="module")
def launch(fault_cluster, postgres):
    """Starts operators on the module's cluster, all with the same settings but the fault."""
    shared_database = f"faults_{secrets.token_hex(3)}"
    logdir = Path(tempfile.mkdtemp(prefix="tenant-operator-faults-"))
    started: list[OperatorProcess] = []

    def start(fault: str | None = None, run_args: tuple[str, ...] = ("--standalone",),
              extra_env: dict[str, str] | None = None, **overrides) -> OperatorProcess:
        settings = {"shared_database": shared_database, "resync_seconds": 2, "backoff_max_seconds": 3, **overrides}
        process = OperatorProcess(fault_cluster, postgres.url(), logdir / f"operator-{len(started)}.log",
                                  fault=fault, fault_dir=logdir / f"fault-{len(started)}", run_args=run_args,
                                  extra_env=extra_env, **settings)
        started.append(process)
        return process

    start.shared_database = shared_database
    yield start
    for process in started:
        if process.process.poll() is None:
            process.stop()
    print(f"operator logs: {logdir}")


@pytest.fixture
def fault_tenants(fault_kube, fault_cluster):
    helper = Tenants(fault_kube, fault_cluster)
    yield helper


