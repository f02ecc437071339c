"""Servers resolved from DatabaseServers and their admin Secrets; placement's choice among them."""

from __future__ import annotations

import base64

import pytest
from psycopg.conninfo import conninfo_to_dict

from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra.servers import Health, Probe, ServerUnusable, admin_url_from_secret
from tenant_operator.reconcile import placement
from tenant_operator.reconcile.context import Context


def secret(**data: str) -> dict:
    return {"data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def test_a_cloudnativepg_superuser_uri_naming_any_database_starts_in_postgres():
    url = admin_url_from_secret(secret(uri="postgresql://postgres:pw@pg-rw.db.svc:5432/*"), "uri", "db/pg-superuser")

    assert conninfo_to_dict(url)["dbname"] == "postgres"
    assert conninfo_to_dict(url)["host"] == "pg-rw.db.svc"


def test_a_named_database_is_kept():
    url = admin_url_from_secret(secret(uri="host=h port=5433 dbname=admin user=a password=p"), "uri", "ns/s")

    assert conninfo_to_dict(url)["dbname"] == "admin"


@pytest.mark.parametrize(("found", "reason"), [
    (None, "AdminSecretNotFound"),
    (secret(other="x"), "AdminSecretInvalid"),
    (secret(uri="host='unterminated"), "AdminSecretInvalid"),
])
def test_an_unusable_secret_says_why(found, reason):
    with pytest.raises(ServerUnusable) as raised:
        admin_url_from_secret(found, "uri", "ns/s")

    assert raised.value.reason == reason
    assert "ns/s" in str(raised.value)


# --- placement ------------------------------------------------------------------------------------

SETTINGS = Settings(database_url="postgresql://postgres:secret@db.example:5432/postgres")


def server_body(name: str, max_tenants: int = 10, labels: dict | None = None, **spec) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1"},
            "spec": {"adminSecretRef": {"namespace": "ops", "name": f"{name}-admin"}, "maxTenants": max_tenants,
                     **spec}}


class Kube:
    """Reads of admin Secrets only: each server's DSN names its own host."""

    def read(self, ref):
        return secret(uri=f"postgresql://admin:pw@{ref.name.removesuffix('-admin')}.db:5432/postgres")


def world(bodies: list[dict], placed: dict[str, dict] | None = None, down: tuple[str, ...] = ()) -> Context:
    by_name = {body["metadata"]["name"]: body for body in bodies}
    health = Health(prober=lambda server: Probe(server.name not in down, "Unreachable" if server.name in down
                                                else "Reachable", "probed"))
    return Context(kube=Kube(), settings=SETTINGS, plan_body=lambda name: None, server_body=by_name.get,
                   server_bodies=lambda: list(by_name.values()), health=health,
                   placed=lambda: placed or {})


def plan_choosing(labels: dict[str, str] | None) -> TenantPlan:
    spec = {"tiers": ["shared", "isolated"], "database": {"servers": {"shared": {"matchLabels": labels}}
                                                          if labels else {}}}
    return TenantPlan.from_body({"metadata": {"name": "p"}, "spec": spec})


def new_tenant(name: str, **database) -> Tenant:
    return Tenant.from_body({"metadata": {"name": name, "generation": 1},
                             "spec": {"plan": "p", "database": database}})


@pytest.fixture(autouse=True)
def no_reservations(monkeypatch):
    monkeypatch.setattr(placement, "RESERVED", placement.Reservations())


def test_the_server_with_most_free_room_is_chosen_ties_by_name():
    ctx = world([server_body("pg-b", 10), server_body("pg-a", 10), server_body("pg-c", 30)],
                placed={f"t{i}": {"server": "pg-c"} for i in range(25)})
    plan = plan_choosing(None)

    first = placement.destination(ctx, new_tenant("one"), plan)
    assert first.server.name == "default"  # maxTenants 1000 without an object of its own: most room
    ctx = world([server_body("pg-b", 10, {"pool": "x"}), server_body("pg-a", 10, {"pool": "x"}),
                 server_body("pg-c", 30, {"pool": "x"})], placed={f"t{i}": {"server": "pg-c"} for i in range(25)})
    chosen = placement.destination(ctx, new_tenant("two"), plan_choosing({"pool": "x"}))
    assert chosen.server.name == "pg-a"  # 10 free like pg-b, first by name; pg-c has 5
    assert chosen.server.host == "pg-a.db"


