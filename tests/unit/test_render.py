"""What a tenant becomes, as manifests: render's pure functions of (tenant, plan, settings)."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from tenant_operator.api import fields, names
from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render

SAMPLE_PLANS = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "plans.yaml"
PLANS = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(SAMPLE_PLANS.read_text()) if doc}
SETTINGS = Settings(database_url="postgresql://postgres:secret@db.example:5432/postgres")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


def plan(name: str = "professional", **spec) -> TenantPlan:
    """A sample plan, with `spec` keys replaced (None removes a key)."""
    body = copy.deepcopy(PLANS[name])
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = value
    return TenantPlan.from_body(body)


def tenant(name: str = "acme", **spec) -> Tenant:
    return Tenant.from_body({"metadata": {"name": name, "generation": 1},
                             "spec": {"plan": "professional", **spec}})


def decoded(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(text).decode() for key, text in secret["data"].items()}


def by_kind(documents: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in documents}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(deployment: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container(deployment)["env"]}


def write_template(directory: Path, name: str, text: str) -> Settings:
    (directory / f"{name}.yaml.j2").write_text(text)
    return Settings(database_url=SETTINGS.database_url, template_dir=directory)


def plan_with_template(template: str) -> TenantPlan:
    return plan(workloads={"isolated": {"template": template}})


# --- what a NetworkPolicy admits, as the network plugin reads it ---------------


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
    return True


def admits_from_namespace(policy: dict, namespace_labels: dict[str, str]) -> bool:
    return any(
        "podSelector" not in peer and _selects(peer["namespaceSelector"], namespace_labels)
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    )


def live_namespace_labels(namespace: dict) -> dict[str, str]:
    """The labels the API server shows: ours plus the immutable kubernetes.io/metadata.name."""
    name = namespace["metadata"]["name"]
    return {**namespace["metadata"].get("labels", {}), "kubernetes.io/metadata.name": name}


# --- namespace ------------------------------------------------------------------


def test_namespace_is_tenant_prefixed_with_tenancy_labels():
    ns = render.namespace(tenant("acme", tier="isolated", plan="enterprise"))

    assert ns["apiVersion"] == "v1" and ns["kind"] == "Namespace"
    assert ns["metadata"]["name"] == "tenant-acme"
    assert "namespace" not in ns["metadata"]  # cluster-scoped
    labels = ns["metadata"]["labels"]
    assert labels["tenancy.dev/tenant"] == "acme"
    assert labels["tenancy.dev/tier"] == "isolated"
    assert labels["tenancy.dev/plan"] == "enterprise"
    assert labels["app.kubernetes.io/managed-by"] == "tenant-operator"


def test_namespace_enforces_restricted_pod_security():
    labels = render.namespace(tenant())["metadata"]["labels"]

    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_namespace_tier_label_follows_the_tier_the_tenant_lives_in_during_a_migration():
    moving = tenant(tier="isolated")

    assert render.namespace(moving, "shared")["metadata"]["labels"]["tenancy.dev/tier"] == "shared"
    assert render.namespace(moving)["metadata"]["labels"]["tenancy.dev/tier"] == "isolated"


# --- quota and limits --------------------------------------------------------------


def test_quota_is_the_plan_quota():
    quota = render.resource_quota(tenant(), plan("starter"))

    assert quota["kind"] == "ResourceQuota"
    assert quota["metadata"]["name"] == render.QUOTA_NAME
    assert quota["metadata"]["namespace"] == "tenant-acme"
    assert quota["spec"]["hard"] == {key: str(value) for key, value in PLANS["starter"]["spec"]["quota"].items()}


def test_quota_overrides_replace_plan_entries_and_add_new_ones():
    overrides = {"requests.cpu": "12", "count/deployments.apps": "20"}
    quota = render.resource_quota(tenant(quotaOverrides=overrides), plan("professional"))

    hard = quota["spec"]["hard"]
    assert hard["requests.cpu"] == "12"
    assert hard["count/deployments.apps"] == "20"
    assert hard["limits.cpu"] == "16"  # untouched plan entries stay
    assert hard["pods"] == "50"


def test_quota_numbers_are_written_as_text_as_resourcequota_expects():
    quota = render.resource_quota(tenant(quotaOverrides={"pods": 7}), plan(quota={"services": 3}))

    assert quota["spec"]["hard"] == {"pods": "7", "services": "3"}


def test_plan_without_quota_renders_an_empty_hard_map():
    quota = render.resource_quota(tenant(), plan(quota=None))

    assert quota["spec"]["hard"] == {}


def test_limit_range_carries_the_plan_container_limits():
    limit_range = render.limit_range(tenant(), plan("free"))

    assert limit_range["kind"] == "LimitRange"
    assert limit_range["metadata"] == {"name": render.LIMITS_NAME, "namespace": "tenant-acme",
                                       "labels": render.tenant_labels(tenant())}
    assert limit_range["spec"]["limits"] == [{
        "type": "Container",
        "default": {"cpu": "250m", "memory": "256Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "max": {"cpu": "1", "memory": "1Gi"},
    }]


def test_limit_range_holds_only_what_the_plan_sets():
    limit_range = render.limit_range(tenant(), plan(limits={"max": {"cpu": "2"}, "min": {"memory": "16Mi"}}))

    assert limit_range["spec"]["limits"] == [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "16Mi"}}]


@pytest.mark.parametrize("limits", [None, {}, {"default": {}, "max": {}}], ids=["absent", "empty", "empty-maps"])
def test_no_limit_range_when_the_plan_sets_no_limits(limits):
    assert render.limit_range(tenant(), plan(limits=limits)) is None


# --- network isolation ---------------------------------------------------------------


def test_network_policy_selects_every_pod_for_ingress():
    policy = render.network_policy(tenant())

    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["namespace"] == "tenant-acme"
    assert policy["spec"]["podSelector"] == {}
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_network_policy_admits_own_namespace():
    acme = tenant("acme")
    policy = render.network_policy(acme)

    assert admits_from_namespace(policy, live_namespace_labels(render.namespace(acme)))


def test_network_policy_refuses_other_tenants_namespaces():
    policy = render.network_policy(tenant("acme"))
    for other in (tenant("globex"), tenant("acme-evil", tier="isolated"), tenant("a")):
        assert not admits_from_namespace(policy, live_namespace_labels(render.namespace(other))), other.name


@pytest.mark.parametrize("namespace", ["kube-system", "ingress-nginx", "tenancy-shared", "monitoring"])
def test_network_policy_admits_namespaces_that_belong_to_no_tenant(namespace):
    policy = render.network_policy(tenant())

    assert admits_from_namespace(policy, {"kubernetes.io/metadata.name": namespace})


def test_no_network_policy_when_isolation_is_off():
    assert render.network_policy(tenant(networkIsolation=False)) is None


def test_network_isolation_is_on_by_default():
    assert render.network_policy(tenant()) is not None


# --- owners ------------------------------------------------------------------------------


def test_owners_are_bound_to_the_owner_cluster_role_in_the_tenant_namespace():
    binding = render.owners_role_binding(tenant(owners=[
        {"kind": "User", "name": "alice@acme.example"},
        {"kind": "Group", "name": "acme-admins"},
        {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},
    ]))

    assert binding["apiVersion"] == "rbac.authorization.k8s.io/v1" and binding["kind"] == "RoleBinding"
    assert binding["metadata"]["namespace"] == "tenant-acme"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": names.OWNER_CLUSTER_ROLE}
    assert binding["subjects"] == [
        {"kind": "User", "name": "alice@acme.example", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "Group", "name": "acme-admins", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},  # core group: no apiGroup
    ]


def test_no_role_binding_without_owners():
    assert render.owners_role_binding(tenant()) is None
    assert render.owners_role_binding(tenant(owners=[])) is None


# --- database Secret ----------------------------------------------------------------------


def test_database_secret_holds_every_connection_field():
    secret = render.database_secret(tenant("acme"), "db.example", 5432, "tenants", "tenant_acme", "s3cret")

    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "tenant-db"
    assert secret["metadata"]["namespace"] == "tenant-acme"
    assert decoded(secret) == {
        "host": "db.example",
        "port": "5432",
        "database": "tenants",
        "user": "tenant_acme",
        "password": "s3cret",
        "schema": "tenant_acme",
        "DATABASE_URL": "postgresql://tenant_acme:s3cret@db.example:5432/tenants",
    }


def test_database_secret_values_are_base64_as_secret_data_requires():
    secret = render.database_secret(tenant(), "db", 5432, "tenants", "tenant_acme", "pw")

    for key, text in secret["data"].items():
        assert base64.b64encode(base64.b64decode(text, validate=True)).decode() == text, key


def test_database_url_percent_encodes_a_password_with_special_characters():
    password = "p@ss:w/rd?#%+ é"
    secret = render.database_secret(tenant("acme"), "db", 5432, "tenant_acme", "public", password)

    url = decoded(secret)["DATABASE_URL"]
    assert url == "postgresql://tenant_acme:p%40ss%3Aw%2Frd%3F%23%25%2B%20%C3%A9@db:5432/tenant_acme"
    assert decoded(secret)["password"] == password  # the plain field stays plain


@hypothesis_settings(max_examples=60, deadline=None)
@given(password=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40))
def test_database_url_reads_back_as_the_same_connection_in_libpq(password):
    url = render.database_url("db.example", 6432, "tenant_a-b", "tenant_a_b", password)

    assert conninfo_to_dict(url) == {"host": "db.example", "port": "6432", "dbname": "tenant_a-b",
                                     "user": "tenant_a_b", "password": password}


def test_database_url_brackets_an_ipv6_host():
    url = render.database_url("::1", 5432, "tenants", "tenant_acme", "pw")

    assert conninfo_to_dict(url)["host"] == "::1"
    assert conninfo_to_dict(url)["port"] == "5432"


def test_database_secret_records_the_rotation_it_answers():
    rotated = render.database_secret(tenant(), "db", 5432, "tenants", "tenant_acme", "pw", rotation="2026-05-01")
    plain = render.database_secret(tenant(), "db", 5432, "tenants", "tenant_acme", "pw")

    assert rotated["metadata"]["annotations"] == {names.ROTATE_PASSWORD_ANNOTATION: "2026-05-01"}
    assert "annotations" not in plain["metadata"]


# --- isolated workloads -----------------------------------------------------------------------


def test_isolated_workloads_are_a_deployment_and_service_in_the_tenant_namespace():
    documents = render.isolated_workloads(tenant("globex", tier="isolated"), plan("professional"), SETTINGS)

    assert sorted(doc["kind"] for doc in documents) == ["Deployment", "Service"]
    assert {doc["metadata"]["namespace"] for doc in documents} == {"tenant-globex"}
    for doc in documents:
        assert doc["metadata"]["labels"] == render.tenant_labels(tenant("globex"), "isolated")


def test_isolated_deployment_is_sized_by_the_plan():
    deployment = by_kind(render.isolated_workloads(tenant(), plan("enterprise"), SETTINGS))["Deployment"]

    assert deployment["spec"]["replicas"] == 3
    web = container(deployment)
    assert web["image"] == "ghcr.io/tenancy-dev/shared-app:0.1.0"
    assert web["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"cpu": "2", "memory": "2Gi"}}
    assert web["ports"] == [{"name": "http", "containerPort": 8080}]


def test_isolated_deployment_uses_a_custom_image_and_port():
    workload = {"template": "web", "image": "registry.example/app@sha256:" + "a" * 64, "replicas": 1, "port": 9000}
    deployment = by_kind(render.isolated_workloads(tenant(), plan(workloads={"isolated": workload}),
                                                   SETTINGS))["Deployment"]

    assert container(deployment)["image"] == workload["image"]
    assert container(deployment)["ports"][0]["containerPort"] == 9000
    assert container(deployment)["resources"] == {}


def test_isolated_deployment_reads_database_url_from_the_tenant_secret_and_knows_its_tenant():
    deployment = by_kind(render.isolated_workloads(tenant("globex"), plan(), SETTINGS))["Deployment"]

    variables = env(deployment)
    assert variables["DATABASE_URL"] == {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {
        "name": names.DB_SECRET_NAME, "key": "DATABASE_URL"}}}
    assert variables["TENANT_ID"] == {"name": "TENANT_ID", "value": "globex"}


def test_isolated_service_reaches_the_deployment_pods():
    documents = by_kind(render.isolated_workloads(tenant(), plan(), SETTINGS))
    deployment, service = documents["Deployment"], documents["Service"]

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert _selects(deployment["spec"]["selector"], pod_labels)
    port_names = {port["name"] for port in container(deployment)["ports"]}
    assert all(port["targetPort"] in port_names for port in service["spec"]["ports"])


def test_isolated_pods_of_two_tenants_are_told_apart():
    """Selectors carry the tenant, so one tenant's Service never picks up another's pods."""
    acme = by_kind(render.isolated_workloads(tenant("acme"), plan(), SETTINGS))
    globex = by_kind(render.isolated_workloads(tenant("globex"), plan(), SETTINGS))

    globex_pods = globex["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert not _selects({"matchLabels": acme["Service"]["spec"]["selector"]}, globex_pods)


@pytest.mark.parametrize("suspended, replicas", [(False, 2), (True, 0)])
def test_suspended_tenant_workloads_scale_to_zero(suspended, replicas):
    deployment = by_kind(render.isolated_workloads(tenant(suspended=suspended), plan("professional"),
                                                   SETTINGS))["Deployment"]

    assert deployment["spec"]["replicas"] == replicas


def test_isolated_pods_pass_restricted_pod_security():
    deployment = by_kind(render.isolated_workloads(tenant(), plan(), SETTINGS))["Deployment"]

    _assert_restricted(deployment)


def _assert_restricted(deployment: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in pod["containers"]:
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_plan_without_isolated_workloads_renders_none():
    assert render.isolated_workloads(tenant(plan="free"), plan("free"), SETTINGS) == []


# --- custom templates ----------------------------------------------------------------------------

FOREIGN_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: planted
  namespace: kube-system
  labels: {{ labels | tojson }}
data:
  tenant: {{ tenant | tojson }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unplaced
  labels: {{ labels | tojson }}
"""


