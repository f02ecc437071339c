"""A pool of PostgreSQL servers on the real API server: placement, cordon, pins, moves between servers, drain.

Two PostgreSQL servers of this module's own join the session's (the operator's
DATABASE_URL, the server `default`). Plans here choose them by a label only
this module uses, so the other modules' tenants never land on them.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import shutil

import psycopg
import pytest

from tenant_operator.api.kinds import DATABASE_SERVER, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.postgres import PostgresServer, restart_postgres, start_postgres, stop_postgres
from tenant_operator.dev.wait import wait_for

from . import writers as writers_module
from .migration_data import read_fingerprint, tenant_secret, write_sample_data
from .writers import Writers, count_writes, wait_for_commits

SECRET = KINDS[("v1", "Secret")]
NAMESPACE = "default"


class Pool:
    """This module's servers and the objects naming them."""

    def __init__(self, kube, plans):
        self.kube, self.plans = kube, plans
        self.label = f"pool-{secrets.token_hex(3)}"
        self.servers: dict[str, PostgresServer] = {}
        self.made: list[ObjectRef] = []

    def server(self, name: str, max_tenants: int = 20, **spec) -> PostgresServer:
        if name not in self.servers:
            self.servers[name] = start_postgres()
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-admin", "namespace": NAMESPACE},
                      "data": {"uri": base64.b64encode(self.servers[name].url().encode()).decode()}}
            self.kube.create(SECRET.collection_path(NAMESPACE), secret)
            self.made.append(ObjectRef(SECRET, f"{name}-admin", NAMESPACE))
            body = {"apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseServer",
                    "metadata": {"name": name, "labels": {"pool": self.label}},
                    "spec": {"adminSecretRef": {"namespace": NAMESPACE, "name": f"{name}-admin"},
                             "maxTenants": max_tenants, **spec}}
            self.kube.create(DATABASE_SERVER.collection_path(), body)
            self.made.append(ObjectRef(DATABASE_SERVER, name))
        return self.servers[name]

    def plan(self, like: str = "professional") -> str:
        name = f"{like}-{secrets.token_hex(3)}"
        spec = copy.deepcopy(self.plans[like]["spec"])
        selector = {"matchLabels": {"pool": self.label}}
        spec["database"] = {"servers": {"shared": selector, "isolated": selector}}
        self.kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                         "metadata": {"name": name}, "spec": spec})
        self.made.append(ObjectRef(TENANT_PLAN, name))
        return name

    def patch(self, name: str, spec: dict) -> None:
        self.kube.merge_patch(ObjectRef(DATABASE_SERVER, name), {"spec": spec})

    def status(self, name: str) -> dict:
        return (self.kube.read(ObjectRef(DATABASE_SERVER, name)) or {}).get("status") or {}


@pytest.fixture(scope="module")
def pool(kube, plans, operator):
    made = Pool(kube, plans)
    yield made
    for ref in reversed(made.made):
        made.kube.delete(ref)
    for ref in made.made:
        if ref.kind is DATABASE_SERVER:
            wait_for(lambda ref=ref: made.kube.read(ref) is None, timeout=120, what=f"{ref} to be deleted")
    for server in made.servers.values():
        stop_postgres(server, mode="immediate")
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def server_of(tenants, name: str) -> str:
    return tenants.get(name)["status"]["database"]["server"]


