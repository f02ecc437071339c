"""Tenant: spec, status, and the typed, read-only view of one Tenant object the reconcile works on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tenant_operator.api.fields import (
    CONDITION_TYPE_PATTERN,
    MAX_OWNERS,
    REASON_PATTERN,
    DisplayName,
    NamespaceName,
    OwnerKind,
    Phase,
    PlanName,
    QuotaMap,
    ReclaimPolicy,
    ServerName,
    SpecModel,
    StatusModel,
    Tier,
    Timestamp,
    cel,
    plain,
    validations,
)
from tenant_operator.api.limits import DatabaseLimits

# --- Tenant -------------------------------------------------------------------


OWNER_NAMESPACE_REQUIRED = "an owner of kind ServiceAccount needs the namespace the service account lives in"
OWNER_NAMESPACE_FORBIDDEN = "only an owner of kind ServiceAccount has a namespace; users and groups are cluster-wide"


class Owner(SpecModel):
    """A subject that administers the tenant namespace."""

    # Two rules, each pointing at .namespace with the reason Kubernetes uses for
    # its own fields: "owners[0].namespace: Required value: ..." / "Forbidden: ...".
    model_config = ConfigDict(
        json_schema_extra=validations(
            {
                **cel("self.kind != 'ServiceAccount' || has(self.namespace)", OWNER_NAMESPACE_REQUIRED),
                "fieldPath": ".namespace",
                "reason": "FieldValueRequired",
            },
            {
                **cel("self.kind == 'ServiceAccount' || !has(self.namespace)", OWNER_NAMESPACE_FORBIDDEN),
                "fieldPath": ".namespace",
                "reason": "FieldValueForbidden",
            },
        )
    )

    kind: OwnerKind = Field(description="User, Group or ServiceAccount.")
    name: str = Field(min_length=1, max_length=253, description="Name of the user, group or service account.")
    namespace: NamespaceName | None = Field(
        default=None, description="Namespace of the service account; only for kind ServiceAccount."
    )

    @model_validator(mode="after")
    def _namespace_iff_service_account(self) -> Owner:
        if self.kind == OwnerKind.SERVICE_ACCOUNT and self.namespace is None:
            raise ValueError(OWNER_NAMESPACE_REQUIRED)
        if self.kind != OwnerKind.SERVICE_ACCOUNT and self.namespace is not None:
            raise ValueError(OWNER_NAMESPACE_FORBIDDEN)
        return self


class DatabaseSpec(SpecModel):
    """The tenant's PostgreSQL data."""

    reclaim_policy: ReclaimPolicy = Field(
        default=ReclaimPolicy.RETAIN,
        description="On deletion: Retain keeps the data, Delete drops it, Snapshot dumps it, then drops it.",
    )
    server: ServerName | None = Field(
        default=None,
        description="Pin the data to this DatabaseServer; changing it moves the tenant there. Absent: the operator "
                    "places the tenant on a server its plan selects for its tier.")


class TenantSpec(SpecModel):
    """The desired state of a tenant."""

    display_name: DisplayName | None = None
    plan: PlanName = Field(description="Name of the TenantPlan the tenant is on.")
    tier: Tier = Field(default=Tier.SHARED,
                       description="Tier the tenant should live in; changing it migrates the tenant.")
    owners: list[Owner] = Field(
        default=[], max_length=MAX_OWNERS, description="Subjects bound to the admin role in the tenant namespace."
    )
    quota_overrides: QuotaMap = Field(default={}, description="Per-tenant entries replacing the plan's quota.")
    database_overrides: DatabaseLimits = Field(
        default=DatabaseLimits(), description="Per-tenant values replacing the plan's database limits.")
    database: DatabaseSpec = Field(default=DatabaseSpec(), description="The tenant's database.")
    suspended: bool = Field(
        default=False,
        description="Scale the tenant's workloads to zero and block its database login, keeping all data."
    )
    network_isolation: bool = Field(
        default=True, description="Refuse traffic from other tenants' namespaces to the tenant namespace."
    )


# --- Tenant status ------------------------------------------------------------