def test_a_template_cannot_place_objects_in_another_namespace(tmp_path):
    settings = write_template(tmp_path, "foreign", FOREIGN_TEMPLATE)

    documents = render.isolated_workloads(tenant("acme"), plan_with_template("foreign"), settings)

    assert [doc["metadata"]["name"] for doc in documents] == ["planted", "unplaced"]
    assert {doc["metadata"]["namespace"] for doc in documents} == {"tenant-acme"}
    assert documents[0]["data"] == {"tenant": "acme"}


def test_a_template_in_the_template_dir_replaces_the_builtin_one(tmp_path):
    settings = write_template(tmp_path, "web", FOREIGN_TEMPLATE)

    documents = render.isolated_workloads(tenant(), plan_with_template("web"), settings)

    assert [doc["kind"] for doc in documents] == ["ConfigMap", "ConfigMap"]


def test_builtin_templates_stay_available_beside_a_template_dir(tmp_path):
    settings = write_template(tmp_path, "other", FOREIGN_TEMPLATE)

    documents = render.isolated_workloads(tenant(), plan_with_template("web"), settings)

    assert sorted(doc["kind"] for doc in documents) == ["Deployment", "Service"]


def test_a_missing_template_raises_template_error_naming_it(tmp_path):
    settings = Settings(database_url=SETTINGS.database_url, template_dir=tmp_path)

    with pytest.raises(render.TemplateError, match="'nosuch'"):
        render.isolated_workloads(tenant(), plan_with_template("nosuch"), settings)


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n",           # unclosed flow mapping
    "apiVersion: v1\n  kind: ConfigMap\n- metadata\n",                  # bad indentation
], ids=["unclosed-mapping", "bad-indentation"])
def test_broken_yaml_raises_template_error_naming_the_template(tmp_path, text):
    settings = write_template(tmp_path, "broken", text)

    with pytest.raises(render.TemplateError, match="'broken'"):
        render.isolated_workloads(tenant(), plan_with_template("broken"), settings)


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ tenant_name_typo }}\n",   # undefined variable
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {% if %}\n",                   # jinja syntax
], ids=["undefined-variable", "jinja-syntax"])
def test_template_mistakes_raise_template_error_naming_the_template(tmp_path, text):
    settings = write_template(tmp_path, "mistake", text)

    with pytest.raises(render.TemplateError, match="'mistake'"):
        render.isolated_workloads(tenant(), plan_with_template("mistake"), settings)


