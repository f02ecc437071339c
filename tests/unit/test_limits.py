"""Database limits: what a plan and a tenant's overrides may say, and what the role gets from them."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from tenant_operator.api import limits
from tenant_operator.api.plan import TenantPlanSpec
from tenant_operator.api.tenant import TenantSpec
from tenant_operator.dev.cluster import REPO_ROOT


def plan_limits(**values) -> limits.DatabaseLimits:
    return TenantPlanSpec.model_validate({"database": {"limits": values}}).database.limits


def test_limits_become_role_settings_by_postgres_name():
    bounds = plan_limits(statementTimeout="30s", idleInTransactionSessionTimeout="5min", lockTimeout="10s",
                         workMem="16MB", tempFileLimit="1GB", connectionLimit=7)

    assert limits.role_settings(bounds) == {
        "statement_timeout": "30s", "idle_in_transaction_session_timeout": "5min", "lock_timeout": "10s",
        "work_mem": "16MB", "temp_file_limit": "1GB"}
    assert limits.connection_limit(bounds) == 7


def test_no_limits_mean_server_defaults_and_twenty_connections():
    bounds = plan_limits()

    assert limits.role_settings(bounds) == {}
    assert limits.connection_limit(bounds) == limits.DEFAULT_CONNECTION_LIMIT == 20


def test_tenant_overrides_replace_only_what_they_set():
    plan = plan_limits(statementTimeout="30s", workMem="16MB", connectionLimit=10)
    tenant = TenantSpec.model_validate({"plan": "p", "databaseOverrides": {"statementTimeout": "2min"}})

    bounds = limits.effective(plan, tenant.database_overrides)

    assert limits.role_settings(bounds) == {"statement_timeout": "2min", "work_mem": "16MB"}
    assert limits.connection_limit(bounds) == 10


@pytest.mark.parametrize("field,value,message", [
    ("statementTimeout", "30 seconds", "PostgreSQL time unit"),
    ("statementTimeout", "1.5.0s", "PostgreSQL time unit"),
    ("statementTimeout", "30sec", "PostgreSQL time unit"),
    ("lockTimeout", "-1s", "PostgreSQL time unit"),
    ("workMem", "16Mi", "PostgreSQL memory unit"),
    ("tempFileLimit", "1gb", "PostgreSQL memory unit"),
    ("workMem", "1MB;RESET x", "PostgreSQL memory unit"),
])
def test_values_postgres_would_not_read_are_refused_with_what_is_allowed(field, value, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        plan_limits(**{field: value})


@pytest.mark.parametrize("value", [0, 10001])
def test_connection_limit_is_bounded(value):
    with pytest.raises(pydantic.ValidationError):
        plan_limits(connectionLimit=value)


def test_the_crd_refuses_the_same_with_the_same_words():
    crd = yaml.safe_load((REPO_ROOT / "crds" / "tenancy.dev_tenantplans.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    fields = spec["properties"]["database"]["properties"]["limits"]["properties"]

    for name, message in (("statementTimeout", limits.DURATION_MESSAGE), ("workMem", limits.SIZE_MESSAGE)):
        (rule,) = fields[name]["x-kubernetes-validations"]
        assert rule["message"] == message
    assert fields["connectionLimit"]["minimum"] == 1


@pytest.mark.parametrize("quantity,expected", [("3Mi", 3 * 1024 * 1024), ("10Gi", 10 * 1024**3), ("500M", 500 * 10**6),
                                                    ("1Mi", 2**20), ("1048576", 2**20)])
def test_max_size_is_a_kubernetes_quantity_of_bytes(quantity, expected):
    assert limits.max_bytes(plan_limits(maxSize=quantity)) == expected


def test_no_max_size_means_no_stop():
    assert limits.max_bytes(plan_limits()) is None


def test_max_size_refuses_what_is_not_a_quantity():
    with pytest.raises(pydantic.ValidationError, match="quantity"):
        plan_limits(maxSize="ten gigs")


@pytest.mark.parametrize("quantity", ["500m", "1023Ki", "1048575", "1.5", "1048576.5", "0"])
def test_max_size_refuses_fractions_of_a_byte_and_less_than_a_mebibyte(quantity):
    with pytest.raises(pydantic.ValidationError, match="whole number of bytes, at least 1Mi"):
        plan_limits(maxSize=quantity)


def test_the_crd_says_so_for_max_size_too():
    crd = yaml.safe_load((REPO_ROOT / "crds" / "tenancy.dev_tenantplans.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = spec["properties"]["database"]["properties"]["limits"]["x-kubernetes-validations"]
    assert rule["message"] == limits.MAX_SIZE_MESSAGE and rule["fieldPath"] == ".maxSize"
    assert "quantity('1Mi')" in rule["rule"] and "isInteger()" in rule["rule"]


@pytest.mark.parametrize("field,value", [("statementTimeout", "0"), ("statementTimeout", "1.5s"),
                                         ("lockTimeout", "250"), ("workMem", "4096"), ("tempFileLimit", "1GB")])
def test_what_postgres_accepts_is_accepted(field, value):
    assert limits.role_settings(plan_limits(**{field: value}))
