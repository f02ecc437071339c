"""Kubernetes isolation and hostile specs, on the real API server with RBAC and the operator running.

Owners are tested as the API server sees them: the admin client impersonates a user, a member
of an owner group, or a service account (`Impersonate-User`/`Impersonate-Group`), so every
request goes through authentication, RBAC and admission like a real owner's would. Each check
asserts both sides: what an owner may do in their tenant's namespace, and what is refused
everywhere else.

Hostile specs: what the CRD schema refuses is in test_api_validation.py; here are the gaps it
left (unicode names) and the specs the schema admits but the operator cannot serve, which
must end as a False condition with a reason, nothing half-created, the operator alive and
the other tenants Ready.
"""

from __future__ import annotations

import json
import re
import secrets
import time

import psycopg
import pytest
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from tenant_operator.api import names
from tenant_operator.api.kinds import KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.desired import render
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

from .conftest import RESYNC_SECONDS, Tenants

SECRET = KINDS[("v1", "Secret")]
CONFIG_MAP = KINDS[("v1", "ConfigMap")]
NAMESPACE = KINDS[("v1", "Namespace")]
QUOTA = KINDS[("v1", "ResourceQuota")]
LIMITS = KINDS[("v1", "LimitRange")]
POLICY = KINDS[("networking.k8s.io/v1", "NetworkPolicy")]
BINDING = KINDS[("rbac.authorization.k8s.io/v1", "RoleBinding")]
DEPLOYMENT = KINDS[("apps/v1", "Deployment")]


def impersonating(cluster, user: str, group: str | None = None) -> Kube:
    """A client that is `user` (and a member of `group`) to the API server.

    The admin's kubeconfig is system:masters, which may impersonate anyone. Kube sends its
    requests through ApiClient.call_api, which (kubernetes client 30+) does not add the
    client's default_headers, so the impersonation headers are added there.
    """
    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    headers = {"Impersonate-User": user, **({"Impersonate-Group": group} if group else {})}
    call_api = client.call_api

    def impersonated_call(method, url, header_params=None, *args, **kwargs):
        return call_api(method, url, {**(header_params or {}), **headers}, *args, **kwargs)

    client.call_api = impersonated_call
    return Kube(client, field_manager="tenant-owner")


def status_of(call) -> int:
    """The HTTP status of a request that must fail."""
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status


def forbidden(call) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value.body
    return json.loads(caught.value.body)["message"]