@pytest.mark.parametrize("text", [
    "- apiVersion: v1\n  kind: ConfigMap\n",
    "just a string\n",
    "apiVersion: v1\nkind: ConfigMap\n",  # no metadata
], ids=["list", "scalar", "no-metadata"])
def test_a_template_rendering_something_other_than_objects_raises_template_error(tmp_path, text):
    settings = write_template(tmp_path, "odd", text)

    with pytest.raises(render.TemplateError, match="'odd'"):
        render.isolated_workloads(tenant(), plan_with_template("odd"), settings)


def test_a_template_with_empty_metadata_raises_template_error(tmp_path):
    # `name` indented one level too little: metadata is null, a typo a template author makes.
    settings = write_template(tmp_path, "typo", "apiVersion: v1\nkind: ConfigMap\nmetadata:\nname: x\n")

    with pytest.raises(render.TemplateError, match="'typo'"):
        render.isolated_workloads(tenant(), plan_with_template("typo"), settings)


def test_empty_documents_in_a_template_are_skipped(tmp_path):
    settings = write_template(tmp_path, "sparse", "---\n" + FOREIGN_TEMPLATE + "---\n---\n")

    assert len(render.isolated_workloads(tenant(), plan_with_template("sparse"), settings)) == 2


# --- shared tier ------------------------------------------------------------------------------------