class Condition(StatusModel):
    """One aspect of the object's state, Kubernetes style."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN, description="Type of condition, such as Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1, max_length=1024, pattern=REASON_PATTERN, description="CamelCase reason for the last transition."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition was set for.")
    last_transition_time: Timestamp = Field(description="When the status last changed.")


class DatabaseStatus(StatusModel):
    """Where the tenant's data lives; the credentials are in the Secret."""

    server: str | None = Field(default=None, description="The DatabaseServer the data lives on.")
    host: str | None = Field(default=None, description="PostgreSQL host.")
    port: int | None = Field(default=None, ge=1, le=65535, description="PostgreSQL port.")
    database: str | None = Field(default=None, description="Database name.")
    schema_name: str | None = Field(default=None, alias="schema", description="Schema name.")
    secret_name: str | None = Field(default=None, description="Secret in the tenant namespace holding the credentials.")
    schema_version: int | None = Field(default=None, description="Version of the application's schema applied.")
    schema_failed_version: int | None = Field(
        default=None, description="A version that failed here; retried once the DatabaseSchema changes.")
    schema_failed_generation: int | None = Field(
        default=None, description="The DatabaseSchema's generation when that version failed.")


class QuotaUsage(StatusModel):
    """One resource of the tenant's ResourceQuota, as the quota controller counts it."""

    used: str | None = Field(default=None, max_length=64, description="What the namespace uses now.")
    hard: str | None = Field(default=None, max_length=64, description="The quota's limit.")


class UsageStatus(StatusModel):
    """What the tenant uses, measured at each resync (one catalog query per server for all tenants)."""

    database_bytes: int | None = Field(
        default=None, ge=0, description="Bytes of its schema's tables with their indexes and TOAST (shared tier), "
                                        "or of its database (isolated tier).")
    connections: int | None = Field(default=None, ge=0, description="Sessions its role had open.")
    max_size_bytes: int | None = Field(default=None, ge=0, description="Its maxSize in bytes, if it has one.")
    max_size_share: str | None = Field(default=None, max_length=16,
                                      description="databaseBytes as a share of maxSizeBytes, such as 42%.")
    quota: dict[str, QuotaUsage] = Field(default={}, max_length=64,
                                         description="used and hard of its ResourceQuota, per resource.")


class TableProgress(StatusModel):
    """Copy progress of one table during a migration."""

    name: str = Field(description="Table name.")
    rows: int = Field(ge=0, description="Rows in the source table.")
    copied: int = Field(default=0, ge=0, description="Rows copied so far.")
    checksum: str | None = Field(default=None, description="Checksum of the source table, once verified.")


class ReplicationStatus(StatusModel):
    """An online move's logical replication, while it exists (dropped inside the freeze, or on rollback)."""

    slot: str = Field(max_length=63, description="The replication slot (and publication and subscription) name.")
    tables: int = Field(default=0, ge=0, description="Tables the subscription replicates.")
    tables_synchronised: int = Field(default=0, ge=0, description="Tables whose initial copy is done.")
    lag_bytes: int | None = Field(default=None, description="WAL the target has not confirmed yet, in bytes.")
    retained_wal_bytes: int | None = Field(default=None, description="WAL the slot keeps on the source, in bytes.")


