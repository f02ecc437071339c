"""Installing the operator as its users do, on the real API server: Helm and kustomize.

Each install goes into a control plane of its own, started here: the session's operator
(fixture `operator`) watches every tenant of the session cluster, and two operators on one
tenant would fight. The operator process then runs with the identity the install created
(a token of its ServiceAccount) and the environment and flags its Deployment declares, so
what is tested is the install's RBAC and wiring, not the test's admin rights. (Under kwok
the Deployment's own pods are fake: they are scheduled and report Ready, nothing runs.)
PostgreSQL is the session's server; a shared database and tenant names of our own, and
reclaimPolicy Delete, keep these tests apart from the others and leave it clean.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tenant_operator.api.settings import ENV_PREFIX
from tenant_operator.dev.cluster import (
    REPO_ROOT,
    LocalCluster,
    existing_cluster,
    kubectl,
    start_cluster,
)
from tenant_operator.dev.session import OperatorProcess, run_kubectl
from tenant_operator.dev.wait import wait_for

CHART = REPO_ROOT / "charts" / "tenant-operator"
MANIFESTS = REPO_ROOT / "manifests"
SAMPLES = MANIFESTS / "samples"
RELEASE = NAMESPACE = "tenant-operator"
READY_TIMEOUT = 120
PERMISSION_TROUBLE = re.compile(r"forbidden|not currently held|not enough permissions", re.I)


def helm_binary(cluster: LocalCluster) -> str:
    """The helm built beside our control-plane binaries, else the machine's."""
    if cluster.assets and (cluster.assets / "helm").exists():
        return str(cluster.assets / "helm")
    found = shutil.which("helm")
    if not found:
        pytest.skip("helm not found: KUBECONFIG points at a cluster of your own and no helm is on PATH")
    return found