def test_shared_infrastructure_is_namespace_routes_deployment_and_service():
    documents = render.shared_infrastructure(SETTINGS)

    assert [(doc["kind"], doc["metadata"]["name"]) for doc in documents] == [
        ("Namespace", "tenancy-shared"),
        ("ConfigMap", render.ROUTES_CONFIGMAP),
        ("Deployment", "shared-web"),
        ("Service", "shared-web"),
    ]
    assert all(doc["metadata"]["namespace"] == "tenancy-shared" for doc in documents[1:])


def test_shared_infrastructure_follows_settings():
    settings = Settings(database_url=SETTINGS.database_url, shared_namespace="shared-apps",
                        shared_image="registry.example/shared:2.0", shared_replicas=4)

    documents = by_kind(render.shared_infrastructure(settings))

    assert documents["Namespace"]["metadata"]["name"] == "shared-apps"
    deployment = documents["Deployment"]
    assert deployment["metadata"]["namespace"] == "shared-apps"
    assert deployment["spec"]["replicas"] == 4
    assert container(deployment)["image"] == "registry.example/shared:2.0"


def test_shared_deployment_mounts_the_routes_configmap_and_is_served():
    documents = by_kind(render.shared_infrastructure(SETTINGS))
    deployment, service = documents["Deployment"], documents["Service"]

    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {mount["name"]: mount for mount in container(deployment)["volumeMounts"]}
    assert volumes["routes"]["configMap"]["name"] == render.ROUTES_CONFIGMAP
    assert mounts["routes"]["mountPath"] == env(deployment)["TENANT_ROUTES_DIR"]["value"]
    assert mounts["routes"]["readOnly"] is True
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    _assert_restricted(deployment)


