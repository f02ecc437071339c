"""DatabaseServer: one PostgreSQL server of the pool the operator places tenants on.

A server is reached through an admin connection held in a Secret in the
operator's own namespace (as a DatabaseSchema's migrations ConfigMap is), and
named to tenants' workloads by its endpoint. A TenantPlan chooses servers per
tier by label (`spec.database.servers`); a Tenant may pin one
(`spec.database.server`). The operator's single DATABASE_URL of old is the
server named `default`: the operator creates that object itself when it is
missing, and it alone may leave `adminSecretRef` out (a rule in the CRD).

The status is the operator's account of the server: whether it answers, its
version, how many tenants it holds and which, and how a drain progresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tenant_operator.api.fields import (
    NamespaceName,
    SecretName,
    SpecModel,
    StatusModel,
    Tier,
    plain,
    unique,
)
from tenant_operator.api.tenant import Condition

DEFAULT_SERVER = "default"
"""The server that stands for the operator's DATABASE_URL; what a status without a server means."""
DRAINING = "Draining"
"""Condition type: True while tenants are being moved off the server (spec.drain)."""
DEFAULT_ADMIN_KEY = "uri"
"""CloudNativePG's `<cluster>-superuser` Secret holds a full DSN under this key."""
DEFAULT_MAX_TENANTS = 1000
MAX_MAX_TENANTS = 100_000
MAX_LISTED_TENANTS = 50
"""Tenant names listed in the status (placed, moving): enough to see, bounded to keep the object small."""


class AdminSecretRef(SpecModel):
    """A Secret holding an admin connection to the server: a libpq URL (postgresql://user:password@host:5432/postgres) or key=value DSN.

    The role needs CREATEROLE and CREATEDB (or superuser). The Secret must be in the
    operator's namespace, the only one where the operator may read Secrets.
    """  # noqa: E501 - the CRD description

    namespace: NamespaceName = Field(description="Namespace of the Secret: the operator's own.")
    name: SecretName = Field(description="Secret name.")
    key: str = Field(
        default=DEFAULT_ADMIN_KEY, min_length=1, max_length=253,
        description="Key of the DSN in the Secret; uri fits CloudNativePG's <cluster>-superuser Secret.")


class Endpoint(SpecModel):
    """Where tenants' workloads reach the server: written into each tenant's Secret."""

    host: str = Field(min_length=1, max_length=253, description="Host name or address.")
    port: int = Field(default=5432, ge=1, le=65535, description="Port.")


class DatabaseServerSpec(SpecModel):
    """One PostgreSQL server tenants may be placed on."""

    admin_secret_ref: AdminSecretRef | None = Field(
        default=None,
        description="The admin connection. Required, except on the server named default, which without it "
                    "stands for the operator's own DATABASE_URL.")
    endpoint: Endpoint | None = Field(
        default=None,
        description="Host and port written into tenants' Secrets, when their workloads reach the server by another "
                    "name than the operator does. Absent: the host and port of the admin connection.")
    tiers: Annotated[list[Tier], AfterValidator(unique)] = Field(
        default=[Tier.SHARED, Tier.ISOLATED],
        min_length=1,
        max_length=len(Tier),
        json_schema_extra={"uniqueItems": True},
        description="Tiers the server takes tenants of: shared (schemas in its shared database), isolated "
                    "(a database each).",
    )
    max_tenants: int = Field(
        default=DEFAULT_MAX_TENANTS, ge=1, le=MAX_MAX_TENANTS,
        description="Tenants the server holds at most; a full server gets no new ones. Each tenant adds a schema or "
                    "a database to the server's catalog, and around 2000 schemas per server is where "
                    "schema-per-tenant setups are reported to run into trouble: raise it with care.")
    cordoned: bool = Field(
        default=False, description="No new tenants are placed on the server; those on it stay.")
    drain: bool = Field(
        default=False,
        description="Move every tenant away, to other servers that serve its tier; a draining server gets no "
                    "new tenants.")


class DrainStatus(StatusModel):
    """How a drain progresses."""

    remaining: int = Field(default=0, ge=0, description="Tenants still on the server.")
    moving: list[str] = Field(default=[], max_length=MAX_LISTED_TENANTS,
                              description=f"Tenants moving away now (at most {MAX_LISTED_TENANTS} listed).")
    moved: int = Field(default=0, ge=0, description="Tenants moved away since the drain began.")


class DatabaseServerStatus(StatusModel):
    """The server as the operator last saw it, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last looked at.")
    conditions: list[Condition] = Field(
        default=[], description="Ready (the operator reaches the server as admin) and Draining.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    version: str | None = Field(default=None, max_length=256, description="The server's server_version.")
    wal_level: str | None = Field(default=None, max_length=64, description="The server's wal_level.")
    tenants: int | None = Field(default=None, ge=0, description="Tenants placed on the server.")
    free: int | None = Field(default=None, ge=0, description="maxTenants minus tenants, never below 0.")
    placed: list[str] = Field(
        default=[], max_length=MAX_LISTED_TENANTS,
        description=f"Names of the tenants on the server, sorted (at most {MAX_LISTED_TENANTS} listed).")
    draining: DrainStatus | None = Field(default=None, description="How the drain progresses, while spec.drain.")


def free_places(max_tenants: int, tenants: int) -> int:
    """status.free: the places left, never below 0 (maxTenants may be lowered under the count)."""
    return max(0, max_tenants - tenants)


class DatabaseServer(BaseModel):
    """A DatabaseServer object as the operator sees it: typed, read-only, made once from a watch body."""

    model_config = ConfigDict(frozen=True)

    name: str
    generation: int = 0
    finalizers: tuple[str, ...] = ()
    labels: Mapping[str, str] = {}
    deletion_timestamp: str | None = None
    resource_version: str | None = None
    spec: DatabaseServerSpec
    status: DatabaseServerStatus = DatabaseServerStatus()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DatabaseServer:
        metadata = body.get("metadata") or {}
        return cls(
            name=metadata["name"],
            generation=metadata.get("generation") or 0,
            finalizers=tuple(metadata.get("finalizers") or ()),
            labels=dict(metadata.get("labels") or {}),
            deletion_timestamp=metadata.get("deletionTimestamp"),
            resource_version=metadata.get("resourceVersion"),
            spec=plain(body.get("spec") or {}),
            status=plain(body.get("status") or {}),
        )

    @property
    def deleting(self) -> bool:
        return bool(self.deletion_timestamp)
