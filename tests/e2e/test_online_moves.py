"""Online moves on the real API server and PostgreSQL: the tenant writes through the move, nothing is lost,
and no slot, publication or subscription of the move is left on either side, whichever way it ends.

The tests start and kill operators, so they run on a control plane of their own.
"""

from __future__ import annotations

import random
import re
import threading

import psycopg
import pytest

from tenant_operator.api.kinds import DATABASE_SERVER, TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from . import writers as writers_module
from .migration_data import can_write, read_fingerprint, tenant_secret, write_sample_data
from .writers import Writers, count_writes, wait_for_commits

COUNTERS = 20


class Updater:
    """Increments counters with the tenant's credentials (UPDATEs, which replication must carry too)."""

    def __init__(self, kube, tenant: str):
        self.kube, self.tenant = kube, tenant
        self.committed = [0] * COUNTERS
        self.uncertain = [0] * COUNTERS
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Updater:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(tenant_secret(self.kube, self.tenant)["DATABASE_URL"], autocommit=True,
                                       connect_timeout=3)
            except Exception:  # noqa: BLE001 - refused inside the freeze: try again
                self.failures += 1
                self._stop.wait(0.05)
                continue
            with conn:
                while not self._stop.is_set():
                    counter = random.randrange(COUNTERS)
                    try:
                        conn.execute("UPDATE counters SET n = n + 1 WHERE id = %s", [counter])
                    except Exception:  # noqa: BLE001 - the session ended: whether it committed is unknown
                        self.uncertain[counter] += 1
                        self.failures += 1
                        break
                    self.committed[counter] += 1


def ready_tenant(tenants, prefix: str, tier: str = "shared") -> str:
    name = tenants.unique(prefix)
    tenants.create(name, plan="professional", tier=tier)
    tenants.wait_ready(name, timeout=120)
    return name