def test_shared_namespace_is_not_a_tenant_namespace():
    """Tenants' NetworkPolicies admit namespaces without a tenant label: the shared one must be such."""
    shared = by_kind(render.shared_infrastructure(SETTINGS))["Namespace"]

    assert names.LABEL_TENANT not in shared["metadata"]["labels"]
    assert admits_from_namespace(render.network_policy(tenant()), live_namespace_labels(shared))


def test_route_entry_maps_the_tenant_to_its_schema():
    entry = render.route_entry(tenant("acme-corp"), "tenants")

    assert json.loads(entry) == {"schema": "tenant_acme_corp", "role": "tenant_acme_corp",
                                 "login": "tenancy_app_for_acme_corp", "database": "tenants", "state": "active"}


@pytest.mark.parametrize("state", ["active", "suspended", "moving"])
def test_route_entry_carries_its_state_and_is_stable_text(state):
    entry = render.route_entry(tenant(), "tenants", state=state)

    assert json.loads(entry)["state"] == state
    assert entry == render.route_entry(tenant(), "tenants", state=state)
    assert entry == json.dumps(json.loads(entry), sort_keys=True)


def test_route_entry_refuses_a_state_the_app_would_not_know():
    with pytest.raises(ValueError, match="frozen"):
        render.route_entry(tenant(), "tenants", state="frozen")


