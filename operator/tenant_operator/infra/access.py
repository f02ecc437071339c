"""The operator's rights in the namespaces it manages: it creates the namespace, waits for its grant.

RBAC cannot say "in the namespaces I created": a ClusterRoleBinding holds in every
namespace, kube-system included. So the operator's namespaced rights (Secrets, quota,
workloads, RoleBindings, the namespace itself) live in a ClusterRole bound by a
RoleBinding in each namespace it manages. That binding is not the operator's to make:
whoever may create RoleBindings in a namespace that does not exist yet may create them
anywhere. The `grants` process (grants.py, a Deployment with an identity of its own)
makes it as soon as it sees the labelled namespace; the operator creates the namespace
(the one namespace write it holds cluster-wide) and asks the authorizer until the
grant is in force, usually within milliseconds.

With no ClusterRole configured (development, an admin identity) nothing is waited for.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from kubernetes.client.exceptions import ApiException

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.infra.kube import KubeAPI

log = logging.getLogger(__name__)

NAMESPACE = KINDS[("v1", "Namespace")]
GRANT_TIMEOUT_SECONDS = 5.0
"""How long one reconcile waits for a new namespace's grant before it reports AccessPending."""
GRANTS_DEPLOYMENT_HINT = "the chart's <release>-grants Deployment"


class AccessPending(Exception):
    """The operator's RoleBinding in a namespace is not in force (yet): nothing can be done there."""


@dataclasses.dataclass
class Access:
    """The ClusterRoles the operator holds in the namespaces it manages, and where it holds them."""
    tenant_role: str
    shared_role: str
    granted: set[str] = dataclasses.field(default_factory=set)
    """Namespaces where the authorizer has said yes; asked once per namespace and process."""

    @classmethod
    def from_settings(cls, settings) -> Access | None:
        if not settings.namespace_cluster_role:
            return None
        return cls(settings.namespace_cluster_role,
                   settings.shared_namespace_cluster_role or settings.namespace_cluster_role)

    def forget(self, namespace: str) -> None:
        """A request there was refused: the grant (or the namespace) is gone; ask again next time."""
        self.granted.discard(namespace)


def ensure_namespace(kube: KubeAPI, access: Access | None, manifest: dict, role: str | None = None,
                     known_absent: bool = False) -> bool:
    """The namespace of `manifest` exists and the operator may act in it; True if this created it.

    Without `access` the namespace is left to the caller's server-side apply. With it, a
    missing namespace is created (apply would be a patch, authorised only where the
    operator is bound already), then its grant is awaited.
    """
    if access is None:
        return False
    name = manifest["metadata"]["name"]
    if name in access.granted:
        return False
    created = False
    if known_absent or kube.read(ObjectRef(NAMESPACE, name)) is None:
        created = _create(kube, NAMESPACE.collection_path(), manifest)
    wait_until_granted(kube, access, name, role or access.tenant_role)
    return created


def wait_until_granted(kube: KubeAPI, access: Access, namespace: str, role: str,
                       timeout: float = GRANT_TIMEOUT_SECONDS) -> None:
    """Ask the authorizer (SelfSubjectAccessReview) until the operator may patch `namespace`."""
    if namespace in access.granted:
        return
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": namespace, "verb": "patch", "group": "",
                                              "resource": "namespaces", "name": namespace}}}
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        answer = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", [], review)
        if (answer.get("status") or {}).get("allowed"):
            access.granted.add(namespace)
            return
        if time.monotonic() > deadline:
            raise AccessPending(
                f"the operator holds no rights in namespace {namespace} after {timeout:.0f}s: its RoleBinding "
                f"tenant-operator to ClusterRole {role} is missing or wrong there; it is made by "
                f"{GRANTS_DEPLOYMENT_HINT} (is it running?); a wrong binding must be deleted for it to be made again")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _create(kube: KubeAPI, collection: str, manifest: dict) -> bool:
    """POST; False when it exists already."""
    try:
        kube.create(collection, manifest)
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True
