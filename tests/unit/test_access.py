"""The operator creates a namespace it manages, then waits for its grant there before acting."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from tenant_operator.api.settings import Settings
from tenant_operator.infra import access
from tenant_operator.infra.access import Access, AccessPending

MANIFEST = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-acme"}}


class Authorizer:
    """Namespaces that exist, and the answers the authorizer gives, in turn."""

    def __init__(self, answers, existing=()):
        self.answers = list(answers)
        self.existing = set(existing)
        self.requests = []

    def read(self, ref):
        self.requests.append(("get", ref.name))
        return {"metadata": {"name": ref.name}} if ref.name in self.existing else None

    def create(self, path, body):
        self.requests.append(("create", body["metadata"]["name"]))
        if body["metadata"]["name"] in self.existing:
            raise ApiException(status=409)
        self.existing.add(body["metadata"]["name"])

    def request(self, method, path, query, body):
        attributes = body["spec"]["resourceAttributes"]
        self.requests.append(("review", attributes["verb"], attributes["namespace"]))
        allowed = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return {"status": {"allowed": allowed}}


def test_no_roles_configured_means_no_waiting():
    assert Access.from_settings(Settings(database_url="x")) is None
    assert access.ensure_namespace(Authorizer([False]), None, MANIFEST) is False


def test_a_new_namespace_is_created_then_its_grant_awaited_once_per_process():
    kube = Authorizer([False, False, True])
    granted = Access("t-tenant", "t-shared")
    assert access.ensure_namespace(kube, granted, MANIFEST)
    assert kube.requests[:2] == [("get", "tenant-acme"), ("create", "tenant-acme")]
    assert kube.requests[2:] == [("review", "patch", "tenant-acme")] * 3
    kube.requests.clear()
    assert not access.ensure_namespace(kube, granted, MANIFEST)
    assert kube.requests == []  # an unchanged tenant costs no request for its access


def test_a_grant_that_does_not_come_is_access_pending_with_what_to_look_at():
    granted = Access("t-tenant", "t-shared")
    with pytest.raises(AccessPending, match="t-tenant.*grants Deployment"):
        access.wait_until_granted(Authorizer([False]), granted, "tenant-acme", "t-tenant", timeout=0.05)
    assert "tenant-acme" not in granted.granted


def test_a_refused_request_makes_the_operator_ask_again():
    granted = Access("t-tenant", "t-shared", granted={"tenant-acme"})
    granted.forget("tenant-acme")
    kube = Authorizer([True], existing={"tenant-acme"})
    access.ensure_namespace(kube, granted, MANIFEST)
    assert ("review", "patch", "tenant-acme") in kube.requests
    assert ("create", "tenant-acme") not in kube.requests
