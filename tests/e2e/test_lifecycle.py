"""Deletion under each reclaim policy, adoption of retained data, suspend and resume: real API server + PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from .conftest import namespaced

# --- helpers ---------------------------------------------------------------------------

def secret_values(kube, name: str) -> dict[str, str]:
    secret = namespaced(kube, "v1", "Secret", "tenant-db", f"tenant-{name}")
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def routes(kube) -> dict[str, str]:
    return (namespaced(kube, "v1", "ConfigMap", "tenant-routes", "tenancy-shared") or {}).get("data") or {}


def sql_name(name: str) -> str:
    return "tenant_" + name.replace("-", "_")


def tenant_events(kube, name: str) -> list[dict]:
    found = kube.request("GET", "/api/v1/namespaces/default/events",
                         [("fieldSelector", f"involvedObject.kind=Tenant,involvedObject.name={name}")])
    return sorted(found["items"], key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))


def event(kube, name: str, reason: str) -> dict:
    return wait_for(lambda: next((e for e in tenant_events(kube, name) if e["reason"] == reason), None),
                    timeout=30, what=f"event {reason} on tenant {name}")


def set_suspended(kube, name: str, suspended: bool) -> None:
    kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"suspended": suspended}})


def write_rows(url: str, orders: int = 250, customers: int = 17) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, total numeric)")
        conn.execute("INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, %s) i",
                     [customers])
        conn.execute("INSERT INTO orders (customer, total) SELECT 1 + i %% %s, i * 1.5 FROM generate_series(1, %s) i",
                     [customers, orders])
    return {"customers": customers, "orders": orders}


def row_counts(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", [schema]).fetchall()]
        return {table: conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()[0] for table in tables}


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is not None


def database_exists(postgres, database: str) -> bool:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is not None


def role_login(postgres, role: str) -> bool | None:
    """None when the role does not exist, else whether it may log in."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        return None if row is None else row[0]


def snapshot_from_event(kube, name: str) -> Path:
    message = event(kube, name, "SnapshotTaken")["message"]
    match = re.search(r"dumped to (\S+\.dump) ", message)
    assert match, message
    return Path(match.group(1))


