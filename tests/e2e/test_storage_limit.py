"""maxSize: a tenant over it reads but cannot write, whatever its own session tries, and gets writes back under it.

On the real API server and PostgreSQL, with writers on the tenant's own
credentials through the stop and back: every write they were told committed is
there afterwards.
"""

from __future__ import annotations

import copy
import secrets

import psycopg
import pytest

from tenant_operator.api.kinds import TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.wait import wait_for

from .migration_data import tenant_secret
from .writers import TABLE, Writers, count_writes, wait_for_commits

pytestmark = pytest.mark.e2e

# Rows of 1 KiB that do not compress: what they weigh on disk is what they count.
FILL = ("INSERT INTO big (payload) SELECT (SELECT string_agg(md5(random()::text || g || i), '')"
        " FROM generate_series(1, 32) i) FROM generate_series(1, %s) g")


@pytest.fixture
def capped_plan(kube, plans):
    name = f"capped-{secrets.token_hex(3)}"
    spec = copy.deepcopy(plans["starter"]["spec"])
    spec["database"] = {"limits": {"maxSize": "3Mi"}}
    kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                "metadata": {"name": name}, "spec": spec})
    yield name
    kube.delete(ObjectRef(TENANT_PLAN, name))


def both_tiers_plan(kube, plans, name: str, max_size: str) -> str:
    """The sample plan with both tiers (professional), capped at `max_size`; the caller deletes it."""
    spec = copy.deepcopy(plans["professional"]["spec"])
    spec["database"] = {"limits": {"maxSize": max_size}}
    kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                "metadata": {"name": name}, "spec": spec})
    return name


def storage_condition(tenants, name: str) -> dict:
    return tenants.condition(name, "StorageExceeded") or {}


def refused(conn: psycopg.Connection, statement: str) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    except psycopg.errors.ReadOnlySqlTransaction:
        return True
    return False


def test_over_max_size_reads_go_on_writes_stop_and_return_once_under(kube, tenants, capped_plan):
    name = tenants.unique("capped")
    role = "tenant_" + name.replace("-", "_")
    tenants.create(name, plan=capped_plan)
    tenants.wait_ready(name)
    url = tenant_secret(kube, name)["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conn.execute(TABLE)
        conn.execute("CREATE FUNCTION sneak() RETURNS void SECURITY DEFINER LANGUAGE sql"
                     " AS $$ INSERT INTO big (payload) VALUES ('through a definer') $$")
        conn.execute(FILL, [1000])
    wait_for(lambda: storage_condition(tenants, name).get("reason") == "WithinMaxSize", timeout=60,
             what="StorageExceeded False while under 3Mi")

    writers = Writers(kube, name, count=2).start()
    wait_for_commits(writers, more_than=50)
    # A transaction the app left open holds a lock the stop needs: it is ended, the stop does not hang.
    idle = psycopg.connect(url)
    idle.execute("SELECT count(*) FROM big")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, [3000])
    stopped = wait_for(lambda: storage_condition(tenants, name).get("status") == "True"
                       and storage_condition(tenants, name), timeout=60, what="StorageExceeded True over 3Mi")
    assert "3Mi" in stopped["message"] and "writes are stopped" in stopped["message"]
    assert tenants.get(name)["status"]["phase"] == "Degraded"
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    idle.close()
    # The writers' inserts are refused from now on; what they were told committed is all there.
    wait_for(lambda: any("InsufficientPrivilege" in e for w in writers.writers for e in w.errors[-3:]),
             timeout=30, what="the writers' inserts to be refused")
    writers.stop()

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 4000  # reads go on
        # Whatever its own session can run to win writing back (a GRANT to itself only warns: it grants nothing).
        for attempt in ("SET default_transaction_read_only = off", f"GRANT INSERT ON big TO {role}",
                        f"GRANT ALL ON SCHEMA {role} TO {role}",
                        f"ALTER ROLE {role} SET default_transaction_read_only = off"):
            try:
                conn.execute(attempt)
            except psycopg.errors.InsufficientPrivilege:
                pass
        for statement in ("INSERT INTO big (payload) VALUES ('x')", "UPDATE big SET payload = 'y' WHERE id = 1",
                          "SELECT sneak()", "CREATE TABLE more (id int)", f"ALTER TABLE big OWNER TO {role}",
                          "CREATE SCHEMA elsewhere", f"SET ROLE tenancy_owner_{name.replace('-', '_')}",
                          "ALTER TABLE big DISABLE TRIGGER ALL", "COPY big (payload) FROM STDIN"):
            assert refused(conn, statement), f"{statement!r} was allowed over maxSize"
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 4000
    count = count_writes(url, writers)
    assert count.committed > 50 and not count.missing and not count.phantoms and not count.changed_ids, count

    # Making room: the tenant deletes its rows; the operator vacuums and gives writes back. The writers'
    # table goes too: they wrote megabytes while the stop waited for the open transaction.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM big")
        conn.execute("TRUNCATE writes")
    wait_for(lambda: storage_condition(tenants, name).get("reason") == "WithinMaxSize", timeout=60,
             what="StorageExceeded False after the rows were deleted")
    tenants.wait_ready(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO big (payload) VALUES ('back')")
        conn.execute("CREATE TABLE after_the_stop (id int)")  # it owns its schema again
        owner = conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
                             [role]).fetchone()[0]
    assert owner == role
    assert tenants.get(name)["status"]["phase"] == "Ready"
    reasons = {e["reason"] for e in kube.request("GET", "/api/v1/namespaces/default/events")["items"]
               if e["involvedObject"].get("name") == name}
    assert {"StorageExceeded", "StorageRestored"} <= reasons