def test_none_fits_names_every_server_and_why():
    ctx = world([server_body("full", 2, {"pool": "x"}), server_body("closed", 5, {"pool": "x"}, cordoned=True),
                 server_body("away", 5, {"pool": "x"}, drain=True), server_body("other", 5, {"pool": "y"}),
                 server_body("iso", 5, {"pool": "x"}, tiers=["isolated"]), server_body("down", 5, {"pool": "x"})],
                placed={"a": {"server": "full"}, "b": {"server": "full"}}, down=("down",))

    nowhere = placement.destination(ctx, new_tenant("late"), plan_choosing({"pool": "x"}))

    assert nowhere.server is None
    for expected in ("full: full (2 of 2 tenants)", "closed: cordoned", "away: draining",
                     "other: its labels do not match", "iso: does not serve the shared tier",
                     "down: not Ready (Unreachable", "default: its labels do not match"):
        assert expected in nowhere.problem


def test_a_pin_ignores_the_selector_but_not_a_full_server():
    ctx = world([server_body("pinned", 1, {"pool": "y"})])
    assert placement.destination(ctx, new_tenant("p", server="pinned"), plan_choosing({"pool": "x"})).server.name \
        == "pinned"

    ctx = world([server_body("pinned", 1)], placed={"other": {"server": "pinned"}})
    refused = placement.destination(ctx, new_tenant("p", server="pinned"), plan_choosing(None))
    assert refused.server is None and "full (1 of 1 tenants)" in refused.problem


def placed_tenant(name: str, home: str, tier: str = "shared", **database) -> Tenant:
    return Tenant.from_body({"metadata": {"name": name, "generation": 1},
                             "spec": {"plan": "p", "tier": tier, "database": database},
                             "status": {"tier": tier, "database": {"server": home}}})


def test_a_placed_tenant_stays_until_its_pin_changes_or_its_server_drains():
    bodies = [server_body("pg-a", 10), server_body("pg-b", 50)]
    stays = placement.destination(world(bodies), placed_tenant("t", "pg-a"), plan_choosing(None))
    assert (stays.server.name, stays.moving) == ("pg-a", False)  # pg-b has more room: no matter

    pinned = placement.destination(world(bodies), placed_tenant("t", "pg-a", server="pg-b"), plan_choosing(None))
    assert (pinned.server.name, pinned.moving, pinned.drained) == ("pg-b", True, False)

    draining = [server_body("pg-a", 10, drain=True), server_body("pg-b", 50)]
    drained = placement.destination(world(draining), placed_tenant("t", "pg-a"), plan_choosing(None))
    assert drained.moving and drained.drained and drained.server.name in ("pg-b", "default")


def test_a_tenant_from_before_servers_lives_on_default():
    old = Tenant.from_body({"metadata": {"name": "old", "generation": 1}, "spec": {"plan": "p"},
                            "status": {"tier": "shared", "database": {"host": "db.example"}}})

    assert placement.home_of(old) == "default"
    where = placement.destination(world([]), old, plan_choosing(None))
    assert (where.server.name, where.moving) == ("default", False)


# --- what the server status counts ----------------------------------------------------------------

def test_the_cache_tells_each_tenants_server_its_moves_and_pins():
    from tenant_operator.runtime.servers import placed_tenants, waiting_on

    bodies = [
        {"metadata": {"name": "old"}, "spec": {}, "status": {"tier": "shared", "database": {}}},
        {"metadata": {"name": "new"}, "spec": {}, "status": {}},
        {"metadata": {"name": "moving"}, "spec": {"database": {"server": "pg-b"}},
         "status": {"tier": "shared", "database": {"server": "pg-a"},
                    "migration": {"from": "shared", "to": "shared", "fromServer": "pg-a", "toServer": "pg-b"}}},
        {"metadata": {"name": "waiting"}, "spec": {"database": {"server": "pg-c"}},
         "status": {"conditions": [{"type": "DatabaseReady", "status": "False", "reason": "NoServerAvailable"}]}},
    ]

    placed = placed_tenants(bodies)

    assert placed["old"] == {"server": "default"}  # provisioned before servers existed
    assert "new" not in placed
    assert placed["moving"] == {"server": "pg-a", "pin": "pg-b", "fromServer": "pg-a", "toServer": "pg-b"}
    assert sorted(waiting_on("pg-b", bodies)) == ["moving", "waiting"]  # a server change wakes those waiting
    assert sorted(waiting_on("pg-c", bodies)) == ["waiting"]


def test_a_drain_moves_at_most_its_parallel_count_and_a_finished_move_frees_its_slot_at_once():
    slots = placement.DrainSlots()
    assert slots.take("pg-a", "t1", 2, moving=set())
    assert slots.take("pg-a", "t2", 2, moving=set())
    assert not slots.take("pg-a", "t3", 2, moving=set()), "two moves started, the cache not showing them yet"
    assert not slots.take("pg-a", "t3", 2, moving={"t1", "t2"})
    assert slots.take("pg-a", "t3", 2, moving={"t2"}), "t1's move ended: its slot is free"
    assert slots.take("pg-b", "t9", 2, moving=set()), "another server's drain has its own slots"
