"""The API of the server pool: DatabaseServer, a plan's server selectors, a tenant's pin and where its data lives."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from pydantic import ValidationError

from tenant_operator.api import crds, kinds, names
from tenant_operator.api.fields import Tier
from tenant_operator.api.plan import TenantPlan, TenantPlanSpec
from tenant_operator.api.server import (
    DEFAULT_SERVER,
    DRAINING,
    MAX_LISTED_TENANTS,
    AdminSecretRef,
    DatabaseServer,
    DatabaseServerSpec,
    DatabaseServerStatus,
    DrainStatus,
    Endpoint,
    free_places,
)
from tenant_operator.api.tenant import MigrationStatus, Tenant, TenantSpec, TenantStatus

SERVERS = f"{names.GROUP}_databaseservers.yaml"

SERVER_BODY = {
    "apiVersion": names.API_VERSION,
    "kind": "DatabaseServer",
    "metadata": {"name": "pg-eu-1", "generation": 4, "labels": {"region": "eu"},
                 "finalizers": [names.FINALIZER], "deletionTimestamp": "2026-01-02T03:04:05Z"},
    "spec": {
        "adminSecretRef": {"namespace": "tenant-operator", "name": "pg-eu-1-superuser"},
        "endpoint": {"host": "pg-eu-1-rw.db"},
        "tiers": ["shared"],
        "maxTenants": 500,
        "cordoned": True,
        "drain": True,
    },
    "status": {
        "observedGeneration": 4,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Reachable", "lastTransitionTime": "2026-01-02T03:04:05Z"},
            {"type": DRAINING, "status": "True", "reason": "Draining", "lastTransitionTime": "2026-01-02T03:04:05Z"},
        ],
        "version": "16.4",
        "walLevel": "logical",
        "tenants": 3,
        "free": 497,
        "placed": ["acme", "globex", "initech"],
        "draining": {"remaining": 3, "moving": ["acme"], "moved": 1},
    },
}


# --- DatabaseServer model -----------------------------------------------------------------------

def test_server_spec_defaults():
    spec = DatabaseServerSpec()

    assert spec.admin_secret_ref is None and spec.endpoint is None
    assert spec.tiers == [Tier.SHARED, Tier.ISOLATED]
    assert spec.max_tenants == 1000
    assert spec.cordoned is False and spec.drain is False


def test_admin_secret_key_defaults_to_cloudnative_pg_uri_and_endpoint_port_to_5432():
    assert AdminSecretRef(namespace="tenant-operator", name="pg-superuser").key == "uri"
    assert Endpoint(host="pg").port == 5432


def test_full_server_body_parses():
    server = DatabaseServer.from_body(SERVER_BODY)

    assert (server.name, server.generation) == ("pg-eu-1", 4)
    assert server.labels == {"region": "eu"}
    assert server.finalizers == (names.FINALIZER,)
    assert server.deleting is True
    assert server.spec.admin_secret_ref == AdminSecretRef(namespace="tenant-operator", name="pg-eu-1-superuser")
    assert server.spec.endpoint == Endpoint(host="pg-eu-1-rw.db", port=5432)
    assert server.spec.tiers == [Tier.SHARED]
    assert (server.spec.max_tenants, server.spec.cordoned, server.spec.drain) == (500, True, True)
    status = server.status
    assert (status.version, status.wal_level, status.tenants, status.free) == ("16.4", "logical", 3, 497)
    assert status.placed == ["acme", "globex", "initech"]
    assert status.draining == DrainStatus(remaining=3, moving=["acme"], moved=1)
    assert [c.type for c in status.conditions] == ["Ready", DRAINING]


def test_status_round_trips_through_its_json():
    status = DatabaseServer.from_body(SERVER_BODY).status

    assert status.model_dump(mode="json", by_alias=True, exclude_unset=True) == SERVER_BODY["status"]


def test_the_default_server_may_be_an_empty_object_read_through_mappings():
    body = MappingProxyType({"metadata": MappingProxyType({"name": DEFAULT_SERVER}), "spec": MappingProxyType({})})
    server = DatabaseServer.from_body(body)

    assert server.name == DEFAULT_SERVER == "default"
    assert server.deleting is False and server.finalizers == () and server.labels == {}
    assert server.status == DatabaseServerStatus()
    assert server.status.placed == [] and server.status.draining is None


@pytest.mark.parametrize("spec", [
    {"maxTenants": 0},
    {"maxTenants": 100_001},
    {"tiers": []},
    {"tiers": ["shared", "shared"]},
    {"tiers": ["dedicated"]},
    {"endpoint": {"host": ""}},
    {"endpoint": {"host": "pg", "port": 0}},
    {"adminSecretRef": {"namespace": "tenant-operator", "name": "Bad_Name"}},
    {"adminSecretRef": {"namespace": "Ops", "name": "pg"}},
    {"adminSecretRef": {"name": "pg"}},
    {"colour": "blue"},
])
def test_invalid_server_specs_are_rejected(spec):
    with pytest.raises(ValidationError):
        DatabaseServerSpec.model_validate(spec)


def test_status_lists_at_most_fifty_tenants():
    assert MAX_LISTED_TENANTS == 50
    DatabaseServerStatus(placed=[f"t{i}" for i in range(50)])
    with pytest.raises(ValidationError):
        DatabaseServerStatus(placed=[f"t{i}" for i in range(51)])
    with pytest.raises(ValidationError):
        DrainStatus(moving=[f"t{i}" for i in range(51)])


def test_status_from_a_newer_operator_still_loads():
    assert DatabaseServerStatus.model_validate({"tenants": 1, "somethingNew": True}).tenants == 1


@pytest.mark.parametrize(("max_tenants", "tenants", "free"), [(1000, 3, 997), (10, 10, 0), (5, 8, 0)])
def test_free_places_never_go_below_zero(max_tenants, tenants, free):
    assert free_places(max_tenants, tenants) == free


def test_kind():
    assert kinds.DATABASE_SERVER == kinds.KINDS[(names.API_VERSION, "DatabaseServer")]
    assert kinds.DATABASE_SERVER.namespaced is False
    assert kinds.DATABASE_SERVER.path("pg-eu-1") == "/apis/tenancy.dev/v1alpha1/databaseservers/pg-eu-1"


# --- TenantPlan: servers per tier ---------------------------------------------------------------

def test_plan_selects_servers_per_tier_and_round_trips():
    spec = {"tiers": ["shared", "isolated"],
            "database": {"servers": {"shared": {"matchLabels": {"pool": "shared"}},
                                     "isolated": {"matchLabels": {"region": "eu", "class": "big"}}}}}
    plan = TenantPlan.from_body({"metadata": {"name": "pro"}, "spec": spec})

    assert plan.spec.database.servers.shared.match_labels == {"pool": "shared"}
    assert plan.spec.database.servers.isolated.match_labels == {"region": "eu", "class": "big"}
    assert plan.spec.model_dump(mode="json", by_alias=True, exclude_unset=True) == spec


def test_plan_without_server_selectors_may_use_every_server():
    servers = TenantPlanSpec().database.servers

    assert servers.shared is None and servers.isolated is None


def test_plan_server_selector_refuses_unknown_fields():
    with pytest.raises(ValidationError):
        TenantPlanSpec.model_validate({"database": {"servers": {"dedicated": {"matchLabels": {}}}}})


# --- Tenant: the pin, and where the data lives ---------------------------------------------------

def test_tenant_pin_round_trips():
    spec = {"plan": "pro", "database": {"reclaimPolicy": "Retain", "server": "pg-eu-1"}}

    parsed = TenantSpec.model_validate(spec)

    assert parsed.database.server == "pg-eu-1"
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == spec
    assert TenantSpec.model_validate({"plan": "pro"}).database.server is None


@pytest.mark.parametrize("server", ["pg.eu", "PG", "pg-", "p" * 64, ""])
def test_tenant_pin_must_be_a_server_name(server):
    with pytest.raises(ValidationError, match="must be the name of a DatabaseServer|at most 63"):
        TenantSpec.model_validate({"plan": "pro", "database": {"server": server}})


def test_tenant_status_names_its_server_and_moves_between_servers():
    status: dict[str, Any] = {
        "database": {"server": "pg-eu-1", "host": "pg-eu-1-rw.db", "port": 5432},
        "migration": {"from": "shared", "to": "shared", "fromServer": "default", "toServer": "pg-eu-1",
                      "step": "copy", "started": "2026-01-02T03:04:05Z"},
    }
    tenant = Tenant.from_body({"metadata": {"name": "acme"}, "spec": {"plan": "pro"}, "status": status})

    assert tenant.status.database.server == "pg-eu-1"
    assert (tenant.status.migration.from_server, tenant.status.migration.to_server) == ("default", "pg-eu-1")
    assert tenant.status_json() == status


def test_a_migration_record_of_an_older_version_has_no_servers():
    record = MigrationStatus.model_validate(
        {"from": "shared", "to": "isolated", "step": "copy", "started": "2026-01-02T03:04:05Z"})

    assert record.from_server is None and record.to_server is None
    assert TenantStatus().database is None


# --- The CRD ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return crds.crd_documents()[SERVERS]


def _root(document: dict[str, Any]) -> dict[str, Any]:
    (version,) = document["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def test_crd_names_and_scope(document):
    assert document["metadata"]["name"] == f"databaseservers.{names.GROUP}"
    assert document["spec"]["scope"] == "Cluster"
    assert document["spec"]["names"] == {
        "kind": "DatabaseServer", "listKind": "DatabaseServerList", "plural": "databaseservers",
        "singular": "databaseserver", "shortNames": ["dbserver"], "categories": ["tenancy"]}


def test_crd_printer_columns(document):
    (version,) = document["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"], c.get("priority", 0))
               for c in version["additionalPrinterColumns"]}

    assert columns == {
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status', 0),
        "Tenants": ("integer", ".status.tenants", 0),
        "Max": ("integer", ".spec.maxTenants", 0),
        "Free": ("integer", ".status.free", 0),
        "Cordoned": ("boolean", ".spec.cordoned", 0),
        "Drain": ("boolean", ".spec.drain", 0),
        "Version": ("string", ".status.version", 0),
        "Age": ("date", ".metadata.creationTimestamp", 0),
        # -o wide
        "Tiers": ("string", ".spec.tiers", 1),
        "Message": ("string", '.status.conditions[?(@.type=="Ready")].message', 1),
    }


def test_only_the_default_server_may_leave_out_its_admin_secret(document):
    rules = {rule["rule"]: rule for rule in _root(document)["x-kubernetes-validations"]}
    rule = rules["self.metadata.name == 'default' || has(self.spec.adminSecretRef)"]

    assert (rule["fieldPath"], rule["reason"]) == (".spec.adminSecretRef", "FieldValueRequired")
    assert "only the server named default may leave adminSecretRef out" in rule["message"]
    assert "DATABASE_URL" in rule["message"]


def test_server_name_is_a_dns_label_of_at_most_63(document):
    rules = {rule["rule"]: rule for rule in _root(document)["x-kubernetes-validations"]}

    assert "size(self.metadata.name) <= 63" in rules
    assert "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')" in rules
    for rule in rules.values():
        assert rule["fieldPath"].startswith(".")


def test_crd_spec_defaults_and_bounds(document):
    spec = _root(document)["properties"]["spec"]["properties"]

    assert spec["tiers"]["default"] == ["shared", "isolated"]
    assert spec["tiers"]["x-kubernetes-list-type"] == "set" and spec["tiers"]["minItems"] == 1
    assert (spec["maxTenants"]["default"], spec["maxTenants"]["minimum"], spec["maxTenants"]["maximum"]) == (
        1000, 1, 100_000)
    assert "2000 schemas" in spec["maxTenants"]["description"]
    assert spec["adminSecretRef"]["properties"]["key"]["default"] == "uri"
    assert spec["adminSecretRef"]["required"] == ["namespace", "name"]
    assert spec["endpoint"]["properties"]["port"]["default"] == 5432
    assert spec["cordoned"]["default"] is False and spec["drain"]["default"] is False


def test_crd_status_conditions_are_a_map_and_lists_are_bounded(document):
    status = _root(document)["properties"]["status"]["properties"]

    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["placed"]["maxItems"] == status["draining"]["properties"]["moving"]["maxItems"] == 50


def test_plan_and_tenant_crds_carry_the_new_fields():
    documents = crds.crd_documents()
    plan = _root(documents[f"{names.GROUP}_tenantplans.yaml"])["properties"]["spec"]["properties"]
    tenant = _root(documents[f"{names.GROUP}_tenants.yaml"])["properties"]
    servers = plan["database"]["properties"]["servers"]["properties"]

    assert set(servers) == {"shared", "isolated"}
    assert "matchLabels" in servers["shared"]["properties"]
    pin = tenant["spec"]["properties"]["database"]["properties"]["server"]
    assert pin["maxLength"] == 63 and "must be the name of a DatabaseServer" in pin["x-kubernetes-validations"][0][
        "message"]
    assert "server" in tenant["status"]["properties"]["database"]["properties"]
    assert {"fromServer", "toServer"} <= set(tenant["status"]["properties"]["migration"]["properties"])
