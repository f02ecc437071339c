"""The API server itself refuses a bad Tenant, TenantPlan or DatabaseServer, with a message a person can act on.

These tests need only the control plane with crds/ installed: no operator, no
PostgreSQL. Each refusal is checked for HTTP 422, the field it names and the
words that say what is allowed. Tenants that are accepted name a plan that does
not exist ("validation-only"), so an operator running in the same session does
nothing with them but, perhaps, add its finalizer; they are deleted at the end.
DatabaseServers that are accepted are only dry-run: a real one would be a server
an operator in the same session might place tenants on.
"""

from __future__ import annotations

import json
import secrets

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tenant_operator.api.kinds import DATABASE_SERVER, TENANT, TENANT_PLAN, Kind, ObjectRef
from tenant_operator.api.names import API_VERSION
from tenant_operator.api.server import DatabaseServerSpec
from tenant_operator.api.tenant import TenantSpec
from tenant_operator.dev.wait import Timeout, wait_for
from tenant_operator.infra.kube import Kube

NO_SUCH_PLAN = "validation-only"
QUANTITY_ALLOWED = "must be a non-negative Kubernetes quantity such as 500m, 2 or 1Gi"
NAME_CHARACTERS = "Tenant name must be lowercase letters, digits and '-'"
DRY_RUN = [("dryRun", "All")]
ADMIN_SECRET = {"namespace": "tenant-operator", "name": "pg-eu-1-superuser"}