class MigrationStatus(StatusModel):
    """A tier migration in progress, recorded so that it resumes after a restart."""

    source: Tier = Field(alias="from", description="Tier the tenant is leaving.")
    target: Tier = Field(alias="to", description="Tier the tenant is moving to.")
    from_server: str | None = Field(
        default=None, description="DatabaseServer the tenant is leaving (absent: default, as older records say).")
    to_server: str | None = Field(
        default=None, description="DatabaseServer the tenant is moving to (absent: default, as older records say).")
    step: str = Field(max_length=63, description="Current step of the migration.")
    started: Timestamp = Field(description="When the migration started.")
    tables: list[TableProgress] = Field(default=[], description="Per-table copy progress.")
    rows_copied: int = Field(default=0, ge=0, description="Rows copied so far, all tables.")
    freeze_started: Timestamp | None = Field(default=None, description="When writes to the source were frozen.")
    freeze_started_at: float | None = Field(default=None, ge=0,
                                            description="The same, in seconds since the epoch, to the millisecond.")
    freeze_seconds: float | None = Field(default=None, ge=0, description="How long writes were frozen, once switched.")
    quarantine: str | None = Field(default=None, max_length=63,
                                   description="Name the source schema or database was renamed to at the switch.")
    unfrozen: bool | None = Field(default=None,
                                  description="The switch gave the tenant its login back (on the target).")
    retired: bool | None = Field(default=None, description="The quarantined source was announced.")
    message: str | None = Field(default=None, description="Details of the current step.")
    mode: Literal["online", "offline"] | None = Field(
        default=None, description="online: the rows replicate while the tenant writes, the freeze covers the tail; "
                                  "offline: the copy runs inside the freeze.")
    mode_reason: str | None = Field(default=None, max_length=2048, description="Why the move runs in its mode.")
    replication: ReplicationStatus | None = Field(default=None, description="The online move's replication.")
    catch_up_lsn: str | None = Field(default=None, max_length=32,
                                     description="The source's WAL position after the freeze, the target must reach.")


class TenantStatus(StatusModel):
    """The observed state of a tenant, written only by the operator."""

    phase: Phase = Field(default=Phase.PENDING, description="Summary of the tenant's state.")
    tier: Tier | None = Field(default=None,
                              description="Tier the tenant lives in now; differs from spec during a migration.")
    namespace: str | None = Field(default=None, description="The tenant namespace.")
    database: DatabaseStatus | None = Field(default=None, description="Where the tenant's data lives.")
    conditions: list[Condition] = Field(
        default=[],
        description="Ready, NamespaceReady, QuotaReady, DatabaseReady, WorkloadsReady and Migrating.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    migration: MigrationStatus | None = Field(default=None, description="The tier migration in progress, if any.")
    usage: UsageStatus | None = Field(default=None, description="What the tenant uses, as of the last resync.")

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --- The object ---------------------------------------------------------------


class Tenant(BaseModel):
    """One Tenant object as the reconcile sees it: typed, read-only, made once from a watch body.

    Spec and status are parsed; of the metadata it keeps what writes need (the
    resourceVersion a fenced write is made over, the finalizers, whether it is
    being deleted, the annotations a person uses to ask for something). Raw
    bodies stay at the Kubernetes edge (the controller's caches). A write that
    changes the object gives a new view (`with_status`, `with_finalizers`).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    generation: int = 0
    uid: str | None = None
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()
    deletion_timestamp: str | None = None
    annotations: Mapping[str, str] = {}
    spec: TenantSpec
    status: TenantStatus = TenantStatus()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Tenant:
        metadata = body.get("metadata") or {}
        return cls(
            name=metadata["name"],
            generation=metadata.get("generation") or 0,
            uid=metadata.get("uid"),
            resource_version=metadata.get("resourceVersion"),
            finalizers=tuple(metadata.get("finalizers") or ()),
            deletion_timestamp=metadata.get("deletionTimestamp"),
            annotations=dict(metadata.get("annotations") or {}),
            spec=plain(body.get("spec") or {}),
            status=plain(body.get("status") or {}),
        )

    @property
    def deleting(self) -> bool:
        return bool(self.deletion_timestamp)

    @property
    def reconciled(self) -> bool:
        """Reconciled at least once: the status says which generation it saw."""
        return self.status.observed_generation is not None

    def status_json(self) -> dict[str, Any]:
        """The status as the API server holds it (JSON names, nothing the body did not have)."""
        return self.status.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def migration_record(self) -> dict[str, Any]:
        """A copy of status.migration to work on ({} when no migration runs)."""
        return self.status_json().get("migration") or {}

    def with_status(self, status: Mapping[str, Any], resource_version: str | None) -> Tenant:
        """The view after our status write (the resourceVersion the API server answered with)."""
        return self.model_copy(update={"status": TenantStatus.model_validate(plain(status)),
                                       "resource_version": resource_version or self.resource_version})

    def with_finalizers(self, finalizers: tuple[str, ...], resource_version: str | None) -> Tenant:
        return self.model_copy(update={"finalizers": finalizers,
                                       "resource_version": resource_version or self.resource_version})