def tenant_with_load(tenants, kube, tier: str) -> tuple[str, dict, Writers, Updater]:
    name = ready_tenant(tenants, "online", tier)
    url = tenant_secret(kube, name)["DATABASE_URL"]
    write_sample_data(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(writers_module.TABLE)
        conn.execute("CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO counters (id) SELECT generate_series(0, %s)", [COUNTERS - 1])
    before = read_fingerprint(url)
    writers, updater = Writers(kube, name, count=2).start(), Updater(kube, name).start()
    wait_for_commits(writers, 50)
    return name, before, writers, updater


def check_nothing_lost(kube, name: str, before: dict, writers: Writers, updater: Updater) -> None:
    url = tenant_secret(kube, name)["DATABASE_URL"]
    count = count_writes(url, writers)
    assert count.missing == [] and count.changed_ids == [] and count.phantoms == [], count
    with psycopg.connect(url, autocommit=True) as conn:
        found = dict(conn.execute("SELECT id, n FROM counters").fetchall())
    for counter in range(COUNTERS):
        # Every committed increment is there once; an uncertain one (its session cut) may or may not be.
        assert updater.committed[counter] <= found[counter] <= updater.committed[counter] + updater.uncertain[
            counter], (counter, found[counter], updater.committed[counter], updater.uncertain[counter])
    assert read_fingerprint(url) == before
    assert can_write(url)


def move_objects(postgres) -> list[str]:
    """Every slot, publication and subscription of a move on the server, in any database."""
    found = []
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        found += [f"slot {r[0]}" for r in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'tenancy\\_move\\_%'").fetchall()]
        found += [f"subscription {r[0]}" for r in conn.execute(
            "SELECT subname FROM pg_subscription WHERE subname LIKE 'tenancy\\_move\\_%'").fetchall()]
        databases = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()]
    for database in databases:
        with psycopg.connect(postgres.dsn(dbname=database), autocommit=True) as conn:
            found += [f"publication {r[0]} in {database}" for r in conn.execute(
                "SELECT pubname FROM pg_publication WHERE pubname LIKE 'tenancy\\_move\\_%'").fetchall()]
    return found


def move(fault_tenants, fault_kube, name: str, tier: str, timeout: float = 180) -> dict:
    generation = fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": tier}})["metadata"]["generation"]
    return wait_for(lambda: (c := fault_tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted"
                    and c["observedGeneration"] == generation and c, timeout=timeout, what=f"{name} to reach {tier}")


def test_online_moves_both_ways_keep_every_write_and_leave_no_replication(launch, fault_tenants, fault_kube,
                                                                         postgres):
    operator = launch()
    try:
        # The server says up front that moves off it can be online.
        online = wait_for(lambda: next((c for c in ((fault_kube.read(ObjectRef(DATABASE_SERVER, "default")) or {})
                                                    .get("status") or {}).get("conditions", [])
                                        if c["type"] == "OnlineMoves"), None), what="the server's OnlineMoves")
        assert (online["status"], online["reason"]) == ("True", "LogicalReplication"), online
        name, before, writers, updater = tenant_with_load(fault_tenants, fault_kube, "shared")
        freezes = []
        try:
            for tier in ("isolated", "shared"):
                done = move(fault_tenants, fault_kube, name, tier)
                assert "online" in done["message"], done["message"]
                freezes.append(float(re.search(r"writes frozen ([\d.]+)s", done["message"]).group(1)))
                wait_for_commits(writers, writers.committed_total() + 50)
        finally:
            writers.stop()
            updater.stop()
        print(f"\nonline moves: freezes {freezes}; inserts {writers.committed_total()}, updates "
              f"{sum(updater.committed)}, failed attempts {updater.failures}")
        check_nothing_lost(fault_kube, name, before, writers, updater)
        assert move_objects(postgres) == []
    finally:
        operator.stop()


def test_a_tenant_defining_functions_moves_offline_and_says_why(launch, fault_tenants, fault_kube, postgres):
    operator = launch()
    try:
        name = ready_tenant(fault_tenants, "fn")
        with psycopg.connect(tenant_secret(fault_kube, name)["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE FUNCTION positive(x int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT x > 0'")
            conn.execute("CREATE TABLE t (id int PRIMARY KEY CHECK (positive(id)))")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        done = move(fault_tenants, fault_kube, name, "isolated")
        assert "offline" in done["message"], done["message"]
        events = fault_kube.request("GET", "/api/v1/namespaces/default/events",
                                    [("fieldSelector", f"involvedObject.name={name}")])["items"]
        said = [e["message"] for e in events if e.get("reason") == "MigrationMode"]
        assert any("defines 1 function" in message for message in said), said
        assert move_objects(postgres) == []
    finally:
        operator.stop()


@pytest.mark.parametrize("step", ["replicate", "copy"])
def test_operator_killed_in_an_online_move_resumes_and_leaves_no_replication(step, launch, fault_tenants,
                                                                             fault_kube, postgres):
    first = launch()
    try:
        name, before, writers, updater = tenant_with_load(fault_tenants, fault_kube, "shared")
    finally:
        first.stop()
    dying = launch(fault=f"crash:{step}")
    try:
        fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
        wait_for(lambda: dying.process.poll() is not None, timeout=120, what=f"the operator to die in step {step}")
        assert fault_tenants.get(name)["status"]["migration"]["step"] == step
        survivor = launch()
        try:
            wait_for(lambda: (c := fault_tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted",
                     timeout=180, what="the move to finish after the restart")
            fault_tenants.wait_ready(name, timeout=60)
            wait_for_commits(writers, writers.committed_total() + 30)
        finally:
            survivor.stop()
    finally:
        writers.stop()
        updater.stop()
        if dying.process.poll() is None:
            dying.stop()  # it never reached the step: no other test may meet it
    check_nothing_lost(fault_kube, name, before, writers, updater)
    assert move_objects(postgres) == []


def test_a_rolled_back_online_move_leaves_no_replication(launch, fault_tenants, fault_kube, postgres):
    operator = launch(fault="corrupt:copy")
    try:
        name, before, writers, updater = tenant_with_load(fault_tenants, fault_kube, "shared")
        try:
            fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
            fault_tenants.wait_condition(name, "Migrating", "False", reason="VerificationFailed", timeout=180)
            wait_for_commits(writers, writers.committed_total() + 30)  # unfrozen, on its old home
        finally:
            writers.stop()
            updater.stop()
        assert fault_tenants.get(name)["status"]["tier"] == "shared"
        check_nothing_lost(fault_kube, name, before, writers, updater)
        assert move_objects(postgres) == []
    finally:
        operator.stop()


def test_a_tenant_deleted_in_the_middle_of_an_online_move_leaves_no_replication(launch, fault_tenants, fault_kube,
                                                                                postgres):
    first = launch()
    try:
        name, _, writers, updater = tenant_with_load(fault_tenants, fault_kube, "shared")
    finally:
        first.stop()
    writers.stop()
    updater.stop()
    dying = launch(fault="crash:replicate")
    fault_kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
    wait_for(lambda: dying.process.poll() is not None, timeout=120, what="the operator to die while replicating")
    assert move_objects(postgres), "the move had replication to clean up"
    fault_tenants.delete(name)
    survivor = launch()
    try:
        fault_tenants.wait_gone(name, timeout=120)
    finally:
        survivor.stop()
    assert move_objects(postgres) == []


def test_a_tenant_without_a_table_moves_online_at_once(launch, fault_tenants, fault_kube, postgres):
    operator = launch()
    try:
        name = ready_tenant(fault_tenants, "empty")
        done = move(fault_tenants, fault_kube, name, "isolated", timeout=60)
        assert "online" in done["message"], done["message"]
        with psycopg.connect(tenant_secret(fault_kube, name)["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE after_the_move (id int PRIMARY KEY)")
            conn.execute("INSERT INTO after_the_move VALUES (1)")  # it writes in its new home
        assert move_objects(postgres) == []
    finally:
        operator.stop()