def restricted_pod_spec(cpu: str = "10m", memory: str = "16Mi", limit_cpu: str = "50m",
                        limit_memory: str = "32Mi") -> dict:
    """A pod the namespace's Pod Security level (restricted) admits."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "app", "image": "registry.example/app:1",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": cpu, "memory": memory},
                          "limits": {"cpu": limit_cpu, "memory": limit_memory}},
        }],
    }


def pod(name: str, **resources: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": restricted_pod_spec(**resources)}


def deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": restricted_pod_spec()}}}


def collection(api_version: str, plural: str, namespace: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


class Owners:
    """Tenant A with an owner of each kind, and tenant B with an owner of its own."""

    def __init__(self, cluster, suffix: str):
        self.cluster = cluster
        self.user = f"alice-{suffix}"
        self.group = f"team-{suffix}"
        self.group_member = f"carol-{suffix}"
        self.service_account_namespace = f"ci-{suffix}"
        self.service_account = "deployer"
        self.other_owner = f"bob-{suffix}"
        self.stranger = f"mallory-{suffix}"

    def spec(self) -> list[dict]:
        return [{"kind": "User", "name": self.user}, {"kind": "Group", "name": self.group},
                {"kind": "ServiceAccount", "name": self.service_account, "namespace": self.service_account_namespace}]

    def client(self, identity: str) -> Kube:
        if identity == "user":
            return impersonating(self.cluster, self.user)
        if identity == "group":
            return impersonating(self.cluster, self.group_member, self.group)
        if identity == "serviceaccount":
            return impersonating(self.cluster, f"system:serviceaccount:{self.service_account_namespace}:"
                                               f"{self.service_account}")
        if identity == "other-owner":
            return impersonating(self.cluster, self.other_owner)
        return impersonating(self.cluster, self.stranger)


OWNER_KINDS = ["user", "group", "serviceaccount"]


@pytest.fixture(scope="module")
def owners(cluster) -> Owners:
    return Owners(cluster, secrets.token_hex(3))


@pytest.fixture(scope="module")
def pair(kube, cluster, operator, plans, owners):
    """(namespace of tenant A, namespace of tenant B), both Ready."""
    helper = Tenants(kube, cluster)
    first, second = helper.unique("own-a"), helper.unique("own-b")
    helper.create(first, plan="free", owners=owners.spec())
    helper.create(second, plan="starter", owners=[{"kind": "User", "name": owners.other_owner}])
    try:
        for name in (first, second):
            helper.wait_ready(name)
        yield names.tenant_namespace(first), names.tenant_namespace(second), first, second
    finally:
        for name in helper.created:
            helper.delete(name)
        for name in helper.created:
            helper.wait_gone(name, timeout=120)


# --- an owner in their own namespace ----------------------------------------------------------------------


@pytest.mark.parametrize("identity", OWNER_KINDS)
def test_owner_manages_workloads_configmaps_and_secrets_in_own_namespace(pair, owners, identity):
    ns = pair[0]
    me = owners.client(identity)
    suffix = secrets.token_hex(2)

    me.create(collection("v1", "configmaps", ns), {"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": f"cm-{suffix}"}, "data": {"k": "v"}})
    me.create(collection("v1", "secrets", ns), {"apiVersion": "v1", "kind": "Secret",
                                                "metadata": {"name": f"s-{suffix}"}, "stringData": {"k": "v"}})
    me.create(collection("apps/v1", "deployments", ns), deployment(f"web-{suffix}", replicas=0))
    me.merge_patch(ObjectRef(DEPLOYMENT, f"web-{suffix}", ns), {"spec": {"replicas": 0, "paused": True}})

    assert f"cm-{suffix}" in [item["metadata"]["name"] for item in me.list(CONFIG_MAP, ns)]
    assert f"s-{suffix}" in [item["metadata"]["name"] for item in me.list(SECRET, ns)]
    assert me.read(ObjectRef(DEPLOYMENT, f"web-{suffix}", ns))["spec"]["paused"] is True
    assert "password" in me.read(ObjectRef(SECRET, names.DB_SECRET_NAME, ns))["data"]
    me.list(KINDS[("v1", "Service")], ns)
    me.request("GET", collection("v1", "pods", ns))

    for ref in (ObjectRef(CONFIG_MAP, f"cm-{suffix}", ns), ObjectRef(SECRET, f"s-{suffix}", ns),
                ObjectRef(DEPLOYMENT, f"web-{suffix}", ns)):
        assert me.delete(ref) is True


@pytest.mark.parametrize("identity", OWNER_KINDS)
def test_owner_reads_but_cannot_change_the_operators_objects(pair, owners, identity):
    ns = pair[0]
    me = owners.client(identity)
    kept = [ObjectRef(QUOTA, render.QUOTA_NAME, ns), ObjectRef(LIMITS, render.LIMITS_NAME, ns),
            ObjectRef(POLICY, render.NETWORK_POLICY_NAME, ns), ObjectRef(BINDING, render.OWNERS_BINDING_NAME, ns)]

    for ref in kept:
        assert me.read(ref)["metadata"]["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY
        forbidden(lambda: me.merge_patch(ref, {"metadata": {"labels": {"planted": "yes"}}}))
        forbidden(lambda: me.delete(ref))
    forbidden(lambda: me.merge_patch(ObjectRef(QUOTA, render.QUOTA_NAME, ns), {"spec": {"hard": {"pods": "1000"}}}))
    forbidden(lambda: me.merge_patch(ObjectRef(POLICY, render.NETWORK_POLICY_NAME, ns),
                                     {"spec": {"ingress": [{}]}}))


@pytest.mark.parametrize("identity", OWNER_KINDS)
def test_owner_cannot_grant_rights_lift_limits_or_open_the_namespace(pair, owners, identity):
    ns = pair[0]
    me = owners.client(identity)

    for api_version, plural, body in (
        ("v1", "resourcequotas", {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "more"},
                                  "spec": {"hard": {"pods": "1000"}}}),
        ("v1", "limitranges", {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "more"},
                               "spec": {"limits": [{"type": "Container", "max": {"cpu": "64"}}]}}),
        ("networking.k8s.io/v1", "networkpolicies", {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "open"},
            "spec": {"podSelector": {}, "ingress": [{}]}}),
        ("rbac.authorization.k8s.io/v1", "roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "all"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        ("rbac.authorization.k8s.io/v1", "rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "friend"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "friend"}]}),
        # Hand-written Endpoints could send a Service's traffic to other tenants' pods.
        ("v1", "endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "elsewhere"},
                             "subsets": [{"addresses": [{"ip": "10.0.0.10"}], "ports": [{"port": 80}]}]}),
    ):
        forbidden(lambda: me.create(collection(api_version, plural, ns), body))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"mine-{secrets.token_hex(3)}"}}
    forbidden(lambda: me.create(collection("v1", "namespaces"), namespace))
    # Pod Security is a label on the namespace, which owners cannot touch.
    forbidden(lambda: me.merge_patch(ObjectRef(NAMESPACE, ns), {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "privileged"}}}))
    forbidden(lambda: me.delete(ObjectRef(NAMESPACE, ns)))
    # Reading Endpoints stays possible.
    me.request("GET", collection("v1", "endpoints", ns))


@pytest.mark.parametrize("identity", OWNER_KINDS)
def test_owner_cannot_read_another_tenants_namespace(pair, owners, identity, kube):
    theirs = pair[1]
    me = owners.client(identity)

    forbidden(lambda: me.read(ObjectRef(SECRET, names.DB_SECRET_NAME, theirs)))
    for plural in ("secrets", "configmaps", "pods", "services"):
        forbidden(lambda: me.request("GET", collection("v1", plural, theirs)))
    forbidden(lambda: me.request("GET", collection("apps/v1", "deployments", theirs)))
    forbidden(lambda: me.create(collection("v1", "configmaps", theirs), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planted"}}))
    # Nor the shared tier's routing, nor secrets anywhere else.
    forbidden(lambda: me.read(ObjectRef(CONFIG_MAP, render.ROUTES_CONFIGMAP, "tenancy-shared")))
    for namespace in ("default", "kube-system"):
        forbidden(lambda: me.request("GET", collection("v1", "secrets", namespace)))
    forbidden(lambda: me.request("GET", "/api/v1/secrets"))
    # Their own owner reads it.
    assert "password" in owners.client("other-owner").read(ObjectRef(SECRET, names.DB_SECRET_NAME, theirs))["data"]


@pytest.mark.parametrize("identity", OWNER_KINDS)
def test_owner_cannot_see_tenants_or_plans(pair, owners, identity):
    me = owners.client(identity)

    forbidden(lambda: me.list(TENANT))
    forbidden(lambda: me.read(ObjectRef(TENANT, pair[2])))
    forbidden(lambda: me.merge_patch(ObjectRef(TENANT, pair[2]), {"spec": {"plan": "enterprise"}}))
    forbidden(lambda: me.list(TENANT_PLAN))
    forbidden(lambda: me.read(ObjectRef(TENANT_PLAN, "free")))
    forbidden(lambda: me.request("GET", "/api/v1/namespaces"))


def test_someone_who_is_no_owner_gets_nothing_in_the_tenant_namespace(pair, owners):
    stranger = owners.client("stranger")
    for plural in ("secrets", "configmaps", "pods"):
        forbidden(lambda: stranger.request("GET", collection("v1", plural, pair[0])))
    forbidden(lambda: stranger.read(ObjectRef(QUOTA, render.QUOTA_NAME, pair[0])))
    # The same request as an owner is answered.
    assert owners.client("user").read(ObjectRef(QUOTA, render.QUOTA_NAME, pair[0])) is not None


# --- the quota holds against the tenant's own pods ----------------------------------------------------------


@pytest.fixture
def quota_tenant(tenants, kube):
    """A fresh tenant on plan free (pods: 5, containers at most 1 CPU), its namespace and an owner client."""
    name = tenants.unique("quota")
    owner = f"quota-owner-{secrets.token_hex(3)}"
    tenants.create(name, plan="free", owners=[{"kind": "User", "name": owner}])
    tenants.wait_ready(name)
    ns = names.tenant_namespace(name)
    # Quota admission refuses everything until the quota controller has counted usage once.
    wait_for(lambda: (kube.read(ObjectRef(QUOTA, render.QUOTA_NAME, ns)).get("status") or {}).get("hard"),
             timeout=60, what="the quota controller to count the tenant's usage")
    return ns, impersonating(tenants.cluster, owner)


def test_pods_beyond_the_quota_are_refused_by_the_api_server(quota_tenant, plans):
    ns, owner = quota_tenant
    assert plans["free"]["spec"]["quota"]["pods"] == "5"

    for number in range(5):
        owner.create(collection("v1", "pods", ns), pod(f"p{number}"))
    message = forbidden(lambda: owner.create(collection("v1", "pods", ns), pod("p5")))
    assert "exceeded quota" in message and "pods" in message

    # A container above the plan's LimitRange maximum is refused (LimitRanger admits before the quota).
    message = forbidden(lambda: owner.create(collection("v1", "pods", ns), pod("big", cpu="10m", limit_cpu="2")))
    assert "maximum cpu usage per Container is 1" in message


def test_a_deployment_cannot_scale_past_the_quota(quota_tenant, kube):
    ns, owner = quota_tenant
    owner.create(collection("apps/v1", "deployments", ns), deployment("wide", replicas=7))

    def refused_replica_set():
        for replica_set in kube.request("GET", collection("apps/v1", "replicasets", ns))["items"]:
            for condition in (replica_set.get("status") or {}).get("conditions", []):
                if condition["type"] == "ReplicaFailure" and "exceeded quota" in condition["message"]:
                    return condition
        return None

    wait_for(refused_replica_set, timeout=60, what="the ReplicaSet to be refused pods by the quota")
    pods = kube.request("GET", collection("v1", "pods", ns))["items"]
    assert len(pods) == 5


# --- hostile specs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["café", "tenant-ü", "ab\u200bcd", "ｔｅｎａｎｔ", "tenant-\U0001f600"],
                         ids=["accent", "umlaut", "zero-width-space", "fullwidth", "emoji"])
def test_api_refuses_unicode_tenant_names(kube, cluster, name):
    body = {"apiVersion": names.API_VERSION, "kind": "Tenant", "metadata": {"name": name},
            "spec": {"plan": "validation-only"}}
    with pytest.raises(ApiException) as caught:
        kube.request("POST", TENANT.collection_path(), [("dryRun", "All")], body)

    assert caught.value.status == 422
    message = json.loads(caught.value.body)["message"]
    assert "metadata.name" in message and "lowercase letters, digits and '-'" in message


@pytest.fixture(scope="module")
def control(kube, cluster, operator, plans):
    """A healthy tenant that must stay Ready whatever its neighbours' specs."""
    helper = Tenants(kube, cluster)
    name = helper.unique("control")
    helper.create(name, plan="starter")
    helper.wait_ready(name)
    yield name
    helper.delete(name)
    helper.wait_gone(name, timeout=120)