def run(*argv: str, input: str | None = None, timeout: float = 300) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv[:3])} ... failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def fresh_cluster():
    if existing_cluster():
        pytest.skip("the install tests start control planes of their own; KUBECONFIG points at an existing "
                    "cluster, where the session's operator would fight the installed one over tenants")
    started = start_cluster()
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(started.workdir, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Install:
    """What an install left in a cluster: where the operator's Deployment and identity are."""
    cluster: LocalCluster
    namespace: str
    deployment: str
    service_account: str
    shared_database: str
    output: str = ""

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return run_kubectl(self.cluster, *args, input=input)

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    @property
    def grants_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.deployment}-grants"

    def live_container(self, deployment: str | None = None) -> dict:
        found = json.loads(self.kubectl("-n", self.namespace, "get", "deployment", deployment or self.deployment,
                                        "-o", "json"))
        (container,) = found["spec"]["template"]["spec"]["containers"]
        return container

    def service_account_kubeconfig(self, path: Path, service_account: str | None = None) -> Path:
        """A kubeconfig holding a token of the install's ServiceAccount, in its namespace like a pod."""
        account = service_account or self.service_account
        token = self.kubectl("-n", self.namespace, "create", "token", account, "--duration=1h").strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        context = {"cluster": admin["clusters"][0]["name"], "user": account, "namespace": self.namespace}
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "installed", "context": context}],
            "current-context": "installed",
        }))
        return path

    def as_operator(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """kubectl with nothing but a token of the operator's ServiceAccount."""
        return self._as(self.service_account, *args, input=input)

    def as_grants(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return self._as(f"{self.deployment}-grants", *args, input=input)

    def _as(self, account: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        config = self.cluster.workdir / f"{account}.kubeconfig"
        if not config.exists():
            self.service_account_kubeconfig(config, account)
        (binary, *_) = kubectl(self.cluster)
        return subprocess.run([binary, "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              input=input, timeout=60)

    def start_grants(self, logdir: Path) -> subprocess.Popen:
        """The grants Deployment's process, as it would run: its arguments, environment and identity."""
        container = self.live_container(f"{self.deployment}-grants")
        env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]},
               "KUBECONFIG": str(self.service_account_kubeconfig(logdir / "grants.kubeconfig",
                                                                 f"{self.deployment}-grants"))}
        log = open(logdir / f"grants-{secrets.token_hex(2)}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "tenant_operator", *container["args"]], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_operator(self, logdir: Path, name: str = "operator") -> OperatorProcess:
        """The operator as the Deployment would run it: its flags, its environment, its identity."""
        container = self.live_container()
        assert container["args"][0] == "run"
        run_args = tuple(container["args"][1:])
        settings, database_url = {}, None
        for env in container["env"]:
            if not env["name"].startswith(ENV_PREFIX):
                continue
            key = env["name"][len(ENV_PREFIX):].lower()
            if "valueFrom" in env:
                ref = env["valueFrom"]["secretKeyRef"]
                secret = json.loads(self.kubectl("-n", self.namespace, "get", "secret", ref["name"], "-o", "json"))
                value = base64.b64decode(secret["data"][ref["key"]]).decode()
            else:
                value = env["value"]
            if key == "database_url":
                database_url = value
            elif key not in ("metrics_port", "health_port"):  # OperatorProcess serves them on free ports
                settings[key] = value
        settings["shared_database"] = self.shared_database
        settings["snapshot_dir"] = str(logdir / f"{name}-snapshots")  # the pod's volume path is not ours
        process = OperatorProcess(self.cluster, database_url, logdir / f"{name}.log",
                                  kubeconfig=self.service_account_kubeconfig(logdir / f"{name}.kubeconfig"),
                                  run_args=run_args, **settings)
        wait_for(lambda: process.process.poll() is None and process.metrics(), timeout=60,
                 what=f"the installed operator to serve metrics (log: {process.log_path})")
        return process


def sample_tenants(suffix: str) -> list[dict]:
    """The sample tenants under names of our own; Delete so that PostgreSQL is left clean."""
    tenants = []
    for path in sorted(SAMPLES.glob("tenant-*.yaml")):
        tenant = yaml.safe_load(path.read_text())
        tenant["metadata"]["name"] = f"{tenant['metadata']['name']}-{suffix}"
        tenant["spec"].setdefault("database", {})["reclaimPolicy"] = "Delete"
        tenants.append(tenant)
    assert {t["spec"]["tier"] for t in tenants} == {"shared", "isolated"}
    return tenants


def apply_tenants_and_wait_ready(install: Install, tenants: list[dict]) -> None:
    """Apply as a user would, then wait for Ready; an RBAC refusal fails at once, with its message."""
    install.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(tenants))
    for tenant in tenants:
        name = tenant["metadata"]["name"]
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            conditions = _conditions(install, name)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                break
            refused = [c for c in conditions if PERMISSION_TROUBLE.search(c.get("message", ""))]
            if refused or time.monotonic() > deadline:
                pytest.fail(f"tenant {name} not Ready{' (RBAC refused the operator)' if refused else ''}: "
                            + json.dumps(conditions, indent=1))
            time.sleep(0.5)


def _conditions(install: Install, tenant: str) -> list[dict]:
    body = json.loads(install.kubectl("get", "tenant", tenant, "-o", "json"))
    return (body.get("status") or {}).get("conditions", [])


def delete_tenants_and_wait_gone(install: Install, tenants: list[dict]) -> None:
    names = [f"tenant/{t['metadata']['name']}" for t in tenants]
    install.kubectl("delete", "--wait=false", *names)
    install.kubectl("wait", "--for=delete", f"--timeout={READY_TIMEOUT}s", *names)


def samples(metrics_text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics_text) for s in family.samples}


def assert_no_permission_trouble(operator: OperatorProcess) -> None:
    log = operator.log_path.read_text(errors="replace")
    trouble = [line for line in log.splitlines() if PERMISSION_TROUBLE.search(line)]
    assert trouble == [], "the install's RBAC refused the operator something:\n" + "\n".join(trouble[:10])


def assert_tenants_reconciled(install: Install, operator: OperatorProcess, tenants: list[dict]) -> None:
    """Sample tenants Ready under the install's identity, metrics to show for it, then deleted cleanly."""
    apply_tenants_and_wait_ready(install, tenants)

    series = samples(operator.metrics())
    ok = series[("tenant_operator_reconciles_total", (("result", "ok"),))]
    errors = series.get(("tenant_operator_reconciles_total", (("result", "error"),)), 0)
    assert ok >= len(tenants)
    assert series[("tenant_operator_reconcile_duration_seconds_count", ())] == ok + errors
    assert 0 < series[("tenant_operator_reconcile_duration_seconds_sum", ())] < 60 * (ok + errors)
    for tenant in tenants:
        labels = (("phase", "Ready"), ("plan", tenant["spec"]["plan"]), ("tier", tenant["spec"]["tier"]))
        assert series[("tenant_operator_tenants", labels)] == 1
    assert series[("tenant_operator_writes_total", (("target", "kubernetes"),))] > 0

    delete_tenants_and_wait_gone(install, tenants)
    assert_no_permission_trouble(operator)
    after = samples(operator.metrics())
    assert sum(value for (name, labels), value in after.items()
               if name == "tenant_operator_tenants" and ("phase", "Ready") in labels) == 0


@pytest.fixture(scope="module")
def logdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tenant-operator-install-"))
    yield path
    print(f"install test logs: {path}")


# --- the chart against the session's API server, without installing ------------------------------

@pytest.mark.parametrize("values", [(), ("replicaCount=2", "snapshots.persistence.enabled=true",
                                         "metrics.enabled=false")], ids=["defaults", "ha-persistent"])
def test_helm_template_is_accepted_by_the_api_server(cluster, values):
    helm = helm_binary(cluster)
    namespace = f"install-dry-run-{secrets.token_hex(3)}"
    run_kubectl(cluster, "create", "namespace", namespace)
    try:
        rendered = run(helm, "template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds",
                       "--kube-version", "1.30.0",
                       "--set", "database.existingSecret=pg-admin", *(a for v in values for a in ("--set", v)))

        output = run(*kubectl(cluster), "apply", "--dry-run=server", "-f", "-", input=rendered)
    finally:
        run_kubectl(cluster, "delete", "namespace", namespace, "--wait=false")

    kinds = {line.split("/")[0] for line in output.splitlines()}
    assert {"deployment.apps", "clusterrole.rbac.authorization.k8s.io", "tenantplan.tenancy.dev",
            "customresourcedefinition.apiextensions.k8s.io"} <= kinds
    if values:
        assert {"role.rbac.authorization.k8s.io", "poddisruptionbudget.policy", "persistentvolumeclaim"} <= kinds


def test_gitops_example_tenants_are_accepted_by_the_api_server(cluster):
    built = run(*kubectl(cluster), "kustomize", str(MANIFESTS / "gitops" / "tenants"))
    tenants = [doc for doc in yaml.safe_load_all(built) if doc]

    assert tenants and {doc["kind"] for doc in tenants} == {"Tenant"}
    run(*kubectl(cluster), "apply", "--dry-run=server", "-f", "-", input=built)


# --- helm install ----------------------------------------------------------------------------------

@pytest.fixture(scope="class")
def helm_cluster():
    yield from fresh_cluster()


@pytest.fixture(scope="class")
def helm_release(helm_cluster, postgres):
    helm = helm_binary(helm_cluster)
    # The chart's pod must pass the strictest Pod Security Standard: the namespace enforces it.
    run_kubectl(helm_cluster, "create", "namespace", NAMESPACE)
    run_kubectl(helm_cluster, "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    run_kubectl(helm_cluster, "-n", NAMESPACE, "create", "secret", "generic", "pg-admin",
                f"--from-literal=url={postgres.url()}")
    shared_database = f"tenants_helm_{secrets.token_hex(3)}"
    output = run(helm, "install", RELEASE, str(CHART), "--kubeconfig", str(helm_cluster.kubeconfig),
                 "--namespace", NAMESPACE, "--set", "database.existingSecret=pg-admin",
                 "--set", f"database.sharedDatabase={shared_database}", "--wait", "--timeout", "180s")
    install = Install(helm_cluster, NAMESPACE, RELEASE, RELEASE, shared_database, output)
    yield from _with_grants(install)


def _with_grants(install: Install):
    """The install, with its grants Deployment's process running (under kwok its pod runs nothing)."""
    logdir = Path(tempfile.mkdtemp(prefix="tenant-operator-grants-"))
    grants = install.start_grants(logdir)
    try:
        yield install
    finally:
        grants.terminate()
        grants.wait(timeout=30)


class TestHelmInstall:
    def test_helm_install_brings_up_the_operator_in_a_restricted_namespace(self, helm_release):
        deployment = json.loads(helm_release.kubectl("-n", NAMESPACE, "get", "deployment", RELEASE, "-o", "json"))
        plans = helm_release.kubectl("get", "tenantplans", "-o", "name").split()

        assert deployment["status"].get("availableReplicas") == 1
        assert sorted(plans) == [f"tenantplan.tenancy.dev/{name}"
                                 for name in ("enterprise", "free", "professional", "starter")]
        assert "kubectl get tenantplans" in helm_release.output
        assert "WARNING: Secret" not in helm_release.output

    def test_operator_with_the_chart_identity_makes_sample_tenants_ready(self, helm_release, logdir):
        operator = helm_release.start_operator(logdir, "helm-operator")
        try:
            assert_tenants_reconciled(helm_release, operator, sample_tenants(f"h{secrets.token_hex(2)}"))
        finally:
            operator.stop()

    @pytest.mark.parametrize(("verb", "resource", "allowed"), [
        # Cluster-wide (-A) the operator holds namespaces and its own API, nothing namespaced:
        # its rights there come from a RoleBinding in each namespace it manages.
        ("list", "namespaces", "yes"),
        ("create", "namespaces", "yes"),
        ("delete", "namespaces", "no"),
        ("patch", "namespaces", "no"),
        ("list", "tenants.tenancy.dev", "yes"),
        ("get", "tenants.tenancy.dev", "yes"),
        ("get", "secrets", "no"),
        ("list", "secrets", "no"),
        ("list", "configmaps", "no"),
        ("list", "resourcequotas", "no"),
        ("list", "rolebindings.rbac.authorization.k8s.io", "no"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "no"),
        ("delete", "tenants.tenancy.dev", "no"),
        ("create", "clusterrolebindings", "no"),
        ("bind", "clusterroles/tenancy-tenant-owner", "no"),
        ("bind", "clusterroles/admin", "no"),
        ("bind", "clusterroles/cluster-admin", "no"),
        ("create", "pods", "no"),
        ("create", "serviceaccounts", "no"),
    ])
    def test_chart_identity_holds_no_more_than_it_needs(self, helm_release, verb, resource, allowed):
        answer = subprocess.run([*kubectl(helm_release.cluster), "auth", "can-i", verb, resource, "-A",
                                 f"--as=system:serviceaccount:{NAMESPACE}:{RELEASE}"], capture_output=True, text=True)

        assert answer.stdout.strip() == allowed, f"{verb} {resource}: {answer.stdout}{answer.stderr}"

    def test_a_second_installation_in_the_cluster_is_refused_with_the_first_ones_name(self, helm_release):
        helm = helm_binary(helm_release.cluster)
        run_kubectl(helm_release.cluster, "create", "namespace", "second")
        second = subprocess.run([helm, "install", "second", str(CHART), "--kubeconfig",
                                 str(helm_release.cluster.kubeconfig), "--namespace", "second",
                                 "--set", "database.existingSecret=pg-admin"], capture_output=True, text=True)

        assert second.returncode != 0
        assert f"already installed in this cluster: release {RELEASE} in namespace {NAMESPACE}" in second.stderr
        assert helm_release.kubectl("-n", "second", "get", "all", "-o", "name").strip() == ""
        # The installed release is the one to upgrade; an upgrade of it passes the same check.
        run(helm, "upgrade", RELEASE, str(CHART), "--kubeconfig", str(helm_release.cluster.kubeconfig),
            "--namespace", NAMESPACE, "--reuse-values", "--wait", "--timeout", "180s")

    def test_more_replicas_elect_a_leader_with_the_chart_identity(self, helm_release, logdir):
        helm = helm_binary(helm_release.cluster)
        run(helm, "upgrade", RELEASE, str(CHART), "--kubeconfig", str(helm_release.cluster.kubeconfig),
            "--namespace", NAMESPACE, "--reuse-values", "--set", "replicaCount=2", "--wait", "--timeout", "180s")
        operator = helm_release.start_operator(logdir, "helm-leader")
        try:
            def holder():
                lease = json.loads(helm_release.kubectl("-n", NAMESPACE, "get", "lease", RELEASE, "-o", "json"))
                return lease["spec"].get("holderIdentity")

            wait_for(holder, timeout=60, what=f"Lease {NAMESPACE}/{RELEASE} to have a holder")
            assert samples(operator.metrics())[("tenant_operator_leader", ())] == 1
            tenant = sample_tenants(f"l{secrets.token_hex(2)}")[:1]
            apply_tenants_and_wait_ready(helm_release, tenant)
            delete_tenants_and_wait_gone(helm_release, tenant)
            assert_no_permission_trouble(operator)
        finally:
            operator.stop()


# --- kubectl apply -k manifests/ -------------------------------------------------------------------

@pytest.fixture(scope="class")
def kustomize_cluster():
    yield from fresh_cluster()


@pytest.fixture(scope="class")
def kustomize_install(kustomize_cluster, postgres):
    output = run_kubectl(kustomize_cluster, "apply", "-k", str(MANIFESTS))
    run_kubectl(kustomize_cluster, "wait", "--for=condition=Established", "--timeout=60s",
                "crd/tenants.tenancy.dev", "crd/tenantplans.tenancy.dev")
    output += run_kubectl(kustomize_cluster, "apply", "-k", str(MANIFESTS / "plans"))
    run_kubectl(kustomize_cluster, "-n", NAMESPACE, "create", "secret", "generic", "tenant-operator-database",
                f"--from-literal=url={postgres.url()}")
    run_kubectl(kustomize_cluster, "-n", NAMESPACE, "rollout", "status", "deployment/tenant-operator",
                "--timeout=180s")
    install = Install(kustomize_cluster, NAMESPACE, "tenant-operator", "tenant-operator",
                      f"tenants_kustomize_{secrets.token_hex(3)}", output)
    yield from _with_grants(install)


class TestKustomizeInstall:
    def test_apply_k_installs_what_the_chart_installs(self, kustomize_install):
        for expected in ("customresourcedefinition.apiextensions.k8s.io/tenants.tenancy.dev created",
                         "clusterrole.rbac.authorization.k8s.io/tenant-operator created",
                         "deployment.apps/tenant-operator created", "deployment.apps/tenant-operator-grants created",
                         "validatingadmissionpolicy.admissionregistration.k8s.io/tenant-operator-managed-namespaces created",
                         "tenantplan.tenancy.dev/starter created"):
            assert expected in kustomize_install.output

    def test_operator_with_the_kustomize_identity_makes_sample_tenants_ready(self, kustomize_install, logdir):
        operator = kustomize_install.start_operator(logdir, "kustomize-operator")
        try:
            assert_tenants_reconciled(kustomize_install, operator, sample_tenants(f"k{secrets.token_hex(2)}"))
        finally:
            operator.stop()
