"""The Tenant API models: what they accept, what they refuse, how status serializes."""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest
from pydantic import ValidationError

from tenant_operator.api import conditions, fields
from tenant_operator.api.fields import OwnerKind, Phase, ReclaimPolicy, Tier
from tenant_operator.api.plan import TenantPlan, TenantPlanSpec
from tenant_operator.api.tenant import (
    OWNER_NAMESPACE_FORBIDDEN,
    OWNER_NAMESPACE_REQUIRED,
    Condition,
    MigrationStatus,
    Owner,
    TableProgress,
    Tenant,
    TenantSpec,
    TenantStatus,
)

FULL_TENANT = {
    "apiVersion": "tenancy.dev/v1alpha1",
    "kind": "Tenant",
    "metadata": {"name": "acme", "generation": 3, "uid": "1234"},
    "spec": {
        "displayName": "ACME Corp",
        "plan": "professional",
        "tier": "isolated",
        "owners": [
            {"kind": "User", "name": "alice@example.com"},
            {"kind": "Group", "name": "acme-admins"},
            {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},
        ],
        "quotaOverrides": {"requests.cpu": "8", "count/deployments.apps": "20"},
        "database": {"reclaimPolicy": "Snapshot"},
        "suspended": True,
        "networkIsolation": False,
    },
    "status": {
        "phase": "Ready",
        "tier": "isolated",
        "namespace": "tenant-acme",
        "database": {"host": "pg", "port": 5432, "database": "tenant_acme", "schema": "public", "secretName": "tenant-db"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllReady",
                "message": "",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
        "observedGeneration": 3,
    },
}


def test_full_tenant_body_parses():
    tenant = Tenant.from_body(FULL_TENANT)

    assert tenant.name == "acme"
    assert tenant.generation == 3
    assert tenant.spec.display_name == "ACME Corp"
    assert tenant.spec.plan == "professional"
    assert tenant.spec.tier is Tier.ISOLATED
    assert [o.kind for o in tenant.spec.owners] == [OwnerKind.USER, OwnerKind.GROUP, OwnerKind.SERVICE_ACCOUNT]
    assert tenant.spec.owners[2].namespace == "ci"
    assert tenant.spec.quota_overrides == {"requests.cpu": "8", "count/deployments.apps": "20"}
    assert tenant.spec.database.reclaim_policy is ReclaimPolicy.SNAPSHOT
    assert tenant.spec.suspended is True
    assert tenant.spec.network_isolation is False
    assert tenant.status.phase is Phase.READY
    assert tenant.status.database.schema_name == "public"
    assert tenant.status.database.secret_name == "tenant-db"
    assert tenant.status.condition(conditions.READY).reason == "AllReady"
    assert tenant.status.condition(conditions.MIGRATING) is None


def test_enums_compare_equal_to_their_strings():
    tenant = Tenant.from_body(FULL_TENANT)

    assert tenant.spec.tier == "isolated"
    assert tenant.status.phase == "Ready"


def test_tenant_without_status_gets_a_pending_one():
    tenant = Tenant.from_body({"metadata": {"name": "acme"}, "spec": {"plan": "free"}})

    assert tenant.generation == 0
    assert tenant.status == TenantStatus()
    assert tenant.status.phase is Phase.PENDING
    assert tenant.status.conditions == []


def test_from_body_accepts_read_only_mappings():
    # kopf hands handlers Mapping views, not dicts.
    body = MappingProxyType(
        {"metadata": MappingProxyType({"name": "acme"}), "spec": MappingProxyType({"plan": "free", "owners": ()})}
    )

    assert Tenant.from_body(body).spec.plan == "free"


def test_spec_defaults():
    spec = TenantSpec.model_validate({"plan": "free"})

    assert spec.tier is Tier.SHARED
    assert spec.database.reclaim_policy is ReclaimPolicy.RETAIN
    assert spec.network_isolation is True
    assert spec.suspended is False
    assert spec.owners == []
    assert spec.quota_overrides == {}
    assert spec.display_name is None


def test_mutable_defaults_are_not_shared():
    first = TenantSpec(plan="free")
    first.quota_overrides["pods"] = "5"
    first.owners.append(Owner(kind="User", name="bob"))

    second = TenantSpec(plan="free")
    assert second.quota_overrides == {}
    assert second.owners == []


def test_plan_defaults():
    plan = TenantPlan.from_body({"metadata": {"name": "free"}, "spec": {}})

    assert plan.name == "free"
    assert plan.spec.tiers == [Tier.SHARED]
    assert plan.spec.quota == {}
    assert plan.spec.limits.default is None
    assert plan.spec.workloads.shared is None
    assert plan.spec.workloads.isolated is None


def test_workload_defaults():
    plan = TenantPlanSpec.model_validate({"tiers": ["shared", "isolated"], "workloads": {"isolated": {}}})
    workload = plan.workloads.isolated

    assert workload.template == "web"
    assert workload.image == "ghcr.io/tenancy-dev/shared-app:0.1.0"
    assert workload.replicas == 1
    assert workload.port == 8080
    assert workload.resources.requests == {}
    assert workload.resources.limits == {}


def test_full_plan_parses_with_camel_case_keys():
    plan = TenantPlanSpec.model_validate(
        {
            "displayName": "Professional",
            "quota": {"cpu": "4", "limits.memory": "8Gi", "pods": "50", "requests.storage": "100Gi"},
            "limits": {"default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"memory": "2Gi"}},
            "tiers": ["shared", "isolated"],
            "workloads": {"isolated": {"template": "web", "replicas": 2, "resources": {"requests": {"cpu": "250m"}}}},
        }
    )

    assert plan.limits.default_request == {"cpu": "100m"}
    assert plan.workloads.isolated.resources.requests == {"cpu": "250m"}


def test_fields_populate_by_python_name_too():
    spec = TenantSpec(plan="free", quota_overrides={"pods": "3"}, network_isolation=False)

    assert spec.model_dump(by_alias=True)["quotaOverrides"] == {"pods": "3"}
    assert spec.model_dump(by_alias=True)["networkIsolation"] is False


def _status() -> TenantStatus:
    return TenantStatus(
        phase=Phase.MIGRATING,
        tier=Tier.SHARED,
        namespace="tenant-acme",
        conditions=[
            Condition(
                type=conditions.MIGRATING,
                status="True",
                reason="CopyingData",
                message="copying 2 tables",
                observed_generation=4,
                last_transition_time="2026-01-02T03:04:05Z",
            )
        ],
        observed_generation=4,
        migration=MigrationStatus(
            source=Tier.SHARED,
            target=Tier.ISOLATED,
            step="copy",
            started="2026-01-02T03:04:05Z",
            tables=[TableProgress(name="orders", rows=10, copied=4)],
            rows_copied=4,
            freeze_started="2026-01-02T03:05:00+00:00",
        ),
    )


def test_status_serializes_to_camel_case_json():
    dumped = _status().model_dump(by_alias=True, exclude_none=True, mode="json")

    assert dumped == {
        "phase": "Migrating",
        "tier": "shared",
        "namespace": "tenant-acme",
        "conditions": [
            {
                "type": "Migrating",
                "status": "True",
                "reason": "CopyingData",
                "message": "copying 2 tables",
                "observedGeneration": 4,
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
        "observedGeneration": 4,
        "migration": {
            "from": "shared",
            "to": "isolated",
            "step": "copy",
            "started": "2026-01-02T03:04:05Z",
            "tables": [{"name": "orders", "rows": 10, "copied": 4}],
            "rowsCopied": 4,
            "freezeStarted": "2026-01-02T03:05:00+00:00",
        },
    }


def test_status_round_trips_through_its_json():
    status = _status()
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")

    assert TenantStatus.model_validate(dumped) == status


def test_status_tolerates_fields_it_does_not_know():
    status = TenantStatus.model_validate({"phase": "Ready", "addedByANewerOperator": 1})

    assert status.phase is Phase.READY


def test_condition_type_constants():
    assert (conditions.READY, conditions.NAMESPACE_READY, conditions.QUOTA_READY) == ("Ready", "NamespaceReady", "QuotaReady")
    assert (conditions.DATABASE_READY, conditions.WORKLOADS_READY, conditions.MIGRATING) == (
        "DatabaseReady",
        "WorkloadsReady",
        "Migrating",
    )


@pytest.mark.parametrize("quantity", ["1", "0", "500m", "1.5", ".5", "2Gi", "10M", "1e3", "100Ki", "1E"])
def test_valid_quantities_are_accepted(quantity):
    assert TenantSpec(plan="free", quota_overrides={"cpu": quantity}).quota_overrides["cpu"] == quantity


@pytest.mark.parametrize("quantity", ["-1", "-500m", "+1", "1.5.5", "1X", "Gi", "", " 1", "1 Gi", "1e-3"])
def test_invalid_quantities_are_rejected(quantity):
    with pytest.raises(ValidationError):
        TenantSpec(plan="free", quota_overrides={"cpu": quantity})


@pytest.mark.parametrize("quantity", [20, 0, 10**12])
def test_numeric_quantities_are_accepted_as_text(quantity):
    # `pods: 20` in YAML is a number; ResourceQuota takes it, and so do we.
    spec = TenantSpec.model_validate({"plan": "free", "quotaOverrides": {"pods": quantity}})

    assert spec.quota_overrides == {"pods": str(quantity)}


@pytest.mark.parametrize("quantity", [-1, 1.5, True, None])
def test_negative_fractional_or_boolean_numbers_are_rejected(quantity):
    # The CRD is int-or-string: a YAML float (cpu: 0.5) must be quoted there too.
    with pytest.raises(ValidationError):
        TenantSpec.model_validate({"plan": "free", "quotaOverrides": {"pods": quantity}})


def test_quantity_error_says_what_is_allowed():
    with pytest.raises(ValidationError, match="non-negative Kubernetes quantity such as 500m, 2 or 1Gi"):
        TenantSpec(plan="free", quota_overrides={"pods": "lots"})


@pytest.mark.parametrize(
    "key", ["cpu", "requests.memory", "count/deployments.apps", "hugepages-2Mi", "requests.hugepages-1Gi",
            "example.com/GPU", "example.com/my_device"]
)
def test_valid_resource_names_are_accepted(key):
    assert key in TenantPlanSpec(quota={key: "1"}).quota


@pytest.mark.parametrize("key", ["CPU", "Memory", "-cpu", "cpu.", "requests cpu", "cpu\n"])
def test_invalid_resource_names_are_rejected(key):
    with pytest.raises(ValidationError, match="resource names must be"):
        TenantPlanSpec(quota={key: "1"})


def test_overlong_resource_names_are_rejected():
    with pytest.raises(ValidationError):
        TenantPlanSpec(quota={"a" * (fields.RESOURCE_NAME_MAX_LENGTH + 1): "1"})


def test_too_many_quota_entries_are_rejected():
    with pytest.raises(ValidationError):
        TenantPlanSpec(quota={f"count/thing{i}": "1" for i in range(fields.MAX_RESOURCE_ENTRIES + 1)})


@pytest.mark.parametrize(
    "spec",
    [
        {"plan": "free", "tier": "dedicated"},
        {"plan": "free", "owners": [{"kind": "Robot", "name": "r2"}]},
        {"plan": "free", "owners": [{"kind": "User", "name": ""}]},
        {"plan": "free", "owners": [{"kind": "ServiceAccount", "name": "ci"}]},
        {"plan": "free", "owners": [{"kind": "User", "name": "alice", "namespace": "ci"}]},
        {"plan": "free", "database": {"reclaimPolicy": "Keep"}},
        {"plan": "Free_Plan"},
        {"plan": "free", "displayName": "x" * 129},
        {"plan": "free", "unknownField": True},
        {"tier": "shared"},
    ],
    ids=[
        "bad-tier",
        "bad-owner-kind",
        "empty-owner-name",
        "service-account-without-namespace",
        "user-with-namespace",
        "bad-reclaim-policy",
        "bad-plan-name",
        "long-display-name",
        "unknown-field",
        "missing-plan",
    ],
)
def test_invalid_tenant_specs_are_rejected(spec):
    with pytest.raises(ValidationError):
        TenantSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"plan": "Free_Plan"}, "must be the name of a TenantPlan"),
        ({"plan": "free\n"}, "must be the name of a TenantPlan"),
        ({"plan": "free", "owners": [{"kind": "ServiceAccount", "name": "ci"}]}, OWNER_NAMESPACE_REQUIRED),
        ({"plan": "free", "owners": [{"kind": "User", "name": "bob", "namespace": "ci"}]}, OWNER_NAMESPACE_FORBIDDEN),
        ({"plan": "free", "owners": [{"kind": "ServiceAccount", "name": "ci", "namespace": "CI"}]}, "must be a namespace name"),
    ],
    ids=["plan-pattern", "plan-trailing-newline", "service-account-without-namespace", "user-with-namespace",
         "bad-namespace"],
)
def test_tenant_spec_errors_say_what_is_allowed(spec, message):
    # The same words as the CRD's CEL rules: the operator and the API server agree.
    with pytest.raises(ValidationError, match=re.escape(message)):
        TenantSpec.model_validate(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"tiers": []},
        {"tiers": ["shared", "shared"]},
        {"tiers": ["premium"]},
        {"workloads": {"isolated": {"replicas": 51}}},
        {"workloads": {"isolated": {"replicas": -1}}},
        {"workloads": {"isolated": {"port": 0}}},
        {"workloads": {"isolated": {"template": "../etc"}}},
        {"workloads": {"isolated": {"template": "Web"}}},
        {"workloads": {"dedicated": {}}},
    ],
)
def test_invalid_plan_specs_are_rejected(spec):
    with pytest.raises(ValidationError):
        TenantPlanSpec.model_validate(spec)


@pytest.mark.parametrize(
    "condition",
    [
        {"status": "Maybe"},
        {"reason": "not a reason"},
        {"reason": ""},
        {"lastTransitionTime": "yesterday"},
        {"lastTransitionTime": "2026-01-02"},
    ],
)
def test_invalid_conditions_are_rejected(condition):
    valid = {"type": "Ready", "status": "True", "reason": "AllReady", "lastTransitionTime": "2026-01-02T03:04:05Z"}
    with pytest.raises(ValidationError):
        Condition.model_validate({**valid, **condition})