@pytest.fixture
def plan_factory(kube):
    made: list[str] = []

    def make(spec: dict) -> str:
        name = f"hostile-{secrets.token_hex(3)}"
        kube.create(TENANT_PLAN.collection_path(), {"apiVersion": names.API_VERSION, "kind": "TenantPlan",
                                                    "metadata": {"name": name}, "spec": spec})
        made.append(name)
        return name

    yield make
    for name in made:
        kube.delete(ObjectRef(TENANT_PLAN, name))


def role_exists(postgres, role: str) -> bool:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0] == 1


FIX_OVERRIDES = {"plan": "starter", "quotaOverrides": None}
FIX_OWNERS = {"plan": "starter", "owners": [{"kind": "User", "name": "someone"}]}
# id: (tenant spec, TenantPlan spec or None for starter, text the message names, spec patch that fixes it)
UNSERVABLE = {
    "uppercase-domain-in-quota-key": ({"quotaOverrides": {"eXample.com/gpu": "1"}}, None, "eXample.com/gpu",
                                      FIX_OVERRIDES),
    "quota-name-part-over-63": ({"quotaOverrides": {"example.com/" + "x" * 64: "1"}}, None, "x" * 64,
                                FIX_OVERRIDES),
    "plan-quota-key-with-uppercase-domain": ({}, {"tiers": ["shared"], "quota": {"storage.Example.com/x": "1"}},
                                             "storage.Example.com/x", {"plan": "starter"}),
    "owner-group-of-every-user": ({"owners": [{"kind": "Group", "name": "system:authenticated"}]}, None,
                                  "system:authenticated", FIX_OWNERS),
    "owner-group-of-anonymous": ({"owners": [{"kind": "Group", "name": "system:unauthenticated"}]}, None,
                                 "system:unauthenticated", FIX_OWNERS),
    "owner-anonymous-user": ({"owners": [{"kind": "User", "name": "system:anonymous"}]}, None, "system:anonymous",
                             FIX_OWNERS),
    "owner-service-account-name-invalid": (
        {"owners": [{"kind": "ServiceAccount", "name": "Deploy_Bot", "namespace": "ci"}]}, None, "Deploy_Bot",
        FIX_OWNERS),
    "plan-template-missing": ({"tier": "isolated"},
                              {"tiers": ["isolated"], "workloads": {"isolated": {"template": "does-not-exist"}}},
                              "does-not-exist", {"plan": "professional"}),
}