def test_raising_the_plan_lifts_the_stop(kube, tenants, capped_plan):
    name = tenants.unique("raised")
    tenants.create(name, plan=capped_plan)
    tenants.wait_ready(name)
    url = tenant_secret(kube, name)["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conn.execute(FILL, [4000])
    wait_for(lambda: storage_condition(tenants, name).get("status") == "True", timeout=60, what="the stop")
    with psycopg.connect(url, autocommit=True) as conn:
        assert refused(conn, "INSERT INTO big (payload) VALUES ('x')")

    def usage() -> dict:
        return (tenants.get(name).get("status") or {}).get("usage") or {}

    wait_for(lambda: usage().get("maxSizeBytes") == 3 * 2**20 and int(usage()["maxSizeShare"].rstrip("%")) >= 100,
             timeout=60, what="status.usage to show the share of maxSize over 100%")

    kube.merge_patch(ObjectRef(TENANT_PLAN, capped_plan), {"spec": {"database": {"limits": {"maxSize": "64Mi"}}}})
    wait_for(lambda: storage_condition(tenants, name).get("reason") == "WithinMaxSize", timeout=60,
             what="the stop lifted by the plan's new maxSize")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO big (payload) VALUES ('x')")
    wait_for(lambda: usage().get("maxSizeBytes") == 64 * 2**20 and int(usage()["maxSizeShare"].rstrip("%")) < 100,
             timeout=60, what="status.usage to follow the new maxSize")


def test_isolated_tenant_over_max_size_cannot_write_even_in_a_schema_of_its_own(kube, tenants, plans):
    name = both_tiers_plan(kube, plans, f"capped-iso-{secrets.token_hex(3)}", "12Mi")
    try:
        tenants.create(name, plan=name, tier="isolated")
        tenants.wait_ready(name, timeout=120)
        url = tenant_secret(kube, name)["DATABASE_URL"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE big (id bigserial PRIMARY KEY, payload text NOT NULL)")
            conn.execute(FILL, [6000])
        wait_for(lambda: storage_condition(tenants, name).get("status") == "True", timeout=60,
                 what="the isolated tenant's stop over 12Mi (its whole database counts)")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 6000
            for statement in ("INSERT INTO big (payload) VALUES ('x')", "CREATE SCHEMA elsewhere",
                              "CREATE TABLE public.planted (id int)", "CREATE TABLE more (id int)"):
                assert refused(conn, statement), f"{statement!r} was allowed over maxSize"
            conn.execute("TRUNCATE big")
        wait_for(lambda: storage_condition(tenants, name).get("reason") == "WithinMaxSize", timeout=60,
                 what="writes back after TRUNCATE")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO big (payload) VALUES ('back')")
            conn.execute("CREATE SCHEMA mine")  # it owns its database again
    finally:
        tenants.delete(name)
        tenants.wait_gone(name, timeout=120)
        kube.delete(ObjectRef(TENANT_PLAN, name))


def test_a_stopped_tenant_moves_offline_stays_read_only_and_loses_nothing(kube, tenants, plans):
    # Moving a stopped tenant must not lift its stop early (an online move would let it write through the
    # replication), nor lose a row: it moves offline, its writers refused throughout, and is stopped again
    # in its new home while it is still over.
    plan = both_tiers_plan(kube, plans, f"capped-move-{secrets.token_hex(3)}", "12Mi")
    name = tenants.unique("capped-move")
    try:
        tenants.create(name, plan=plan)
        tenants.wait_ready(name, timeout=120)
        url = tenant_secret(kube, name)["DATABASE_URL"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE big (id bigserial PRIMARY KEY, payload text NOT NULL)")
            conn.execute(TABLE)
        writers = Writers(kube, name, count=2).start()
        wait_for_commits(writers, more_than=50)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL, [14000])
        wait_for(lambda: storage_condition(tenants, name).get("status") == "True", timeout=60,
                 what="the stop over 12Mi")
        wait_for(lambda: any("InsufficientPrivilege" in e for w in writers.writers for e in w.errors[-3:]),
                 timeout=30, what="the writers' inserts to be refused")
        committed = sum(len(w.committed) for w in writers.writers)

        generation = kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})["metadata"]["generation"]
        done = wait_for(lambda: (c := tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted"
                        and c["observedGeneration"] == generation and c, timeout=180, what=f"{name} on isolated")
        writers.stop()
        assert "offline" in done["message"], done["message"]

        events = kube.request("GET", "/api/v1/namespaces/default/events",
                              [("fieldSelector", f"involvedObject.name={name}")])["items"]
        said = [e["message"] for e in events if e.get("reason") == "MigrationMode"]
        assert said and all(message.startswith("offline") and "maxSize" in message for message in said), said
        assert sum(len(w.committed) for w in writers.writers) == committed  # not one write while stopped
        url = tenant_secret(kube, name)["DATABASE_URL"]
        count = count_writes(url, writers)
        assert count.committed > 50 and not count.missing and not count.phantoms and not count.changed_ids, count
        wait_for(lambda: storage_condition(tenants, name).get("status") == "True", timeout=60,
                 what="the stop in its new home")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 14000
            assert refused(conn, "INSERT INTO big (payload) VALUES ('after the move')")
    finally:
        tenants.delete(name)
        tenants.wait_gone(name, timeout=120)
        kube.delete(ObjectRef(TENANT_PLAN, plan))
