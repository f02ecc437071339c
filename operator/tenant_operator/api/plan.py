"""TenantPlan: quota, limits, allowed tiers and workloads per tier for the tenants on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from tenant_operator.api.fields import (
    DisplayName,
    LabelSelector,
    QuotaMap,
    ResourceMap,
    SchemaName,
    SpecModel,
    TemplateName,
    Tier,
    plain,
    unique,
)
from tenant_operator.api.limits import DatabaseLimits

# --- TenantPlan ---------------------------------------------------------------


class LimitsSpec(SpecModel):
    """LimitRange values for every container in the tenant namespace."""

    default: ResourceMap | None = Field(default=None, description="Default limits of a container that sets none.")
    default_request: ResourceMap | None = Field(
        default=None, description="Default requests of a container that sets none."
    )
    max: ResourceMap | None = Field(default=None, description="Largest limits a container may set.")
    min: ResourceMap | None = Field(default=None, description="Smallest requests a container may set.")


class ResourcesSpec(SpecModel):
    """Container resources of the tier's workloads."""

    requests: ResourceMap = Field(default={}, description="Container resource requests.")
    limits: ResourceMap = Field(default={}, description="Container resource limits.")


class WorkloadSpec(SpecModel):
    """The workloads rendered for a tier: which template, and its sizing."""

    template: TemplateName = Field(default="web", description="Name of the workload template the operator renders.")
    image: str = Field(
        default="ghcr.io/tenancy-dev/shared-app:0.1.0", min_length=1, max_length=512, description="Container image."
    )
    replicas: int = Field(default=1, ge=0, le=50, description="Number of replicas.")
    port: int = Field(default=8080, ge=1, le=65535, description="Container port the workload listens on.")
    resources: ResourcesSpec = Field(default=ResourcesSpec(), description="Container resource requests and limits.")


class TierWorkloads(SpecModel):
    """Workloads per tier; a tier without an entry gets none of its own."""

    shared: WorkloadSpec | None = Field(default=None, description="Workloads of the shared tier.")
    isolated: WorkloadSpec | None = Field(default=None, description="Workloads of each isolated tenant.")


class ServerSelectors(SpecModel):
    """The DatabaseServers a new tenant may be placed on, per tier, by label; a tier without one may use every server that serves it."""  # noqa: E501 - the CRD description

    shared: LabelSelector | None = Field(default=None, description="Servers for the plan's shared-tier tenants.")
    isolated: LabelSelector | None = Field(default=None, description="Servers for the plan's isolated-tier tenants.")


class PlanDatabaseSpec(SpecModel):
    """What the tenants on the plan find in their database."""

    servers: ServerSelectors = Field(
        default=ServerSelectors(), description="The DatabaseServers the plan's tenants are placed on, per tier.")

    schema_name: SchemaName | None = Field(
        default=None, alias="schema",
        description="The DatabaseSchema every tenant on the plan is born with and follows.")
    limits: DatabaseLimits = Field(default=DatabaseLimits(), description="Limits of each tenant's database role.")


class TenantPlanSpec(SpecModel):
    """A plan tenants subscribe to: quotas, container limits, allowed tiers and workloads."""

    display_name: DisplayName | None = None
    quota: QuotaMap = Field(
        default={},
        description="ResourceQuota hard limits of each tenant namespace, such as cpu, pods or requests.storage."
    )
    limits: LimitsSpec = Field(default=LimitsSpec(), description="LimitRange container defaults and bounds.")
    tiers: Annotated[list[Tier], AfterValidator(unique)] = Field(
        default=[Tier.SHARED],
        min_length=1,
        max_length=len(Tier),
        json_schema_extra={"uniqueItems": True},
        description="Tiers a tenant on this plan may use.",
    )
    workloads: TierWorkloads = Field(default=TierWorkloads(), description="Workloads rendered per tier.")
    database: PlanDatabaseSpec = Field(default=PlanDatabaseSpec(), description="The tenants' data.")


class TenantPlan(BaseModel):
    """A TenantPlan object as the operator sees it: name and spec."""

    name: str
    spec: TenantPlanSpec

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TenantPlan:
        metadata = body.get("metadata") or {}
        return cls(name=metadata["name"], spec=plain(body.get("spec") or {}))