@pytest.fixture(scope="module")
def unservable(kube, cluster, operator, plans):
    """Every case of UNSERVABLE as a tenant, created at once: id -> tenant name."""
    helper = Tenants(kube, cluster)
    made_plans, created = [], {}
    for case, (spec, plan_spec, _, _) in UNSERVABLE.items():
        plan = "starter"
        if plan_spec:
            plan = f"hostile-{secrets.token_hex(3)}"
            kube.create(TENANT_PLAN.collection_path(), {"apiVersion": names.API_VERSION, "kind": "TenantPlan",
                                                        "metadata": {"name": plan}, "spec": plan_spec})
            made_plans.append(plan)
        created[case] = helper.unique("hostile")
        helper.create(created[case], plan=plan, **spec)
    for name in created.values():
        helper.wait_condition(name, "Ready", "False")
    time.sleep(RESYNC_SECONDS * 2)  # a few more reconciles of each
    yield created
    for name in helper.created:
        helper.delete(name)
    for name in helper.created:
        helper.wait_gone(name, timeout=120)
    for plan in made_plans:
        kube.delete(ObjectRef(TENANT_PLAN, plan))


@pytest.mark.parametrize("case", UNSERVABLE, ids=UNSERVABLE.keys())
def test_spec_the_schema_admits_but_the_operator_cannot_serve_is_a_false_condition(
        case, unservable, tenants, kube, postgres, operator, control):
    name, (_, _, named, fix) = unservable[case], UNSERVABLE[case]

    ready = tenants.condition(name, "Ready")
    assert ready["status"] == "False"
    assert re.fullmatch(r"[A-Z][A-Za-z]+", ready["reason"]), ready
    assert named in ready["message"]
    assert tenants.get(name)["status"]["phase"] == "Failed"
    # Nothing of the tenant was made: no namespace (no owners, no Secret), no role.
    assert kube.read(ObjectRef(NAMESPACE, names.tenant_namespace(name))) is None
    assert not role_exists(postgres, names.role_name(name))
    # No exception loop, the operator alive, the neighbours served.
    assert f"tenant {name}: reconcile failed" not in operator.log_path.read_text()
    assert operator.process.poll() is None
    assert tenants.condition(control, "Ready")["status"] == "True"
    # Fixing the spec makes it Ready.
    kube.merge_patch(ObjectRef(TENANT, name), {"spec": fix})
    tenants.wait_ready(name, timeout=120)