def test_route_entry_holds_nothing_secret():
    entry = json.loads(render.route_entry(tenant(), "tenants"))

    assert set(entry) == {"schema", "role", "login", "database", "state"}


def test_route_entry_names_the_server_the_tenant_lives_on():
    entry = json.loads(render.route_entry(tenant(), "tenants", server=("pg-2", "pg-2.db", 5433)))

    assert (entry["server"], entry["host"], entry["port"]) == ("pg-2", "pg-2.db", 5433)
    assert set(entry) == {"schema", "role", "login", "database", "state", "server", "host", "port"}


def test_shared_workload_logs_in_as_the_app_role_and_rolls_on_rotation():
    docs = render.shared_infrastructure(SETTINGS, credentials="0123abcd")
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}

    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "shared-app-db", "key": "DATABASE_URL"}
    assert pod["metadata"]["annotations"]["tenancy.dev/credentials-digest"] == "0123abcd"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_shared_app_secret_holds_the_password_and_no_user():
    # Each tenant has a login of its own, named by its routing entry; the Secret gives them all one password.
    secret = render.shared_app_secret(SETTINGS, "db.example", 5432, "p@ss/word", "r1")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}

    assert set(data) == {"host", "port", "database", "password", "DATABASE_URL"}
    assert data["DATABASE_URL"] == "postgresql://:p%40ss%2Fword@db.example:5432/tenants"
    assert secret["metadata"]["namespace"] == SETTINGS.shared_namespace
    assert secret["metadata"]["annotations"] == {"tenancy.dev/rotated-for": "r1"}


# --- the whole tenant -----------------------------------------------------------------------------------


def full_tenant(name: str = "acme", **spec) -> Tenant:
    return tenant(name, tier="isolated", owners=[{"kind": "Group", "name": "admins"}], **spec)


def all_tenant_objects(one: Tenant, one_plan: TenantPlan, tier: str = "isolated") -> list[dict]:
    groups = render.tenant_objects(one, one_plan, SETTINGS, tier)
    secret = render.database_secret(one, "db", 5432, "tenants", "public", "pw")
    return [*groups["namespace"], *groups["quota"], *groups["access"], *groups["workloads"], secret]


def test_tenant_objects_are_grouped_in_the_order_they_are_applied():
    groups = render.tenant_objects(full_tenant(), plan(), SETTINGS, "isolated")

    assert [doc["kind"] for doc in groups["namespace"]] == ["Namespace", "NetworkPolicy"]
    assert [doc["kind"] for doc in groups["quota"]] == ["ResourceQuota", "LimitRange"]
    assert [doc["kind"] for doc in groups["access"]] == ["RoleBinding"]  # owners get in once the quota holds
    assert sorted(doc["kind"] for doc in groups["workloads"]) == ["Deployment", "Service"]


def test_shared_tier_tenant_has_no_workloads_of_its_own():
    groups = render.tenant_objects(full_tenant(), plan(), SETTINGS, "shared")

    assert groups["workloads"] == []
    assert groups["namespace"][0]["metadata"]["labels"]["tenancy.dev/tier"] == "shared"


def test_absent_objects_are_left_out_not_rendered_as_none():
    bare = tenant(networkIsolation=False)

    groups = render.tenant_objects(bare, plan(limits=None), SETTINGS, "shared")

    assert [doc["kind"] for doc in groups["namespace"]] == ["Namespace"]
    assert [doc["kind"] for doc in groups["quota"]] == ["ResourceQuota"]


