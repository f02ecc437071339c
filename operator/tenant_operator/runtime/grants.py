"""`tenant-operator grants`: binds the operator's identity in each namespace it manages.

RBAC cannot say "in the namespaces I will create": whoever may create a RoleBinding in
a namespace that does not exist yet may create one in kube-system. So that one right
lives here, in a process of its own with a ServiceAccount of its own, and not in the
operator, which holds database admin credentials and talks to tenant code. This
process holds nothing else: it reads namespaces, and creates in the ones the operator
manages a RoleBinding of the operator's ServiceAccount to the chart's ClusterRole for
that kind of namespace. RBAC limits what it may bind (`bind` on those two ClusterRoles
by name); the chart's ValidatingAdmissionPolicy limits where (namespaces labelled as the
operator's) and to whom (the operator's ServiceAccount).

It watches namespaces; every `resync_seconds` it lists them all again and creates
what is missing (a create of an existing binding is a 409, nothing more): a binding
someone deleted comes back then, or at once when this Deployment restarts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable

from kubernetes.client.exceptions import ApiException

from tenant_operator.api import names
from tenant_operator.api.kinds import KINDS
from tenant_operator.infra.kube import Kube

log = logging.getLogger(__name__)

BINDING_NAME = "tenant-operator"
"""The RoleBinding of the operator's identity in each namespace it manages."""
NAMESPACE = KINDS[("v1", "Namespace")]
ROLE_BINDING = KINDS[("rbac.authorization.k8s.io/v1", "RoleBinding")]
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ENV = "TENANT_OPERATOR_"
WATCH_SECONDS = 300
BACKOFF_LONGEST = 30.0


@dataclasses.dataclass(frozen=True)
class GrantSettings:
    subject: dict
    """The operator's ServiceAccount, as a RoleBinding subject."""
    tenant_role: str
    shared_role: str
    shared_namespace: str
    resync_seconds: float = 600.0

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> GrantSettings:
        environ = dict(os.environ if environ is None else environ)
        missing = [key for key in ("GRANT_SUBJECT", "NAMESPACE_CLUSTER_ROLE") if not environ.get(ENV + key)]
        if missing:
            raise SystemExit(f"{', '.join(ENV + key for key in missing)} not set: the grants process binds the "
                             "operator's ServiceAccount (system:serviceaccount:<namespace>:<name>) to a ClusterRole")
        tenant_role = environ[ENV + "NAMESPACE_CLUSTER_ROLE"]
        return cls(
            subject=subject_of(environ[ENV + "GRANT_SUBJECT"]),
            tenant_role=tenant_role,
            shared_role=environ.get(ENV + "SHARED_NAMESPACE_CLUSTER_ROLE") or tenant_role,
            shared_namespace=environ.get(ENV + "SHARED_NAMESPACE") or "tenancy-shared",
            resync_seconds=float(environ.get(ENV + "GRANTS_RESYNC_SECONDS") or 600),
        )


def subject_of(username: str) -> dict:
    if not username.startswith(SERVICE_ACCOUNT_PREFIX) or username.count(":") != 3:
        raise SystemExit(f"{ENV}GRANT_SUBJECT must name a ServiceAccount as "
                         f"system:serviceaccount:<namespace>:<name>, not {username!r}")
    namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def role_for(namespace: dict, settings: GrantSettings) -> str | None:
    """Which ClusterRole the operator holds in `namespace`; None where it holds nothing."""
    meta = namespace["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    if meta["name"] == settings.shared_namespace:
        return settings.shared_role
    labels = meta.get("labels") or {}
    tenant = labels.get(names.LABEL_TENANT)
    if labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and tenant \
            and meta["name"] == names.tenant_namespace(tenant):
        return settings.tenant_role
    return None


def binding(namespace: str, role: str, settings: GrantSettings) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": BINDING_NAME, "namespace": namespace,
                     "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [settings.subject],
    }


class Granter:
    """Creates the operator's binding in each managed namespace, once per namespace it sees."""

    def __init__(self, kube: Kube, settings: GrantSettings):
        self.kube = kube
        self.settings = settings
        self.granted: set[str] = set()

    def see(self, namespace: dict) -> bool:
        """True when this created the binding."""
        name = namespace["metadata"]["name"]
        role = role_for(namespace, self.settings)
        if role is None:
            self.granted.discard(name)
            return False
        if name in self.granted:
            return False
        try:
            self.kube.create(ROLE_BINDING.collection_path(name), binding(name, role, self.settings))
        except ApiException as error:
            if error.status != 409:
                raise
            self.granted.add(name)
            return False
        self.granted.add(name)
        log.info("bound %s to ClusterRole %s in namespace %s", self.settings.subject["name"], role, name)
        return True

    def resync(self, namespaces: Iterable[dict]) -> int:
        """Every namespace again, bindings deleted since included; how many were created."""
        self.granted.clear()
        return sum(self.see(namespace) for namespace in namespaces)


def run(kube: Kube, settings: GrantSettings, stop=lambda: False) -> None:
    """List, watch, and list again every resync; trouble is retried with backoff, never a crash."""
    granter = Granter(kube, settings)
    pause = 1.0
    while not stop():
        try:
            listed = kube.request("GET", NAMESPACE.collection_path())
            created = granter.resync(listed["items"])
            log.info("%d namespaces seen, %d bindings created", len(listed["items"]), created)
            _watch(kube, granter, listed["metadata"]["resourceVersion"], time.monotonic() + settings.resync_seconds,
                   stop)
            pause = 1.0
        except Exception as error:  # noqa: BLE001 - the process must outlive any one request
            log.warning("grants: %s; again in %.0fs", error, pause)
            time.sleep(pause)
            pause = min(pause * 2, BACKOFF_LONGEST)


def _watch(kube: Kube, granter: Granter, resource_version: str, until: float, stop) -> None:
    from kubernetes import client, watch

    core = client.CoreV1Api(kube.api_client)
    while time.monotonic() < until and not stop():
        stream = watch.Watch().stream(core.list_namespace, resource_version=resource_version,
                                      timeout_seconds=int(min(WATCH_SECONDS, max(1, until - time.monotonic()))),
                                      allow_watch_bookmarks=True, _request_timeout=WATCH_SECONDS + 30)
        for event in stream:
            body = event["raw_object"]
            if event["type"] == "ERROR":
                return  # the resourceVersion is too old (410 Gone): list again
            resource_version = body["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                granter.see(body)
            elif event["type"] == "DELETED":
                granter.granted.discard(body["metadata"]["name"])
