"""Drift: is the live object what we would apply? Server additions are not drift; our changes are."""

from __future__ import annotations

import copy

import pytest

from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.desired.drift import contains, needs_apply

SETTINGS = Settings(database_url="postgresql://postgres:secret@db:5432/postgres")
TENANT = Tenant.from_body({"metadata": {"name": "acme", "generation": 1},
                           "spec": {"plan": "professional", "tier": "isolated",
                                    "owners": [{"kind": "User", "name": "alice"},
                                               {"kind": "Group", "name": "admins"}]}})
PLAN = TenantPlan.from_body({"metadata": {"name": "professional"}, "spec": {
    "tiers": ["shared", "isolated"],
    "quota": {"requests.cpu": "1000m", "requests.memory": "1024Mi", "pods": "20"},
    "workloads": {"isolated": {"replicas": 2, "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                                            "limits": {"cpu": "1", "memory": "1Gi"}}}},
}})


def desired(kind: str) -> dict:
    objects = [*render.tenant_objects(TENANT, PLAN, SETTINGS, "isolated").values()]
    return next(doc for group in objects for doc in group if doc["kind"] == kind)


def as_served(manifest: dict) -> dict:
    """The object as the API server returns it: metadata, defaults and status added."""
    live = copy.deepcopy(manifest)
    live["metadata"].update({
        "uid": "6f1c1d9e-0000-4000-8000-000000000001",
        "resourceVersion": "4711",
        "generation": 3,
        "creationTimestamp": "2026-05-01T12:00:00Z",
        "managedFields": [{"manager": "tenant-operator", "operation": "Apply"}],
        "annotations": {"deployment.kubernetes.io/revision": "1"},
    })
    live["status"] = {"observedGeneration": 3}
    if live["kind"] == "Namespace":
        live["metadata"]["labels"]["kubernetes.io/metadata.name"] = live["metadata"]["name"]
        live["spec"] = {"finalizers": ["kubernetes"]}
    if live["kind"] == "Deployment":
        live["spec"].update({"revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                             "strategy": {"type": "RollingUpdate"}})
        pod = live["spec"]["template"]["spec"]
        pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"})
        for container in pod["containers"]:
            container.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"})
            for port in container["ports"]:
                port["protocol"] = "TCP"
    if live["kind"] == "Service":
        live["spec"].update({"clusterIP": "10.96.0.12", "type": "ClusterIP", "sessionAffinity": "None"})
        for port in live["spec"]["ports"]:
            port["protocol"] = "TCP"
    return live


KINDS = ["Namespace", "NetworkPolicy", "RoleBinding", "ResourceQuota", "Deployment", "Service"]


def test_missing_object_needs_apply():
    assert needs_apply(desired("Namespace"), None)


@pytest.mark.parametrize("kind", KINDS)
def test_object_exactly_as_applied_is_not_drift(kind):
    manifest = desired(kind)

    assert not needs_apply(manifest, copy.deepcopy(manifest))


@pytest.mark.parametrize("kind", KINDS)
def test_server_added_fields_are_not_drift(kind):
    manifest = desired(kind)

    assert not needs_apply(manifest, as_served(manifest))


def test_secret_as_served_is_not_drift():
    secret = render.database_secret(TENANT, "db", 5432, "tenant_acme", "public", "pw")

    assert not needs_apply(secret, as_served(secret))


@pytest.mark.parametrize("ours, theirs", [
    ("1000m", "1"),
    ("1024Mi", "1Gi"),
    ("0.5", "500m"),
    ("1e3", "1k"),
    ("1Ti", "1024Gi"),
    (20, "20"),
])
def test_equal_quantities_in_other_spellings_are_not_drift(ours, theirs):
    quota = desired("ResourceQuota")
    quota["spec"]["hard"]["requests.cpu"] = ours
    live = as_served(quota)
    live["spec"]["hard"]["requests.cpu"] = theirs

    assert not needs_apply(quota, live)


def test_server_canonical_quota_is_not_drift():
    """The plan says 1000m and 1024Mi; the API server answers 1 and 1Gi."""
    quota = desired("ResourceQuota")
    live = as_served(quota)
    live["spec"]["hard"].update({"requests.cpu": "1", "requests.memory": "1Gi"})

    assert quota["spec"]["hard"]["requests.cpu"] == "1000m"
    assert not needs_apply(quota, live)


def test_changed_quantity_is_drift():
    quota = desired("ResourceQuota")
    live = as_served(quota)
    live["spec"]["hard"]["requests.cpu"] = "2"

    assert needs_apply(quota, live)


def test_unparseable_value_in_place_of_a_quantity_is_drift():
    quota = desired("ResourceQuota")
    live = as_served(quota)
    live["spec"]["hard"]["pods"] = "twenty"

    assert needs_apply(quota, live)


def test_changed_label_is_drift():
    namespace = desired("Namespace")
    live = as_served(namespace)
    live["metadata"]["labels"]["tenancy.dev/plan"] = "free"

    assert needs_apply(namespace, live)


def test_removed_label_is_drift():
    namespace = desired("Namespace")
    live = as_served(namespace)
    del live["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]

    assert needs_apply(namespace, live)


def test_removed_list_item_is_drift():
    policy = desired("NetworkPolicy")
    live = as_served(policy)
    live["spec"]["ingress"][0]["from"].pop()

    assert needs_apply(policy, live)


def test_extra_subject_added_by_someone_else_is_drift():
    """The owners list is ours: a subject added by hand would grant access the Tenant does not."""
    binding = desired("RoleBinding")
    live = as_served(binding)
    live["subjects"].append({"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"})

    assert needs_apply(binding, live)


def test_reordered_list_is_drift():
    binding = desired("RoleBinding")
    live = as_served(binding)
    live["subjects"].reverse()

    assert needs_apply(binding, live)


def test_changed_replica_count_is_drift():
    deployment = desired("Deployment")
    live = as_served(deployment)
    live["spec"]["replicas"] = 5

    assert needs_apply(deployment, live)


def test_changed_container_resources_are_drift():
    deployment = desired("Deployment")
    live = as_served(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "2Gi"

    assert needs_apply(deployment, live)


def test_changed_secret_data_is_drift():
    secret = render.database_secret(TENANT, "db", 5432, "tenant_acme", "public", "pw")
    live = as_served(secret)
    live["data"]["password"] = render.database_secret(TENANT, "db", 5432, "tenant_acme", "public",
                                                      "other")["data"]["password"]

    assert needs_apply(secret, live)


def test_a_map_replaced_by_a_scalar_is_drift():
    deployment = desired("Deployment")
    live = as_served(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = "none"

    assert needs_apply(deployment, live)


def test_api_version_and_kind_are_not_compared():
    """An older apiVersion of the same object, as a read through another group version returns it."""
    namespace = desired("Namespace")
    live = as_served(namespace)
    del live["kind"]
    live["apiVersion"] = "v1beta1"

    assert not needs_apply(namespace, live)


def test_contains_compares_maps_by_key_and_lists_item_by_item():
    assert contains({"a": 1, "b": [1, {"c": 2, "d": 3}]}, {"b": [1, {"c": 2}]})
    assert not contains({"b": [1]}, {"b": [1, 2]})
    assert not contains({"a": 1}, {"b": 1})
    assert contains(True, True) and not contains(False, True)


@pytest.mark.parametrize("ours, theirs", [("1.10", "1.1"), ("01", "1")])
def test_version_like_label_change_is_drift(ours, theirs):
    namespace = desired("Namespace")
    namespace["metadata"]["labels"]["app.kubernetes.io/version"] = ours
    live = as_served(namespace)
    live["metadata"]["labels"]["app.kubernetes.io/version"] = theirs

    assert needs_apply(namespace, live)