def test_every_object_carries_managed_by_tenant_operator():
    documents = [*all_tenant_objects(full_tenant(), plan()), *render.shared_infrastructure(SETTINGS)]

    for doc in documents:
        labels = doc["metadata"]["labels"]
        assert labels[names.LABEL_MANAGED_BY] == "tenant-operator", (doc["kind"], doc["metadata"]["name"])


def test_every_tenant_object_carries_the_tenant_label():
    for doc in all_tenant_objects(full_tenant("globex"), plan()):
        assert doc["metadata"]["labels"][names.LABEL_TENANT] == "globex", doc["kind"]


def test_rendering_is_pure_and_repeatable():
    one, one_plan = full_tenant(quotaOverrides={"pods": "9"}), plan()
    before = (one.model_dump(), one_plan.model_dump())

    first = all_tenant_objects(one, one_plan)
    second = all_tenant_objects(one, one_plan)

    assert first == second
    assert (one.model_dump(), one_plan.model_dump()) == before


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_every_sample_plan_renders(plan_name):
    tiers = PLANS[plan_name]["spec"]["tiers"]
    for tier in tiers:
        documents = all_tenant_objects(tenant(plan=plan_name, tier=tier), plan(plan_name), tier)
        assert documents


# --- fuzzing ------------------------------------------------------------------------------------------


@st.composite
def tenant_names(draw) -> str:
    """Names the CRD admits: a DNS label of 1 to 40 characters starting with a letter."""
    length = draw(st.integers(1, names.TENANT_NAME_MAX_LENGTH))
    first = draw(st.sampled_from(LOWER))
    if length == 1:
        return first
    middle = draw(st.text(LOWER + DIGITS + "-", min_size=length - 2, max_size=length - 2))
    return first + middle + draw(st.sampled_from(LOWER + DIGITS))


quantities = st.one_of(
    st.integers(0, 10**6),
    st.from_regex(fields.QUANTITY_PATTERN, fullmatch=True).filter(lambda q: len(q) <= fields.QUANTITY_MAX_LENGTH),
)
resource_names = st.sampled_from(["cpu", "memory", "pods", "services", "requests.cpu", "limits.memory",
                                  "requests.storage", "count/deployments.apps", "hugepages-2Mi"])


def whole_counts(quota: dict) -> dict:
    """Only what the CRD admits: objects (pods, count/...) in whole numbers."""
    return {key: value for key, value in quota.items() if not fields.counted_whole(key) or fields._whole(str(value))}


plan_names = st.from_regex(fields.DNS_SUBDOMAIN_PATTERN, fullmatch=True).filter(lambda n: len(n) <= 63)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=tenant_names(),
    plan_name=plan_names,
    quota=st.dictionaries(resource_names, quantities, max_size=5).map(whole_counts),
    overrides=st.dictionaries(resource_names, quantities, max_size=3).map(whole_counts),
    suspended=st.booleans(),
    isolation=st.booleans(),
)
def test_any_admitted_tenant_renders_valid_names(name, plan_name, quota, overrides, suspended, isolation):
    assert re.fullmatch(names.TENANT_NAME_PATTERN, name)
    one = tenant(name, plan=plan_name, tier="isolated", quotaOverrides=overrides, suspended=suspended,
                 networkIsolation=isolation, owners=[{"kind": "User", "name": "u"}])

    documents = all_tenant_objects(one, plan(quota=quota))

    namespace = names.tenant_namespace(name)
    assert DNS_LABEL.fullmatch(namespace) and len(namespace) <= 63
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace
        for value in doc["metadata"]["labels"].values():
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value
    quota_doc = next(doc for doc in documents if doc["kind"] == "ResourceQuota")
    assert quota_doc["spec"]["hard"] == {key: str(value) for key, value in {**quota, **overrides}.items()}
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    assert env(deployment)["TENANT_ID"]["value"] == name
    assert deployment["spec"]["replicas"] == (0 if suspended else 2)