def test_a_tenant_refused_on_one_tier_can_be_moved_to_another(tenants, kube, plan_factory):
    plan = plan_factory({"tiers": ["shared", "isolated"], "workloads": {"isolated": {"template": "nope"}}})
    name = tenants.unique("retier")
    tenants.create(name, plan=plan, tier="isolated")
    tenants.wait_condition(name, "Ready", "False")
    try:
        kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "shared"}})
        tenants.wait_ready(name, timeout=20)
    finally:
        # The migration it is stuck in would keep the finalizer forever.
        if (tenants.get(name) or {}).get("status", {}).get("migration"):
            kube.delete(ObjectRef(TENANT, name))
            kube.merge_patch(ObjectRef(TENANT, name), {"metadata": {"finalizers": None}})


def test_absurd_but_valid_quantities_are_served_without_endless_writes(tenants, kube):
    name = tenants.unique("absurd")
    overrides = {"requests.cpu": "99999999999999999999Ei", "limits.memory": "1e99", "pods": "9" * 64}
    tenants.create(name, plan="starter", quotaOverrides=overrides)
    tenants.wait_ready(name)
    ref = ObjectRef(QUOTA, render.QUOTA_NAME, names.tenant_namespace(name))
    assert set(overrides) <= set(kube.read(ref)["spec"]["hard"])
    version = kube.read(ref)["metadata"]["resourceVersion"]

    time.sleep(RESYNC_SECONDS * 3)  # resyncs compare the canonical forms and find nothing to write

    assert kube.read(ref)["metadata"]["resourceVersion"] == version
    assert tenants.condition(name, "Ready")["status"] == "True"


def test_owner_service_account_of_a_namespace_yet_to_exist_is_bound(tenants, cluster):
    # As in RBAC itself, a binding may name a subject that does not exist yet (GitOps applies in
    # any order): the tenant is served, and the account gets its rights once it exists.
    namespace = f"later-{secrets.token_hex(3)}"
    name = tenants.unique("later")
    tenants.create(name, plan="starter", owners=[{"kind": "ServiceAccount", "name": "bot", "namespace": namespace}])
    tenants.wait_ready(name)

    account = impersonating(cluster, f"system:serviceaccount:{namespace}:bot")
    assert "password" in account.read(ObjectRef(SECRET, names.DB_SECRET_NAME, names.tenant_namespace(name)))["data"]
    assert status_of(lambda: impersonating(cluster, f"system:serviceaccount:{namespace}:other").read(
        ObjectRef(SECRET, names.DB_SECRET_NAME, names.tenant_namespace(name)))) == 403
