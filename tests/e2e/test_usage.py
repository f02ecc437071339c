"""What a tenant uses, where cluster admins look: status.usage and the per-tenant metrics.

Measured by the operator at each resync (every 2 s here), compared with what
PostgreSQL's own functions say and with the ResourceQuota's status.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tenant_operator.dev.wait import wait_for

from .migration_data import tenant_secret

pytestmark = pytest.mark.e2e


def usage(tenants, name: str) -> dict:
    return ((tenants.get(name) or {}).get("status") or {}).get("usage") or {}


def metric(operator, name: str, tenant: str) -> float | None:
    found = re.search(rf'^{name}{{tenant="{re.escape(tenant)}"}} (\S+)$', operator.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else None


def test_shared_tenant_usage_matches_postgres_and_its_quota(kube, tenants, operator, postgres, shared_database):
    name = tenants.unique("usage")
    tenants.create(name, plan="starter")
    tenants.wait_ready(name)
    schema = "tenant_" + name.replace("-", "_")
    url = tenant_secret(kube, name)["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO items (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 20000) g")
    held = [psycopg.connect(url, autocommit=True) for _ in range(2)]
    try:
        with psycopg.connect(make_conninfo(postgres.url(), dbname=shared_database), autocommit=True) as admin:
            def actual() -> int:
                return admin.execute(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                    [schema]).fetchone()[0]

            assert actual() > 5_000_000  # 20,000 rows of 256 characters, with its index and TOAST
            # The metric is exact at each resync; the status moves in steps of 1 MiB (or 1%), since
            # autovacuum's maps change an idle table's size by kilobytes.
            wait_for(lambda: metric(operator, "tenant_database_bytes", name) == actual(), timeout=60,
                     what="tenant_database_bytes to be the tenant's pg_total_relation_size")
            wait_for(lambda: usage(tenants, name).get("connections") == 2
                     and abs(usage(tenants, name).get("databaseBytes", 0) - actual()) < 1024 * 1024, timeout=60,
                     what="status.usage to show the tenant's bytes and its two sessions")
        quota = usage(tenants, name)["quota"]
        assert quota["pods"] == {"used": "0", "hard": "20"}
        assert quota["requests.memory"]["hard"] == "4Gi"
        assert metric(operator, "tenant_database_connections", name) == 2
        assert re.search(rf'^tenant_quota_used_ratio{{resource="pods",tenant="{name}"}} 0\.0$', operator.metrics(),
                         re.MULTILINE)
    finally:
        for conn in held:
            conn.close()
    wait_for(lambda: usage(tenants, name).get("connections") == 0, timeout=60, what="the sessions gone from status")

    tenants.delete(name)
    tenants.wait_gone(name)
    assert metric(operator, "tenant_database_bytes", name) is None  # one series per tenant, gone with it


def test_isolated_tenant_usage_is_its_database_size(kube, tenants, postgres, operator):
    name = tenants.unique("usage-iso")
    tenants.create(name, plan="professional", tier="isolated")
    tenants.wait_ready(name)
    database = "tenant_" + name.replace("-", "_")
    with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 50000) g")
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        def size() -> int:
            return admin.execute("SELECT pg_database_size(%s)", [database]).fetchone()[0]

        wait_for(lambda: metric(operator, "tenant_database_bytes", name) == size(), timeout=60,
                 what="tenant_database_bytes to be the isolated database's size")
        wait_for(lambda: abs(usage(tenants, name).get("databaseBytes", 0) - size()) < 1024 * 1024, timeout=60,
                 what="status.usage to show the isolated database's size")
