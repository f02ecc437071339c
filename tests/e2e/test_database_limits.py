"""A plan's database limits on its tenants' roles: what a tenant meets, and that plan changes and drift follow.

On the real API server and PostgreSQL: the limits are read back from pg_roles,
and met by the tenants' own sessions (their Secrets' credentials).
"""

from __future__ import annotations

import copy
import secrets

import psycopg
import pytest
from kubernetes.client.exceptions import ApiException
from psycopg.conninfo import make_conninfo

from tenant_operator.api import limits
from tenant_operator.api.kinds import TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.wait import wait_for

from .migration_data import tenant_secret

pytestmark = pytest.mark.e2e


@pytest.fixture
def make_plan(kube, plans):
    made = []

    def make(**database_limits) -> str:
        name = f"limits-{secrets.token_hex(3)}"
        spec = copy.deepcopy(plans["starter"]["spec"])
        spec["database"] = {"limits": database_limits}
        kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                    "metadata": {"name": name}, "spec": spec})
        made.append(name)
        return name

    yield make
    for name in made:
        kube.delete(ObjectRef(TENANT_PLAN, name))


@pytest.fixture
def admin(postgres, shared_database):
    with psycopg.connect(make_conninfo(postgres.url(), dbname=shared_database), autocommit=True) as conn:
        yield conn


def role_limits(admin, tenant: str) -> tuple[int, dict[str, str]]:
    limit, config = admin.execute("SELECT rolconnlimit, rolconfig FROM pg_roles WHERE rolname = %s",
                                  ["tenant_" + tenant.replace("-", "_")]).fetchone()
    settings = dict(entry.split("=", 1) for entry in config or [])
    return limit, {key: value for key, value in settings.items() if key in limits.ROLE_SETTINGS.values()}


def test_plan_limits_bound_its_tenants_and_follow_plan_changes(kube, tenants, make_plan, admin):
    tight = make_plan(statementTimeout="1s", lockTimeout="2s", workMem="4MB", connectionLimit=3)
    roomy = make_plan(statementTimeout="30s", connectionLimit=10)
    small, large = tenants.unique("small"), tenants.unique("large")
    tenants.create(small, plan=tight)
    tenants.create(large, plan=roomy)
    tenants.wait_ready(small)
    tenants.wait_ready(large)

    assert role_limits(admin, small) == (3, {"statement_timeout": "1s", "lock_timeout": "2s", "work_mem": "4MB"})
    assert role_limits(admin, large) == (10, {"statement_timeout": "30s"})

    small_url, large_url = (tenant_secret(kube, name)["DATABASE_URL"] for name in (small, large))
    with psycopg.connect(small_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1.5)")
    with psycopg.connect(large_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_sleep(1.5), 1").fetchone()[1] == 1  # the same query completes

    held = [psycopg.connect(small_url, autocommit=True) for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            psycopg.connect(small_url, connect_timeout=5).close()
        with psycopg.connect(large_url, autocommit=True) as conn:  # the others still get in
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in held:
            conn.close()

    # A plan change reaches the tenant: one value changed, one dropped (back to the server's default).
    kube.merge_patch(ObjectRef(TENANT_PLAN, tight), {"spec": {"database": {"limits": {
        "statementTimeout": "3s", "lockTimeout": None}}}})
    wait_for(lambda: role_limits(admin, small) == (3, {"statement_timeout": "3s", "work_mem": "4MB"}),
             timeout=60, what="the plan change on the tenant's role")
    with psycopg.connect(small_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_sleep(1.5), 1").fetchone()[1] == 1

    # The tenant's own override wins over its plan's value.
    kube.merge_patch(ObjectRef(TENANT, small), {"spec": {"databaseOverrides": {"connectionLimit": 5}}})
    wait_for(lambda: role_limits(admin, small)[0] == 5, timeout=60, what="the override on the tenant's role")


def test_limits_changed_behind_the_operators_back_are_put_back(tenants, make_plan, admin):
    plan = make_plan(statementTimeout="5s", connectionLimit=4)
    name = tenants.unique("drift")
    tenants.create(name, plan=plan)
    tenants.wait_ready(name)
    role = "tenant_" + name.replace("-", "_")

    admin.execute(f'ALTER ROLE "{role}" RESET statement_timeout')
    admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
    admin.execute(f"ALTER ROLE \"{role}\" SET work_mem = '1GB'")

    wait_for(lambda: role_limits(admin, name) == (4, {"statement_timeout": "5s"}), timeout=60,
             what="the resync to put the plan's limits back")


@pytest.mark.parametrize("field,value,says", [
    ("statementTimeout", "1 hour", "PostgreSQL time unit"),
    ("workMem", "64Mi", "PostgreSQL memory unit"),
    ("connectionLimit", 0, "connectionLimit"),
    ("maxSize", "500m", "whole number of bytes, at least 1Mi"),  # half a byte: it would stop every tenant
    ("maxSize", 1000, "whole number of bytes, at least 1Mi"),
    ("maxSize", "1048576500m", "whole number of bytes, at least 1Mi"),
])
def test_api_refuses_limits_postgres_would_not_read(kube, plans, field, value, says):
    spec = copy.deepcopy(plans["starter"]["spec"])
    spec["database"] = {"limits": {field: value}}
    with pytest.raises(ApiException) as refused:
        kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                    "metadata": {"name": f"bad-{secrets.token_hex(3)}"},
                                                    "spec": spec})
    body = refused.value.body
    assert refused.value.status == 422
    assert says in (body.decode() if isinstance(body, bytes) else str(body))


def test_a_limit_the_server_refuses_is_a_condition_not_a_crash(kube, tenants, make_plan):
    plan = make_plan(workMem="1kB")  # the CRD's pattern allows it; PostgreSQL's minimum is 64kB
    name = tenants.unique("badlimit")
    tenants.create(name, plan=plan)
    condition = tenants.wait_condition(name, "DatabaseReady", status="False", reason="InvalidDatabaseLimits")
    assert "work_mem" in condition["message"] and plan in condition["message"]
