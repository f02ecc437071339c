"""The Kubernetes kinds the operator reads and writes, and references to objects of them.

Pure data (REST paths are derived, never requested here), so that the rendering
of manifests and the I/O that applies them name objects the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tenant_operator.api.names import API_VERSION


@dataclasses.dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def collection_path(self, namespace: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{quote(namespace)}/{self.plural}"
        return f"{base}/{self.plural}"

    def path(self, name: str, namespace: str | None = None) -> str:
        return f"{self.collection_path(namespace)}/{quote(name)}"


KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "Namespace", "namespaces", False),
        Kind("v1", "ResourceQuota", "resourcequotas", True),
        Kind("v1", "LimitRange", "limitranges", True),
        Kind("v1", "Secret", "secrets", True),
        Kind("v1", "ConfigMap", "configmaps", True),
        Kind("v1", "Service", "services", True),
        Kind("v1", "ServiceAccount", "serviceaccounts", True),
        Kind("apps/v1", "Deployment", "deployments", True),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
        Kind("coordination.k8s.io/v1", "Lease", "leases", True),
        Kind(API_VERSION, "Tenant", "tenants", False),
        Kind(API_VERSION, "TenantPlan", "tenantplans", False),
        Kind(API_VERSION, "DatabaseSchema", "databaseschemas", False),
        Kind(API_VERSION, "DatabaseServer", "databaseservers", False),
    )
}
TENANT = KINDS[(API_VERSION, "Tenant")]
TENANT_PLAN = KINDS[(API_VERSION, "TenantPlan")]
DATABASE_SCHEMA = KINDS[(API_VERSION, "DatabaseSchema")]
DATABASE_SERVER = KINDS[(API_VERSION, "DatabaseServer")]


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    return KINDS[(manifest["apiVersion"], manifest["kind"])]


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    kind: Kind
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> ObjectRef:
        meta = manifest["metadata"]
        return cls(kind_of(manifest), meta["name"], meta.get("namespace"))

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.kind} {where}{self.name}"