class Api:
    """Creates Tenants and TenantPlans as a user would, and deletes whatever got created."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self.created: list[ObjectRef] = []

    def create(self, kind: Kind, name: str, spec: dict, query: list[tuple[str, str]] | None = None) -> dict:
        body = {"apiVersion": API_VERSION, "kind": kind.kind, "metadata": {"name": name}, "spec": spec}
        created = self.kube.request("POST", kind.collection_path(), query or [], body)
        self.created.append(ObjectRef(kind, name))
        return created

    def refusal(self, kind: Kind, name: str, spec: dict, query: list[tuple[str, str]] | None = None
                ) -> tuple[int, str]:
        """(HTTP status, message) of a create the API server must refuse."""
        try:
            self.create(kind, name, spec, query)
        except ApiException as error:
            return error.status, json.loads(error.body)["message"]
        pytest.fail(f"the API server accepted {kind.kind} {name!r} with spec {spec}")

    def tenant_refusal(self, spec: dict, name: str | None = None) -> str:
        """The message of a Tenant create refused with 422 Unprocessable Entity."""
        status, message = self.refusal(TENANT, name or unique("refused"), {"plan": NO_SUCH_PLAN, **spec})
        assert status == 422, message
        return message

    def server_refusal(self, spec: dict, name: str | None = None) -> str:
        """The message of a DatabaseServer create refused with 422 Unprocessable Entity."""
        status, message = self.refusal(DATABASE_SERVER, name or unique("refused"), spec, query=DRY_RUN)
        assert status == 422, message
        return message

    def dry_run_server(self, name: str, spec: dict) -> dict | None:
        """The DatabaseServer as the API server would store it; None if one of that name exists (the
        existence check comes after validation, so a 409 still means the spec was accepted)."""
        body = {"apiVersion": API_VERSION, "kind": DATABASE_SERVER.kind, "metadata": {"name": name}, "spec": spec}
        try:
            return self.kube.request("POST", DATABASE_SERVER.collection_path(), DRY_RUN, body)
        except ApiException as error:
            if error.status == 409:
                return None
            pytest.fail(f"the API server refused DatabaseServer {name!r} with spec {spec}: {error.body}")

    def delete_created(self) -> None:
        for ref in self.created:
            self.kube.delete(ref)
        for ref in self.created:
            try:
                wait_for(lambda: self.kube.read(ref) is None, timeout=10, what=f"{ref} to be deleted")
            except Timeout:
                # An operator in the same session added its finalizer and is not
                # going to remove it for a tenant whose plan does not exist.
                self.kube.merge_patch(ref, {"metadata": {"finalizers": None}})
                wait_for(lambda: self.kube.read(ref) is None, timeout=30, what=f"{ref} to be deleted")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def api(cluster, kube):
    helper = Api(kube)
    yield helper
    helper.delete_created()


# --- Tenant names -------------------------------------------------------------


def test_api_refuses_tenant_name_over_40_characters(api):
    name = unique("x" * 34)
    assert len(name) == 41

    message = api.tenant_refusal({}, name=name)

    assert "metadata.name" in message
    assert "Tenant name must be at most 40 characters" in message
    assert "namespace tenant-<name>" in message


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("Acme", "starting with a letter"),
        ("ac.me", "no dots"),
        ("ac_me", "no underscores"),
        ("2acme", "starting with a letter"),
        ("acme-", "ending with a letter or digit"),
    ],
    ids=["uppercase", "dot", "underscore", "leading-digit", "trailing-dash"],
)
def test_api_refuses_tenant_name_that_cannot_become_a_namespace_and_identifier(api, name, says):
    message = api.tenant_refusal({}, name=name)

    assert "metadata.name" in message
    assert NAME_CHARACTERS in message and says in message
    assert "PostgreSQL identifier tenant_<name>" in message


@pytest.mark.parametrize("name", ["acme';drop", 'acme"x', "acme;--", "robert'); drop table students;--", "a/b"])
def test_api_refuses_tenant_name_with_quotes_or_sql_fragments(api, name):
    # Kubernetes' own RFC 1123 check refuses these too, beside our rule; both say what is allowed.
    message = api.tenant_refusal({}, name=name)

    assert "metadata.name" in message
    assert "RFC 1123 subdomain" in message
    assert NAME_CHARACTERS in message


def test_api_refuses_tenant_plan_name_over_63_characters(api):
    status, message = api.refusal(TENANT_PLAN, "p" * 64, {})

    assert status == 422, message
    assert "metadata.name" in message and "TenantPlan name must be at most 63 characters" in message


# --- Tenant spec --------------------------------------------------------------


def test_api_refuses_unknown_tier(api):
    message = api.tenant_refusal({"tier": "dedicated"})

    assert 'spec.tier: Unsupported value: "dedicated"' in message
    assert 'supported values: "shared", "isolated"' in message


def test_api_refuses_plan_name_that_is_not_a_dns_subdomain(api):
    message = api.tenant_refusal({"plan": "Free_Plan"})

    assert "spec.plan" in message
    assert "must be the name of a TenantPlan: lowercase letters, digits, '-' and '.'" in message


def test_api_refuses_owner_kind_robot(api):
    message = api.tenant_refusal({"owners": [{"kind": "Robot", "name": "r2d2"}]})

    assert 'spec.owners[0].kind: Unsupported value: "Robot"' in message
    assert 'supported values: "User", "Group", "ServiceAccount"' in message


def test_api_refuses_service_account_owner_without_namespace(api):
    message = api.tenant_refusal({"owners": [{"kind": "ServiceAccount", "name": "deployer"}]})

    assert "spec.owners[0].namespace: Required value" in message
    assert "ServiceAccount needs the namespace" in message


def test_api_refuses_namespace_on_user_owner(api):
    message = api.tenant_refusal({"owners": [{"kind": "User", "name": "alice", "namespace": "ci"}]})

    assert "spec.owners[0].namespace: Forbidden" in message
    assert "only an owner of kind ServiceAccount has a namespace" in message


def test_api_refuses_service_account_namespace_that_is_not_a_namespace_name(api):
    message = api.tenant_refusal({"owners": [{"kind": "ServiceAccount", "name": "ci", "namespace": "Build_NS"}]})

    assert 'spec.owners[0].namespace: Invalid value: "Build_NS"' in message
    assert "must be a namespace name" in message


@pytest.mark.parametrize("quantity", [-1, "-1", "-500m"], ids=["number", "string", "millis"])
def test_api_refuses_negative_quota_override(api, quantity):
    message = api.tenant_refusal({"quotaOverrides": {"pods": quantity}})

    assert "spec.quotaOverrides[pods]" in message
    assert QUANTITY_ALLOWED in message


@pytest.mark.parametrize("quantity", ["lots", "1 Gi", "1K", "0x10", "1e-3"])
def test_api_refuses_malformed_quantity(api, quantity):
    message = api.tenant_refusal({"quotaOverrides": {"requests.memory": quantity}})

    assert f'spec.quotaOverrides[requests.memory]: Invalid value: "{quantity}"' in message
    assert QUANTITY_ALLOWED in message


def test_api_refuses_fractional_number_quantity(api):
    # int-or-string takes whole numbers only: `cpu: 0.5` must be written `cpu: 500m` or "0.5".
    message = api.tenant_refusal({"quotaOverrides": {"cpu": 0.5}})

    assert "spec.quotaOverrides.cpu" in message
    assert "must be of type integer,string" in message


def test_api_refuses_resource_name_and_names_the_offender(api):
    message = api.tenant_refusal({"quotaOverrides": {"CPU": "2"}})

    assert "spec.quotaOverrides" in message
    assert "invalid resource name 'CPU'" in message
    assert "starting with a lowercase letter or digit" in message and "hugepages-2Mi" in message


def test_api_refuses_a_quota_entry_no_resourcequota_counts_and_names_it(api):
    message = api.tenant_refusal({"quotaOverrides": {"cpu": "2", "gpus": "1"}})

    assert "spec.quotaOverrides" in message
    assert "'gpus' cannot go into a ResourceQuota" in message and "count/deployments.apps" in message


@pytest.mark.parametrize("key", ["pods", "count/deployments.apps"])
def test_api_refuses_objects_counted_in_fractions(api, key):
    message = api.tenant_refusal({"quotaOverrides": {key: "1.5"}})

    assert f"{key} is not a whole number" in message


def test_api_lists_every_mistake_in_one_answer(api):
    message = api.tenant_refusal({"plan": "Free_Plan", "quotaOverrides": {"pods": "lots"},
                                  "owners": [{"kind": "ServiceAccount", "name": "ci"}]}, name="Acme")

    for field in ("metadata.name", "spec.plan", "spec.quotaOverrides[pods]", "spec.owners[0].namespace"):
        assert field in message


def test_strict_field_validation_refuses_unknown_spec_field(api):
    # kubectl asks for Strict by default; the answer is 400 Bad Request, not 422.
    status, message = api.refusal(TENANT, unique("strict"), {"plan": NO_SUCH_PLAN, "colour": "blue"},
                                  query=[("fieldValidation", "Strict")])

    assert status == 400, message
    assert 'unknown field "spec.colour"' in message


def test_api_prunes_unknown_spec_field_without_strict_validation(api):
    # Clients that do not ask for Strict (the API server's default is Warn) lose the field silently.
    created = api.create(TENANT, unique("pruned"), {"plan": NO_SUCH_PLAN, "colour": "blue"})

    assert "colour" not in created["spec"]


# --- TenantPlan spec ----------------------------------------------------------


def test_api_refuses_plan_quota_that_no_resourcequota_counts(api):
    status, message = api.refusal(TENANT_PLAN, unique("validation-quota"), {"quota": {"storage": "1Gi", "pods": "2.5"}})

    assert status == 422, message
    assert "'storage' cannot go into a ResourceQuota" in message and "requests.storage" in message
    assert "pods is not a whole number" in message


def test_api_refuses_plan_with_empty_tiers(api):
    status, message = api.refusal(TENANT_PLAN, unique("validation-only-tiers"), {"tiers": []})

    assert status == 422, message
    assert "spec.tiers" in message and "should have at least 1 items" in message


def test_api_refuses_more_than_50_replicas(api):
    spec = {"tiers": ["isolated"], "workloads": {"isolated": {"replicas": 99}}}
    status, message = api.refusal(TENANT_PLAN, unique("validation-only-replicas"), spec)

    assert status == 422, message
    assert "spec.workloads.isolated.replicas: Invalid value: 99" in message
    assert "less than or equal to 50" in message


def test_api_refuses_workload_template_that_is_not_a_template_name(api):
    spec = {"tiers": ["isolated"], "workloads": {"isolated": {"template": "../etc/passwd"}}}
    status, message = api.refusal(TENANT_PLAN, unique("validation-only-template"), spec)

    assert status == 422, message
    assert 'spec.workloads.isolated.template: Invalid value: "../etc/passwd"' in message
    assert "must be the name of a workload template" in message


# --- DatabaseServer and the fields that name one ---------------------------------


def test_api_refuses_database_server_without_admin_secret_unless_named_default(api):
    message = api.server_refusal({"maxTenants": 10})

    assert "spec.adminSecretRef: Required value" in message
    assert "only the server named default may leave adminSecretRef out" in message
    assert "operator's own DATABASE_URL" in message
    accepted = api.dry_run_server("default", {})
    assert accepted is None or accepted["spec"]["tiers"] == ["shared", "isolated"]


@pytest.mark.parametrize(("name", "says"), [
    ("pg.eu", "DatabaseServer name must be lowercase letters, digits and '-' (no dots)"),
    ("p" * 64, "DatabaseServer name must be at most 63 characters"),
], ids=["dot", "64-characters"])
def test_api_refuses_server_name_that_cannot_be_a_label(api, name, says):
    message = api.server_refusal({"adminSecretRef": ADMIN_SECRET}, name=name)

    assert "metadata.name" in message and says in message
    assert "spec.database.server" in message


@pytest.mark.parametrize(("tiers", "says"), [
    (["dedicated"], 'spec.tiers[0]: Unsupported value: "dedicated": supported values: "shared", "isolated"'),
    ([], "spec.tiers: Invalid value: 0: spec.tiers in body should have at least 1 items"),
    (["shared", "shared"], 'spec.tiers[1]: Duplicate value: "shared"'),
], ids=["unknown", "none", "twice"])
def test_api_refuses_bad_server_tiers(api, tiers, says):
    message = api.server_refusal({"adminSecretRef": ADMIN_SECRET, "tiers": tiers})

    assert says in message


@pytest.mark.parametrize(("max_tenants", "says"), [
    (0, "should be greater than or equal to 1"), (100_001, "should be less than or equal to 100000")])
def test_api_refuses_max_tenants_out_of_bounds(api, max_tenants, says):
    message = api.server_refusal({"adminSecretRef": ADMIN_SECRET, "maxTenants": max_tenants})

    assert f"spec.maxTenants: Invalid value: {max_tenants}" in message and says in message


def test_api_refuses_admin_secret_and_endpoint_that_cannot_be(api):
    message = api.server_refusal({"adminSecretRef": {"namespace": "Ops", "name": "PG_Secret"},
                                  "endpoint": {"host": "", "port": 0}})

    assert 'spec.adminSecretRef.name: Invalid value: "PG_Secret"' in message
    assert "must be the name of a Secret" in message
    assert 'spec.adminSecretRef.namespace: Invalid value: "Ops"' in message and "must be a namespace name" in message
    assert "spec.endpoint.host" in message and "spec.endpoint.port" in message


@pytest.mark.parametrize(("server", "says"), [
    ("pg.eu", 'spec.database.server: Invalid value: "pg.eu"'),
    ("PG-1", 'spec.database.server: Invalid value: "PG-1"'),
    ("p" * 64, "spec.database.server: Too long: may not be more than 63"),
], ids=["dot", "uppercase", "64-characters"])
def test_api_refuses_tenant_pin_that_is_not_a_server_name(api, server, says):
    message = api.tenant_refusal({"database": {"server": server}})

    assert says in message
    if "Invalid value" in says:
        assert "must be the name of a DatabaseServer: lowercase letters, digits and '-'" in message


def test_api_refuses_plan_server_selector_for_an_unknown_tier(api):
    status, message = api.refusal(
        TENANT_PLAN, unique("validation-only-servers"),
        {"database": {"servers": {"dedicated": {"matchLabels": {"pool": "big"}}}}},
        query=[("fieldValidation", "Strict"), *DRY_RUN])

    assert status == 400, message
    assert 'unknown field "spec.database.servers.dedicated"' in message


# --- What is accepted ---------------------------------------------------------


def test_api_accepts_server_and_fills_in_defaults(api):
    created = api.dry_run_server(unique("pg"), {"adminSecretRef": ADMIN_SECRET, "endpoint": {"host": "pg-rw.db"}})

    assert created is not None
    spec = created["spec"]
    assert spec == {"adminSecretRef": {**ADMIN_SECRET, "key": "uri"}, "endpoint": {"host": "pg-rw.db", "port": 5432},
                    "tiers": ["shared", "isolated"], "maxTenants": 1000, "cordoned": False, "drain": False}
    assert DatabaseServerSpec.model_validate(spec).admin_secret_ref.key == "uri"


def test_api_accepts_plan_server_selectors_and_tenant_pin(api):
    servers = {"shared": {"matchLabels": {"pool": "shared"}}, "isolated": {"matchLabels": {"region": "eu"}}}
    plan = api.create(TENANT_PLAN, unique("validation-only-servers"), {"database": {"servers": servers}})
    tenant = api.create(TENANT, unique("pinned"), {"plan": NO_SUCH_PLAN, "database": {"server": "pg-eu-1"}})

    assert plan["spec"]["database"]["servers"] == servers
    assert tenant["spec"]["database"] == {"reclaimPolicy": "Retain", "server": "pg-eu-1"}
    assert TenantSpec.model_validate(tenant["spec"]).database.server == "pg-eu-1"

# --- What is accepted ---------------------------------------------------------


def test_api_accepts_40_character_name_and_numeric_quota_and_fills_in_defaults(api):
    name = unique("v" * 33)
    assert len(name) == 40

    created = api.create(TENANT, name, {
        "plan": NO_SUCH_PLAN,
        "quotaOverrides": {"pods": 20, "requests.cpu": "500m", "requests.hugepages-2Mi": "1Gi"},
    })

    spec = created["spec"]
    assert spec["quotaOverrides"] == {"pods": 20, "requests.cpu": "500m", "requests.hugepages-2Mi": "1Gi"}
    assert spec["tier"] == "shared"
    assert spec["database"] == {"reclaimPolicy": "Retain"}
    assert spec["networkIsolation"] is True
    assert spec["suspended"] is False
    # The operator reads the number as the quantity text it writes into the ResourceQuota.
    assert TenantSpec.model_validate(spec).quota_overrides["pods"] == "20"


def test_api_accepts_plan_with_numeric_quota_and_fills_in_tiers(api):
    created = api.create(TENANT_PLAN, unique("validation-only-numeric"), {
        "quota": {"pods": 20, "services": 0, "requests.storage": "10Gi"},
        "limits": {"max": {"memory": "2Gi"}},
    })

    assert created["spec"]["quota"] == {"pods": 20, "services": 0, "requests.storage": "10Gi"}
    assert created["spec"]["tiers"] == ["shared"]


QUANTITIES = ["0", "00", "20", "500m", "1.5", ".5", "1.", "2Gi", "1Ki", "10M", "1k", "1n", "1E", "1Ei", "1e3",
              "1e99", "9" * 64, "1K", "1ki", "+1", "-1", "-0", "1e-3", "1e100", "1e99999999999999999999",
              "lots", "", " 1", "1 Gi", "0x10", "1.1.", "Gi", "0.5Ki", "1.5Ki", "1.5k", "1.0001k", "1Pi", "1.0Ki", "2.5e3",
              "999999999999999999", "1000000000000000001", "0.1E"]


# What a ResourceQuota counts, and which of those in whole numbers, by kind of name.
QUOTA_KEYS = ["cpu", "pods", "count/deployments.apps", "requests.example.com/gpu", "example.com/gpu", "gpus", "requests.gpu",
              "storage", "limits.storage", "hugepages-2Mi", "requests.hugepages-1Gi", "limits.hugepages-1Gi",
              "services.nodeports", "kubernetes.io/thing"]


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("key", ["cpu", "pods"])
def test_api_and_model_agree_on_every_quantity(kube, key, quantity):
    # The CEL rules and the Python validators share their patterns and lists; this proves
    # they mean the same, so the operator can read whatever the API server stored.
    _agree(kube, {"plan": NO_SUCH_PLAN, "quotaOverrides": {key: quantity}})


@pytest.mark.parametrize("quantity", ["1", "500m", 3])
@pytest.mark.parametrize("key", QUOTA_KEYS)
def test_api_and_model_agree_on_every_kind_of_quota_name(kube, key, quantity):
    _agree(kube, {"plan": NO_SUCH_PLAN, "quotaOverrides": {key: quantity}})


def _agree(kube, spec: dict) -> None:
    body = {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": unique("dry-run")}, "spec": spec}
    try:
        kube.request("POST", TENANT.collection_path(), [("dryRun", "All")], body)
        server_accepts = True
    except ApiException as error:
        assert error.status == 422, error.body
        server_accepts = False
    try:
        TenantSpec.model_validate(spec)
        model_accepts = True
    except ValidationError:
        model_accepts = False

    assert server_accepts == model_accepts
