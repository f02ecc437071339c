"""The grants process binds the operator in the namespaces it manages, and nowhere else."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from tenant_operator.runtime import grants
from tenant_operator.runtime.grants import Granter, GrantSettings

SETTINGS = GrantSettings(
    subject={"kind": "ServiceAccount", "name": "tenant-operator", "namespace": "tenant-operator"},
    tenant_role="to-tenant-namespace", shared_role="to-shared-namespace", shared_namespace="tenancy-shared")


def namespace(name: str, labels: dict | None = None, deleting: bool = False) -> dict:
    meta = {"name": name, "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-05T00:00:00Z"
    return {"metadata": meta}


def tenant_namespace(tenant: str) -> dict:
    return namespace(f"tenant-{tenant}", {"app.kubernetes.io/managed-by": "tenant-operator", "tenancy.dev/tenant": tenant})


class Recorder:
    def __init__(self, existing: set[str] = frozenset()):
        self.created: list[tuple[str, dict]] = []
        self.existing = set(existing)

    def create(self, path, body):
        namespace = body["metadata"]["namespace"]
        if namespace in self.existing:
            raise ApiException(status=409, reason="AlreadyExists")
        self.existing.add(namespace)
        self.created.append((path, body))
        return body


def test_a_tenant_namespace_gets_the_tenant_role_bound_to_the_operator_alone():
    kube = Recorder()
    assert Granter(kube, SETTINGS).see(tenant_namespace("acme"))

    ((path, body),) = kube.created
    assert path == "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-acme/rolebindings"
    assert body["metadata"]["name"] == "tenant-operator"
    assert body["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "to-tenant-namespace"}
    assert body["subjects"] == [SETTINGS.subject]


def test_the_shared_namespace_gets_the_shared_role_labelled_or_not():
    kube = Recorder()
    Granter(kube, SETTINGS).see(namespace("tenancy-shared"))
    assert kube.created[0][1]["roleRef"]["name"] == "to-shared-namespace"


@pytest.mark.parametrize("seen", [
    namespace("kube-system"),
    namespace("default", {"tenancy.dev/tenant": "default"}),
    namespace("tenant-acme", {"tenancy.dev/tenant": "acme"}),  # not labelled as the operator's
    namespace("tenant-acme", {"app.kubernetes.io/managed-by": "tenant-operator"}),  # no tenant
    namespace("kube-system", {"app.kubernetes.io/managed-by": "tenant-operator", "tenancy.dev/tenant": "acme"}),
    namespace("tenant-acme", {"app.kubernetes.io/managed-by": "tenant-operator", "tenancy.dev/tenant": "acme"},
              deleting=True),
], ids=["unlabelled", "tenant-label-only", "not-managed", "no-tenant", "name-not-the-tenants", "terminating"])
def test_namespaces_the_operator_does_not_manage_get_nothing(seen):
    kube = Recorder()
    assert not Granter(kube, SETTINGS).see(seen)
    assert kube.created == []


def test_a_namespace_is_bound_once_and_again_after_a_resync():
    kube = Recorder()
    granter = Granter(kube, SETTINGS)
    for _ in range(3):
        granter.see(tenant_namespace("acme"))
    assert len(kube.created) == 1
    kube.existing.clear()  # someone deleted the binding
    assert granter.resync([tenant_namespace("acme"), namespace("kube-system")]) == 1
    assert len(kube.created) == 2


def test_an_existing_binding_is_left_alone():
    kube = Recorder(existing={"tenant-acme"})
    assert not Granter(kube, SETTINGS).see(tenant_namespace("acme"))


def test_other_api_errors_are_raised_for_the_loop_to_retry():
    class Refusing:
        def create(self, path, body):
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        Granter(Refusing(), SETTINGS).see(tenant_namespace("acme"))


def test_settings_come_from_the_environment_and_refuse_what_is_not_a_service_account():
    settings = GrantSettings.from_environment({
        "TENANT_OPERATOR_GRANT_SUBJECT": "system:serviceaccount:ops:tenant-operator",
        "TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE": "r-tenant", "TENANT_OPERATOR_SHARED_NAMESPACE": "apps"})
    assert settings.subject == {"kind": "ServiceAccount", "name": "tenant-operator", "namespace": "ops"}
    assert (settings.tenant_role, settings.shared_role, settings.shared_namespace) == ("r-tenant", "r-tenant", "apps")
    with pytest.raises(SystemExit, match="GRANT_SUBJECT"):
        GrantSettings.from_environment({"TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE": "r"})
    with pytest.raises(SystemExit, match="ServiceAccount"):
        GrantSettings.from_environment({"TENANT_OPERATOR_GRANT_SUBJECT": "alice",
                                        "TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE": "r"})


def test_the_loop_outlives_a_failing_api_server():
    calls = []

    class Down:
        def request(self, *args, **kwargs):
            calls.append(args)
            raise ConnectionError("refused")

    sleeps = []
    original = grants.time.sleep
    grants.time.sleep = sleeps.append
    try:
        grants.run(Down(), SETTINGS, stop=lambda: len(calls) >= 4)
    finally:
        grants.time.sleep = original
    assert sleeps == [1, 2, 4, 8]
