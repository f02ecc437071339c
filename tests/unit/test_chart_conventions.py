"""The chart follows Helm's conventions: versions, overrides, probes' neighbours, a test hook, a values table.

Rendering needs the helm binary (hack/build-assets.sh caches one); without it those tests are skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tenant_operator import __version__
from tenant_operator.api.settings import ENV_PREFIX

from .test_chart import CHART, ROOT, container, only, render, sync


@pytest.fixture(scope="module")
def helm() -> str:
    found = sync.find_helm(build=False)
    if not found:
        pytest.skip("helm not found: run hack/build-assets.sh, put helm on PATH or set HELM")
    return found


def chart() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def template(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, "template", "t", str(CHART), "--set", "database.existingSecret=db", *args],
                          capture_output=True, text=True)


# --- Chart.yaml ----------------------------------------------------------------------------------

def test_kube_version_is_the_oldest_that_serves_the_admission_policy_and_the_cel_rules(helm):
    assert chart()["kubeVersion"] == ">=1.30.0-0"
    assert sync.KUBE_VERSION == "1.30.0"  # what the kustomize base and these tests render for

    refused = template(helm, "--kube-version", "1.29.9")
    assert refused.returncode != 0 and "kubeVersion" in refused.stderr
    assert template(helm, "--kube-version", "1.30.0").returncode == 0


def test_chart_names_its_licence_icon_and_maintainers():
    metadata = chart()

    assert metadata["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert (CHART / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert metadata["icon"].startswith("https://") and metadata["icon"].endswith("/docs/images/icon.svg")
    assert (ROOT / "docs" / "images" / "icon.svg").exists()
    assert all(m.get("url") or m.get("email") for m in metadata["maintainers"])


# --- names --------------------------------------------------------------------------------------

def test_fullname_override_names_every_object_and_every_reference_follows(helm):
    documents = render(helm, "fullnameOverride=acme-ops", "replicaCount=2")
    named = {d["metadata"]["name"] for d in documents}
    operator_env = {e["name"]: e.get("value") for e in container_named(documents, "acme-ops")["env"]}
    grants_env = {e["name"]: e.get("value") for e in container_named(documents, "acme-ops-grants")["env"]}

    chart_made = [d for d in documents if d["kind"] not in ("TenantPlan",)
                  and d["metadata"]["name"] != "tenancy-tenant-owner"]
    assert [d["metadata"]["name"] for d in chart_made if not d["metadata"]["name"].startswith("acme-ops")] == []
    for env in (operator_env, grants_env):
        assert {env[f"{ENV_PREFIX}NAMESPACE_CLUSTER_ROLE"], env[f"{ENV_PREFIX}SHARED_NAMESPACE_CLUSTER_ROLE"]} <= named
    assert operator_env[f"{ENV_PREFIX}LEADER_ELECTION_NAME"] == "acme-ops"
    assert grants_env[f"{ENV_PREFIX}GRANT_SUBJECT"] == f"system:serviceaccount:{sync.NAMESPACE}:acme-ops"
    policy = yaml.safe_dump(only(documents, "ValidatingAdmissionPolicy")["spec"])
    assert f"system:serviceaccount:{sync.NAMESPACE}:acme-ops-grants" in policy
    for binding in (d for d in documents if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["roleRef"]["name"] in named
        assert {s["name"] for s in binding["subjects"]} <= named


def test_name_override_changes_names_and_selector_labels_together(helm):
    documents = render(helm, "nameOverride=tenancy")
    deployment = only(documents, "Deployment", "tenant-operator-tenancy")
    selector = deployment["spec"]["selector"]["matchLabels"]

    assert selector["app.kubernetes.io/name"] == "tenancy"
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert only(documents, "Service", "-metrics")["spec"]["selector"] == selector


def container_named(documents: list[dict], deployment: str) -> dict:
    (found,) = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment]
    (one,) = found["spec"]["template"]["spec"]["containers"]
    return one


def test_the_owner_cluster_role_keeps_its_fixed_name_and_carries_the_release_labels(helm):
    owner = only(render(helm, "fullnameOverride=acme-ops"), "ClusterRole", "tenancy-tenant-owner")

    assert owner["metadata"]["name"] == "tenancy-tenant-owner"
    assert owner["metadata"]["labels"]["app.kubernetes.io/instance"] == sync.RELEASE
    assert owner["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tenant-operator"


# --- pod and network ----------------------------------------------------------------------------

def test_network_policies_let_in_only_metrics_and_health_and_nothing_to_grants(helm):
    assert not [d for d in render(helm) if d["kind"] == "NetworkPolicy"]

    documents = render(helm, "networkPolicy.enabled=true")
    operator = only(documents, "NetworkPolicy", "tenant-operator")
    grants = only(documents, "NetworkPolicy", "-grants")
    pod_labels = only(documents, "Deployment", "tenant-operator")["spec"]["template"]["metadata"]["labels"]
    grants_labels = only(documents, "Deployment", "-grants")["spec"]["template"]["metadata"]["labels"]

    assert operator["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert operator["spec"]["policyTypes"] == ["Ingress"]
    assert [port["port"] for rule in operator["spec"]["ingress"] for port in rule["ports"]] == ["health", "metrics"]
    assert {p["name"] for p in container(documents)["ports"]} == {"health", "metrics"}
    assert grants["spec"]["podSelector"]["matchLabels"].items() <= grants_labels.items()
    assert "ingress" not in grants["spec"] and grants["spec"]["policyTypes"] == ["Ingress"]


def test_metrics_peers_narrow_the_metrics_port_and_keep_the_helm_test_pod_in(helm):
    rendered = template(helm, "--kube-version", sync.KUBE_VERSION, "--set", "networkPolicy.enabled=true",
                        "--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring")
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (_, metrics) = only(documents, "NetworkPolicy", "tenant-operator")["spec"]["ingress"]
    test_pod = only(documents, "Pod")

    assert metrics["from"][0] == {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    assert metrics["from"][1]["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()


def test_snapshot_empty_dir_is_requested_as_ephemeral_storage(helm):
    def requests(*values):
        return container(render(helm, *values))["resources"]["requests"]

    volumes = only(render(helm), "Deployment", "tenant-operator")["spec"]["template"]["spec"]["volumes"]
    snapshots = next(v for v in volumes if v["name"] == "snapshots")

    assert requests()["ephemeral-storage"] == snapshots["emptyDir"]["sizeLimit"] == "2Gi"
    assert requests("snapshots.emptyDirSizeLimit=5Gi")["ephemeral-storage"] == "5Gi"
    assert requests("resources.requests.ephemeral-storage=3Gi")["ephemeral-storage"] == "3Gi"
    assert "ephemeral-storage" not in requests("snapshots.persistence.enabled=true")
    grants = container_named(render(helm), "tenant-operator-grants")
    assert grants["resources"]["requests"]["ephemeral-storage"] == "16Mi"


# --- helm test ----------------------------------------------------------------------------------

def render_test_pod(helm: str, *values: str) -> list[dict]:
    result = template(helm, "--kube-version", sync.KUBE_VERSION, "--show-only",
                      "templates/tests/operator-answers.yaml", *(a for v in values for a in ("--set", v)))
    if result.returncode != 0:
        return []
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_helm_test_asks_the_metrics_service_for_the_charts_version(helm):
    (pod,) = render_test_pod(helm)
    (test,) = pod["spec"]["containers"]
    service = only(render(helm), "Service", "-metrics")  # release tenant-operator: same chart, other release

    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert test["command"][:2] == ["python", "-c"]
    assert test["command"][2] == (CHART / "files" / "helm-test.py").read_text()
    assert test["args"] == [f"http://t-tenant-operator-metrics.default.svc:{service['spec']['ports'][0]['port']}"
                            "/metrics", __version__]
    assert test["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert render_test_pod(helm, "metrics.enabled=false") == []
    assert render_test_pod(helm, "tests.enabled=false") == []


def test_the_kustomize_base_leaves_the_test_hook_out(helm):
    assert not [d for d in sync.helm_template(helm) if d["kind"] == "Pod"]


# --- the values table -----------------------------------------------------------------------------

def test_the_readmes_values_table_is_generated_from_values_yaml():
    readme = (CHART / "README.md").read_text()

    assert readme == sync.readme_with_values_table(), "the chart README's values table is stale: run make manifests"
    for key in ("`nameOverride`", "`fullnameOverride`", "`networkPolicy.enabled`", "`tests.enabled`",
                "`database.existingSecret`", "`health.port`"):
        assert f"| {key} |" in readme


def test_a_value_without_a_comment_cannot_enter_the_table(tmp_path, monkeypatch):
    (tmp_path / "values.yaml").write_text("# Described.\ndescribed: 1\nsection:\n  # Also.\n  inner: a\n  bare: b\n")
    monkeypatch.setattr(sync, "CHART", Path(tmp_path))

    with pytest.raises(KeyError, match="section.bare"):
        sync.values_table()