def restore_into_fresh_database(postgres, dump: Path) -> str:
    """What an operator of the platform does with a snapshot: pg_restore into a new database."""
    fresh = f"restored_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh)))
    conninfo = f"host={postgres.host} port={postgres.port} user={postgres.user} dbname={fresh}"
    result = subprocess.run([str(postgres.bin_dir / "pg_restore"), "--no-owner", "--no-privileges",
                             "--exit-on-error", f"--dbname={conninfo}", str(dump)],
                            env={**os.environ, "PGPASSWORD": postgres.password}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return postgres.dsn(dbname=fresh)


def login_refused(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        return "not permitted to log in" in str(error)
    return False


def login_works(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


# --- Retain ----------------------------------------------------------------------------

def test_retain_keeps_data_blocks_login_and_says_where(tenants, kube, postgres, shared_database):
    name = tenants.unique("retain")
    tenants.create(name, plan="starter")  # Retain is the default
    tenants.wait_ready(name)
    before = secret_values(kube, name)
    counts = write_rows(before["DATABASE_URL"])
    assert name in routes(kube)

    tenants.delete(name)
    condition = tenants.wait_condition(name, "Ready", "False", reason="DataRetained")
    assert tenants.get(name)["status"]["phase"] == "Deleting"
    where = f"schema {sql_name(name)} in database {shared_database} kept; role {sql_name(name)} cannot log in"
    assert where in condition["message"]
    tenants.wait_gone(name)

    assert where in event(kube, name, "DataRetained")["message"]
    assert namespaced(kube, "v1", "Namespace", f"tenant-{name}") is None
    assert name not in routes(kube)
    assert row_counts(postgres.dsn(dbname=shared_database), sql_name(name)) == counts
    assert role_login(postgres, sql_name(name)) is False
    assert login_refused(before["DATABASE_URL"])


def test_recreated_tenant_adopts_retained_data_with_a_new_secret(tenants, kube, postgres, shared_database):
    name = tenants.unique("adopt")
    tenants.create(name, plan="starter", database={"reclaimPolicy": "Retain"})
    tenants.wait_ready(name)
    old = secret_values(kube, name)
    counts = write_rows(old["DATABASE_URL"])
    tenants.delete(name)
    tenants.wait_gone(name)

    tenants.create(name, plan="starter")
    tenants.wait_ready(name)
    new = secret_values(kube, name)

    assert new["password"] != old["password"]
    with psycopg.connect(new["DATABASE_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == counts["orders"]
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == counts["customers"]
        conn.execute("INSERT INTO orders (customer, total) VALUES (1, 9.99)")  # and it is the owner again
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(old["DATABASE_URL"], connect_timeout=5)
    assert json.loads(routes(kube)[name])["state"] == "active"


# --- Delete ----------------------------------------------------------------------------

def test_delete_drops_shared_schema_and_role(tenants, kube, postgres, shared_database):
    name = tenants.unique("delete")
    tenants.create(name, plan="starter", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name)
    write_rows(secret_values(kube, name)["DATABASE_URL"])

    tenants.delete(name)
    tenants.wait_gone(name)

    assert not schema_exists(postgres.dsn(dbname=shared_database), sql_name(name))
    assert role_login(postgres, sql_name(name)) is None
    assert "dropped" in event(kube, name, "DataDeleted")["message"]
    assert namespaced(kube, "v1", "Namespace", f"tenant-{name}") is None
    assert name not in routes(kube)


def test_delete_drops_isolated_database_and_role(tenants, kube, postgres):
    name = tenants.unique("deliso")
    tenants.create(name, plan="professional", tier="isolated", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    write_rows(secret_values(kube, name)["DATABASE_URL"])

    tenants.delete(name)
    tenants.wait_gone(name, timeout=120)

    assert not database_exists(postgres, sql_name(name))
    assert role_login(postgres, sql_name(name)) is None


# --- Snapshot --------------------------------------------------------------------------

def test_snapshot_of_shared_tenant_restores_with_equal_row_counts(tenants, kube, postgres, shared_database):
    name = tenants.unique("snap")
    tenants.create(name, plan="starter", database={"reclaimPolicy": "Snapshot"})
    tenants.wait_ready(name)
    counts = write_rows(secret_values(kube, name)["DATABASE_URL"], orders=1000, customers=40)

    tenants.delete(name)
    tenants.wait_gone(name)

    dump = snapshot_from_event(kube, name)
    try:
        assert dump.name.startswith(f"{name}-") and dump.exists()
        assert dump.stat().st_mode & 0o777 == 0o600
        assert not schema_exists(postgres.dsn(dbname=shared_database), sql_name(name))
        assert role_login(postgres, sql_name(name)) is None

        restored = restore_into_fresh_database(postgres, dump)
        assert row_counts(restored, sql_name(name)) == counts
        # Only this tenant's schema is in the dump.
        with psycopg.connect(restored) as conn:
            schemas = {r[0] for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'").fetchall()}
        assert schemas == {sql_name(name)}
    finally:
        dump.unlink(missing_ok=True)


def test_snapshot_of_isolated_tenant_is_its_whole_database(tenants, kube, postgres):
    name = tenants.unique("snapiso")
    tenants.create(name, plan="professional", tier="isolated", database={"reclaimPolicy": "Snapshot"})
    tenants.wait_ready(name, timeout=120)
    counts = write_rows(secret_values(kube, name)["DATABASE_URL"], orders=500, customers=9)

    tenants.delete(name)
    tenants.wait_gone(name, timeout=120)

    dump = snapshot_from_event(kube, name)
    try:
        assert not database_exists(postgres, sql_name(name))
        restored = restore_into_fresh_database(postgres, dump)
        assert row_counts(restored, sql_name(name)) == counts
    finally:
        dump.unlink(missing_ok=True)


def test_failed_snapshot_drops_nothing_then_completes_on_retry(tenants, kube, postgres, shared_database):
    """A long transaction holds a lock pg_dump needs: the dump fails, nothing is dropped, the retry succeeds."""
    name = tenants.unique("snapfail")
    tenants.create(name, plan="starter", database={"reclaimPolicy": "Snapshot"})
    tenants.wait_ready(name)
    counts = write_rows(secret_values(kube, name)["DATABASE_URL"])
    data_dsn = postgres.dsn(dbname=shared_database)

    blocker = psycopg.connect(data_dsn)
    try:
        blocker.execute(sql.SQL("LOCK TABLE {}.orders IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(sql_name(name))))
        tenants.delete(name)
        condition = tenants.wait_condition(name, "Ready", "False", reason="SnapshotFailed", timeout=60)
        assert "nothing was dropped" in condition["message"] and "pg_dump" in condition["message"]
        assert tenants.get(name)["status"]["phase"] == "Deleting"
        assert event(kube, name, "SnapshotFailed")["type"] == "Warning"
        assert namespaced(kube, "v1", "Namespace", f"tenant-{name}") is not None
    finally:
        blocker.rollback()
        blocker.close()
    assert row_counts(data_dsn, sql_name(name)) == counts  # nothing was dropped while it failed

    tenants.wait_gone(name, timeout=90)
    dump = snapshot_from_event(kube, name)
    try:
        assert not schema_exists(data_dsn, sql_name(name))
        assert row_counts(restore_into_fresh_database(postgres, dump), sql_name(name)) == counts
        leftovers = [p for p in dump.parent.glob(f"{name}-*") if p != dump]
        assert leftovers == []  # failed attempts leave no partial files
    finally:
        dump.unlink(missing_ok=True)


# --- suspend and resume ----------------------------------------------------------------

def test_suspend_and_resume_isolated_tenant(tenants, kube, postgres):
    name = tenants.unique("suspiso")
    tenants.create(name, plan="professional", tier="isolated")
    tenants.wait_ready(name, timeout=120)
    ns = f"tenant-{name}"
    secret = secret_values(kube, name)
    deployment = namespaced(kube, "apps/v1", "Deployment", "web", ns)
    assert deployment["spec"]["replicas"] == 2
    session = psycopg.connect(secret["DATABASE_URL"], autocommit=True)

    set_suspended(kube, name, True)
    wait_for(lambda: tenants.get(name)["status"]["phase"] == "Suspended", timeout=60, what="phase Suspended")
    assert tenants.condition(name, "WorkloadsReady")["reason"] == "WorkloadsSuspended"
    suspended = namespaced(kube, "apps/v1", "Deployment", "web", ns)
    assert suspended["spec"]["replicas"] == 0
    wait_for(lambda: not namespaced(kube, "apps/v1", "Deployment", "web", ns)["status"].get("replicas"),
             timeout=60, what="the pods to be gone")
    assert login_refused(secret["DATABASE_URL"])
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")  # the open session was ended too
    session.close()
    assert namespaced(kube, "v1", "Service", "web", ns) is not None  # everything else is kept

    set_suspended(kube, name, False)
    wait_for(lambda: tenants.get(name)["status"]["phase"] == "Ready", timeout=120, what="phase Ready")
    assert tenants.condition(name, "WorkloadsReady")["reason"] == "WorkloadsAvailable"
    resumed = namespaced(kube, "apps/v1", "Deployment", "web", ns)
    assert resumed["spec"]["replicas"] == 2
    assert resumed["status"]["availableReplicas"] == 2
    assert resumed["spec"]["template"] == deployment["spec"]["template"]
    assert secret_values(kube, name) == secret  # the same credentials work again
    assert login_works(secret["DATABASE_URL"])


def test_suspend_and_resume_shared_tenant(tenants, kube):
    name = tenants.unique("susp")
    tenants.create(name, plan="starter")
    tenants.wait_ready(name)
    secret = secret_values(kube, name)
    route = json.loads(routes(kube)[name])
    assert route["state"] == "active"

    set_suspended(kube, name, True)
    wait_for(lambda: tenants.get(name)["status"]["phase"] == "Suspended", timeout=60, what="phase Suspended")
    assert json.loads(routes(kube)[name]) == {**route, "state": "suspended"}
    assert login_refused(secret["DATABASE_URL"])

    set_suspended(kube, name, False)
    wait_for(lambda: tenants.get(name)["status"]["phase"] == "Ready", timeout=60, what="phase Ready")
    assert json.loads(routes(kube)[name]) == route
    assert login_works(secret["DATABASE_URL"])
    assert secret_values(kube, name) == secret


# --- after a tier migration --------------------------------------------------------------

def test_delete_after_a_migration_drops_the_quarantined_copy_too(tenants, kube, postgres, shared_database):
    """A finished migration keeps the old copy for a while, owned by the tenant's role: Delete removes it too."""
    name = tenants.unique("movedel")
    tenants.create(name, plan="professional", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name)
    write_rows(secret_values(kube, name)["DATABASE_URL"])
    generation = kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})["metadata"]["generation"]
    wait_for(lambda: (c := tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted"
             and c["observedGeneration"] == generation, timeout=120, what="the move to isolated")
    quarantine = f"{sql_name(name)}$%"
    with psycopg.connect(postgres.dsn(dbname=shared_database), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", [quarantine]).fetchone()[0]

    tenants.delete(name)
    tenants.wait_gone(name, timeout=120)

    with psycopg.connect(postgres.dsn(dbname=shared_database), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", [quarantine]).fetchone()[0] == 0
    assert not database_exists(postgres, sql_name(name))
    assert role_login(postgres, sql_name(name)) is None
