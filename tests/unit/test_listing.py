"""Passes over every tenant read namespaces from one LIST; the rest, and changed tenants, read live."""

from __future__ import annotations

import asyncio

import pytest

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.api.settings import Settings
from tenant_operator.infra.kube import Kube
from tenant_operator.infra.listing import LISTED, SELECTOR, ListedKube
from tenant_operator.reconcile.context import Outcome
from tenant_operator.runtime import controller as controller_module
from tenant_operator.runtime.controller import Controller

NAMESPACE = KINDS[("v1", "Namespace")]
QUOTA = KINDS[("v1", "ResourceQuota")]
SECRET = KINDS[("v1", "Secret")]
CONFIG_MAP = KINDS[("v1", "ConfigMap")]
ROUTES = ObjectRef(CONFIG_MAP, "tenant-routes", "tenancy-shared")


class RecordingKube:
    """Stands in for the API server: objects by (kind, namespace, name), and every request made."""

    def __init__(self, objects: dict[ObjectRef, dict]):
        self.objects = objects
        self.requests: list[tuple] = []

    def list_pages(self, kind, label_selector, page_size):
        self.requests.append(("list", kind.kind, label_selector))
        return [{**body, "metadata": {**body["metadata"], "managedFields": [{"manager": "x"}]}}
                for ref, body in self.objects.items() if ref.kind == kind]

    def read(self, ref):
        self.requests.append(("get", str(ref)))
        return self.objects.get(ref)

    def apply(self, manifest, force=True):
        self.requests.append(("apply", str(ObjectRef.of(manifest))))
        self.objects[ObjectRef.of(manifest)] = dict(manifest)
        return dict(manifest)

    def merge_patch(self, ref, patch):
        self.requests.append(("patch", str(ref)))
        self.objects[ref] = {**self.objects[ref], "data": {**self.objects[ref]["data"], **patch["data"]}}
        return self.objects[ref]

    def delete(self, ref, propagation="Background"):
        self.requests.append(("delete", str(ref)))
        return self.objects.pop(ref, None) is not None


def body(kind, name, namespace=None, **fields) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta, **fields}


def cluster() -> RecordingKube:
    return RecordingKube({
        ObjectRef(NAMESPACE, "tenant-acme"): body(NAMESPACE, "tenant-acme"),
        ObjectRef(QUOTA, "tenant-quota", "tenant-acme"): body(QUOTA, "tenant-quota", "tenant-acme",
                                                              spec={"hard": {"pods": "10"}}),
        ObjectRef(SECRET, "tenant-db", "tenant-acme"): body(SECRET, "tenant-db", "tenant-acme"),
        ROUTES: body(CONFIG_MAP, "tenant-routes", "tenancy-shared", data={"acme": "a"}),
    })


def test_namespaces_are_listed_once_by_label_and_read_from_memory_without_managed_fields():
    kube = cluster()
    listed = ListedKube.take(kube)
    assert [r for r in kube.requests if r[0] == "list"] == [("list", "Namespace", SELECTOR)]
    kube.requests.clear()
    namespace = listed.read(ObjectRef(NAMESPACE, "tenant-acme"))
    assert namespace["metadata"]["name"] == "tenant-acme" and "managedFields" not in namespace["metadata"]
    assert listed.read(ObjectRef(NAMESPACE, "tenant-other")) is None  # absent: applied afresh
    assert kube.requests == []


def test_namespaced_kinds_are_never_listed_across_the_cluster_but_read_live():
    """The operator's identity holds its namespaced rights in its own namespaces only."""
    kube = cluster()
    listed = ListedKube.take(kube)
    assert not [kind for kind in LISTED if kind.namespaced]
    kube.requests.clear()
    assert listed.read(ObjectRef(QUOTA, "tenant-quota", "tenant-acme"))["spec"] == {"hard": {"pods": "10"}}
    assert kube.requests == [("get", "ResourceQuota tenant-acme/tenant-quota")]


def test_secrets_are_never_listed_but_read_live():
    kube = cluster()
    listed = ListedKube.take(kube)
    assert all(kind != SECRET for kind in LISTED)
    assert listed.read(ObjectRef(SECRET, "tenant-db", "tenant-acme")) is not None
    assert kube.requests[-1] == ("get", "Secret tenant-acme/tenant-db")