def can_log_in(server: PostgresServer, url: str) -> bool:
    """Whether the tenant's user and password from `url` open a session on `server`."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    try:
        with psycopg.connect(server.dsn(dbname="postgres", user=params["user"], password=params["password"]),
                             connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def test_an_existing_single_server_install_reports_the_default_server(tenants, kube, postgres):
    name = tenants.unique("single")
    tenants.create(name, plan="starter")
    tenant = tenants.wait_ready(name)
    assert tenant["status"]["database"]["server"] == "default"
    assert tenant["status"]["database"]["port"] == postgres.port
    def counted() -> dict | None:
        status = (kube.read(ObjectRef(DATABASE_SERVER, "default")) or {}).get("status") or {}
        listed = status.get("placed") or []
        return status if name in listed or status.get("tenants", 0) > len(listed) else None

    status = wait_for(counted, what="the default server's status to count the new tenant")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    assert status["version"].startswith("15")


def test_tenants_spread_by_free_capacity_and_their_secrets_name_their_server(tenants, kube, pool):
    a, b = pool.server("pg-a", max_tenants=20), pool.server("pg-b", max_tenants=20)
    wait_for(lambda: all(c["status"] == "True" for n in ("pg-a", "pg-b")
                         for c in pool.status(n).get("conditions", []) if c["type"] == "Ready")
             and all(pool.status(n).get("conditions") for n in ("pg-a", "pg-b")), what="both servers Ready")
    plan = pool.plan("starter")
    names = [tenants.unique("spread") for _ in range(30)]
    for name in names:
        tenants.create(name, plan=plan)
    for name in names:
        tenants.wait_ready(name, timeout=240)
    placed = {name: server_of(tenants, name) for name in names}
    counts = {server: list(placed.values()).count(server) for server in ("pg-a", "pg-b")}
    assert sum(counts.values()) == 30, placed
    assert abs(counts["pg-a"] - counts["pg-b"]) <= 1, counts
    by_name = {"pg-a": a, "pg-b": b}
    for name, server in placed.items():
        secret = tenant_secret(kube, name)
        assert int(secret["port"]) == by_name[server].port
        other = by_name["pg-b" if server == "pg-a" else "pg-a"]
        assert can_log_in(by_name[server], secret["DATABASE_URL"])
        assert not can_log_in(other, secret["DATABASE_URL"]), f"{name}'s credentials reach {other.port}"
    wait_for(lambda: pool.status("pg-a").get("tenants") == counts["pg-a"]
             and pool.status("pg-b").get("tenants") == counts["pg-b"], what="the servers' status to count them")
    for name in names:
        tenants.delete(name)
    for name in names:
        tenants.wait_gone(name, timeout=180)


def test_a_cordoned_server_gets_none_and_a_full_one_says_why(tenants, pool):
    pool.server("pg-a", max_tenants=20)
    pool.server("pg-b", max_tenants=20)
    plan = pool.plan("starter")
    pool.patch("pg-b", {"cordoned": True})
    first = [tenants.unique("cordon") for _ in range(3)]
    for name in first:
        tenants.create(name, plan=plan)
    for name in first:
        tenants.wait_ready(name, timeout=120)
        assert server_of(tenants, name) == "pg-a"
    pool.patch("pg-a", {"maxTenants": 3})
    waiting = tenants.unique("full")
    tenants.create(waiting, plan=plan)
    refused = tenants.wait_condition(waiting, "DatabaseReady", "False", "NoServerAvailable", timeout=60)
    assert "pg-a: full (3 of 3 tenants)" in refused["message"], refused["message"]
    assert "pg-b: cordoned" in refused["message"], refused["message"]
    pool.patch("pg-b", {"cordoned": False})
    tenants.wait_ready(waiting, timeout=120)
    assert server_of(tenants, waiting) == "pg-b"
    pool.patch("pg-a", {"maxTenants": 20})


def test_a_pin_places_a_tenant_and_a_pin_change_moves_it_with_every_write(tenants, kube, pool):
    a, b = pool.server("pg-a"), pool.server("pg-b")
    plan = pool.plan("professional")
    name = tenants.unique("pinned")
    tenants.create(name, plan=plan, database={"server": "pg-b", "reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    assert server_of(tenants, name) == "pg-b"
    url = tenant_secret(kube, name)["DATABASE_URL"]
    write_sample_data(url)
    before = read_fingerprint(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(writers_module.TABLE)
    writers = Writers(kube, name, count=3, stubborn=1).start()
    try:
        wait_for_commits(writers, 50)
        generation = kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"database": {"server": "pg-a"}}})[
            "metadata"]["generation"]
        done = wait_for(lambda: (c := tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted"
                        and c["observedGeneration"] == generation and c, timeout=180, what="the move to pg-a")
        wait_for_commits(writers, writers.committed_total() + 50)
    finally:
        writers.stop()
    assert "on pg-a" in done["message"], done["message"]
    frozen = float(re.search(r"writes frozen ([\d.]+)s", done["message"]).group(1))
    tenant = tenants.wait_ready(name)
    assert tenant["status"]["database"]["server"] == "pg-a"
    secret = tenant_secret(kube, name)
    assert int(secret["port"]) == a.port
    count = count_writes(secret["DATABASE_URL"], writers)
    print(f"\nmoved pg-b -> pg-a under 3 writers: committed {count.committed}, found {count.found}, "
          f"frozen {frozen:.2f}s")
    assert count.missing == [] and count.changed_ids == [] and count.phantoms == []
    assert read_fingerprint(secret["DATABASE_URL"]) == before
    assert not can_log_in(b, url), "the old server still lets the tenant in"
    wait_for(lambda: name not in pool.status("pg-b").get("placed", []), what="pg-b to stop counting it")


def test_drain_empties_a_server_and_every_tenant_keeps_its_data(tenants, kube, pool):
    pool.server("pg-a")
    pool.server("pg-b")
    plan = pool.plan("professional")
    pool.patch("pg-a", {"cordoned": True})
    on_b = [tenants.unique("drain") for _ in range(5)]
    for name in on_b:
        tenants.create(name, plan=plan, tier="isolated" if name == on_b[0] else "shared")
    for name in on_b:
        tenants.wait_ready(name, timeout=120)
        assert server_of(tenants, name) == "pg-b"
    pool.patch("pg-a", {"cordoned": False})
    fingerprints = {}
    for name in on_b:
        url = tenant_secret(kube, name)["DATABASE_URL"]
        write_sample_data(url)
        fingerprints[name] = read_fingerprint(url)
    wait_for(lambda: pool.status("pg-b").get("tenants") == len(on_b), what="pg-b to count its tenants")
    pool.patch("pg-b", {"drain": True})
    at_once: list[int] = []

    def drained_now():
        at_once.append(sum(1 for name in on_b if "migration" in (tenants.get(name) or {}).get("status", {})))
        found = pool.status("pg-b")
        return found.get("tenants") == 0 and (found.get("draining") or {}).get("remaining") == 0 and found

    drained = wait_for(drained_now, timeout=300, what="pg-b to be drained")
    assert 0 < max(at_once) <= 2, at_once  # TENANT_OPERATOR_DRAIN_PARALLEL: 2
    assert drained["draining"]["moved"] == len(on_b)
    assert next(c for c in drained["conditions"] if c["type"] == "Draining")["reason"] == "Drained"
    for name in on_b:
        tenant = tenants.wait_ready(name, timeout=60)
        assert tenant["status"]["database"]["server"] == "pg-a"
        assert tenant["status"]["tier"] == ("isolated" if name == on_b[0] else "shared")
        assert read_fingerprint(tenant_secret(kube, name)["DATABASE_URL"]) == fingerprints[name]
    new = tenants.unique("after-drain")
    tenants.create(new, plan=plan)
    tenants.wait_ready(new, timeout=120)
    assert server_of(tenants, new) == "pg-a", "a draining server took a new tenant"
    pool.patch("pg-b", {"drain": False})


def test_a_stopped_server_takes_down_only_its_own_tenants(tenants, pool):
    pool.server("pg-a")
    b = pool.server("pg-b")
    plan = pool.plan("starter")
    on_a, on_b = tenants.unique("up"), tenants.unique("down")
    tenants.create(on_a, plan=plan, database={"server": "pg-a"})
    tenants.create(on_b, plan=plan, database={"server": "pg-b"})
    tenants.wait_ready(on_a, timeout=120)
    tenants.wait_ready(on_b, timeout=120)
    stop_postgres(b, mode="immediate")
    try:
        tenants.wait_condition(on_b, "DatabaseReady", "False", "DatabaseUnavailable", timeout=60)
        wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "False"
                             for c in pool.status("pg-b").get("conditions", [])), what="pg-b to report not Ready")
        assert tenants.condition(on_a, "Ready")["status"] == "True"
    finally:
        restart_postgres(b)
    tenants.wait_ready(on_b, timeout=120)


def test_a_server_holding_tenants_cannot_be_deleted(tenants, kube, pool):
    pool.server("pg-a")
    plan = pool.plan("starter")
    name = tenants.unique("holder")
    tenants.create(name, plan=plan, database={"server": "pg-a"})
    tenants.wait_ready(name, timeout=120)
    kube.delete(ObjectRef(DATABASE_SERVER, "pg-a"))
    blocked = wait_for(lambda: next((c for c in pool.status("pg-a").get("conditions", [])
                                     if c["reason"] == "DeletionBlocked"), None), what="the deletion to be blocked")
    assert name in blocked["message"]
    assert kube.read(ObjectRef(DATABASE_SERVER, "pg-a")) is not None
    assert tenants.condition(name, "Ready")["status"] == "True"
    tenants.delete(name)
    tenants.wait_gone(name, timeout=120)
    wait_for(lambda: kube.read(ObjectRef(DATABASE_SERVER, "pg-a")) is None, timeout=60, what="pg-a to go")
    pool.made.remove(ObjectRef(DATABASE_SERVER, "pg-a"))
    stopped = pool.servers.pop("pg-a")
    stop_postgres(stopped, mode="immediate")
    shutil.rmtree(stopped.data_dir.parent, ignore_errors=True)