def test_the_shared_routing_table_is_read_once_and_again_after_a_patch():
    kube = cluster()
    listed = ListedKube.take(kube, shared=frozenset([ROUTES]))
    for _ in range(3):
        assert listed.read(ROUTES)["data"] == {"acme": "a"}
    assert kube.requests.count(("get", str(ROUTES))) == 1
    listed.merge_patch(ROUTES, {"data": {"beta": "b"}})
    assert listed.read(ROUTES)["data"] == {"acme": "a", "beta": "b"}
    assert kube.requests.count(("get", str(ROUTES))) == 2


def test_writes_go_to_the_server_and_replace_or_drop_the_listed_entry():
    kube = cluster()
    listed = ListedKube.take(kube)
    ref = ObjectRef(QUOTA, "tenant-quota", "tenant-acme")
    listed.apply(body(QUOTA, "tenant-quota", "tenant-acme", spec={"hard": {"pods": "20"}}))
    assert kube.objects[ref]["spec"] == {"hard": {"pods": "20"}}
    assert listed.read(ref)["spec"] == {"hard": {"pods": "20"}}
    assert listed.delete(ref) is True
    assert listed.read(ref) is None and ref not in kube.objects


def test_list_pages_follows_continue_tokens():
    class Paged(Kube):
        def __init__(self):
            self.queries = []

        def request(self, method, path, query=(), body=None, **_):
            self.queries.append(dict(query))
            token = dict(query).get("continue")
            if token is None:
                return {"metadata": {"continue": "page2"}, "items": [{"metadata": {"name": "a"}}]}
            return {"metadata": {}, "items": [{"metadata": {"name": "b"}}]}

    kube = Paged()
    names = [item["metadata"]["name"] for item in kube.list_pages(QUOTA, SELECTOR, page_size=1)]
    assert names == ["a", "b"]
    assert kube.queries[0] == {"labelSelector": SELECTOR, "limit": "1"}
    assert kube.queries[1]["continue"] == "page2"


# --- which reconciles use a listing ------------------------------------------------------

def at_rest(name: str, generation: int = 1, **status) -> dict:
    return {"metadata": {"name": name, "generation": generation}, "spec": {"plan": "free"},
            "status": {"observedGeneration": 1, "tier": "shared", **status}}


def run_until_reconciled(controller: Controller, reconciled: dict, expected: int) -> None:
    async def scenario() -> None:
        controller.start()
        while len(reconciled) < expected:
            await asyncio.sleep(0.01)
        await controller.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


@pytest.fixture
def recording(monkeypatch):
    reconciled: dict[str, str] = {}

    def reconcile(ctx, tenant):
        reconciled[tenant.name] = "listed" if isinstance(ctx.kube, ListedKube) else "live"
        return Outcome()

    monkeypatch.setattr(controller_module, "reconcile", reconcile)
    monkeypatch.setattr(ListedKube, "take", classmethod(lambda cls, kube, shared=frozenset(): cls(kube, {}, shared)))
    return reconciled


def test_tenants_at_rest_first_seen_are_examined_from_a_listing_others_live(recording):
    one = Controller.create(kube=None, settings=Settings(database_url="postgresql://x@y/z", resync_seconds=3600))
    one.tenant_seen("ADDED", at_rest("calm"))
    one.tenant_seen("ADDED", {"metadata": {"name": "new", "generation": 1}, "spec": {"plan": "free"}})  # never reconciled
    one.tenant_seen("ADDED", at_rest("moving", migration={"from": "shared", "to": "isolated", "step": "copy",
                                                          "started": "2030-01-01T00:00:00Z"}))
    one.tenant_seen("ADDED", at_rest("edited", generation=2))
    one.tenant_seen("ADDED", {**at_rest("leaving"), "metadata": {"name": "leaving", "generation": 1,
                                                                  "deletionTimestamp": "2030-01-01T00:00:00Z"}})
    run_until_reconciled(one, recording, 5)
    assert recording == {"calm": "listed", "new": "live", "moving": "live", "edited": "live", "leaving": "live"}


def test_a_tenant_changed_while_queued_by_a_pass_is_reconciled_live(recording):
    one = Controller.create(kube=None, settings=Settings(database_url="postgresql://x@y/z", resync_seconds=3600))
    one.tenant_seen("ADDED", at_rest("calm"))
    one.tenant_seen("ADDED", at_rest("touched"))
    one.tenant_seen("MODIFIED", {**at_rest("touched"), "metadata": {"name": "touched", "generation": 1,
                                                                     "labels": {"team": "a"}}})
    run_until_reconciled(one, recording, 2)
    assert recording == {"calm": "listed", "touched": "live"}
