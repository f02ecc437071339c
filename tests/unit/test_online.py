"""How a move chooses between online and offline, and says why."""

from __future__ import annotations

import pytest

from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import replication, storage
from tenant_operator.infra.postgres import placement
from tenant_operator.reconcile import online
from tenant_operator.reconcile.context import Context

URL = "postgresql://postgres:secret@db.example:5432/postgres"
SIDES = online.Sides(URL, URL, placement("acme", "shared", "tenants"), placement("acme", "isolated", "tenants"))


def context(mode: str = "auto") -> Context:
    return Context(kube=None, settings=Settings(database_url=URL, move_mode=mode),  # type: ignore[arg-type]
                   plan_body=lambda name: None)


def tenant(annotation: str | None = None) -> Tenant:
    meta: dict = {"name": "acme", "generation": 1}
    if annotation:
        meta["annotations"] = {"tenancy.dev/move-mode": annotation}
    return Tenant.from_body({"metadata": meta, "spec": {"plan": "p"}})


@pytest.fixture
def server(monkeypatch):
    state = {"able": replication.Capability(True, "ok", superuser=True), "blockers": [], "stopped": False}
    monkeypatch.setattr(storage, "stopped", lambda dsn, source: state["stopped"])
    monkeypatch.setattr(replication, "capability", lambda dsn: state["able"])
    monkeypatch.setattr(replication, "blockers", lambda dsn, source: state["blockers"])
    return state


def test_auto_moves_online_where_the_source_replicates(server):
    assert online.choose_mode(context(), tenant(), SIDES, URL)[:2] == (
        "online", "logical replication while the tenant writes; the freeze covers the tail")


def test_the_annotation_wins_over_the_setting(server):
    assert online.choose_mode(context("online"), tenant("offline"), SIDES, URL)[0] == "offline"
    assert online.choose_mode(context("offline"), tenant("online"), SIDES, URL)[0] == "online"
    assert online.choose_mode(context("offline"), tenant("sideways"), SIDES, URL)[0] == "offline"  # unknown: setting


def test_a_source_that_cannot_replicate_falls_back_and_says_why(server):
    server["able"] = replication.Capability(False, "wal_level is replica, not logical")
    mode, why, _ = online.choose_mode(context("online"), tenant(), SIDES, URL)
    assert mode == "offline" and "wal_level is replica" in why


def test_a_tenant_with_functions_moves_offline(server):
    server["blockers"] = ["the tenant defines 2 function(s): ..."]
    mode, why, _ = online.choose_mode(context(), tenant(), SIDES, URL)
    assert mode == "offline" and "defines 2 function" in why


def test_a_tenant_over_its_max_size_moves_offline_and_stays_stopped_until_the_freeze(server):
    server["stopped"] = True
    mode, why, _ = online.choose_mode(context("online"), tenant("online"), SIDES, URL)
    assert mode == "offline" and "over its maxSize" in why and "until the freeze" in why


def test_an_unknown_move_mode_setting_is_refused_at_start():
    with pytest.raises(SystemExit, match="MOVE_MODE='sideways' is not valid"):
        Settings(database_url=URL, move_mode="sideways")


def test_a_tenant_without_tables_is_caught_up_at_once_and_one_table_behind_is_not():
    assert replication.Progress(tables=0, synchronised=0, lag_bytes=0, retained_bytes=0).caught_up
    assert not replication.Progress(tables=3, synchronised=2, lag_bytes=0, retained_bytes=0).caught_up


def test_a_slot_keeping_too_much_wal_is_warned_of_in_an_event_and_the_moves_condition(monkeypatch):
    monkeypatch.setattr(replication, "start", lambda *args: [])
    monkeypatch.setattr(replication, "progress", lambda *args: replication.Progress(3, 1, 5000, 2 * 1024 ** 3))
    warned: list[str] = []
    record: dict = {}

    waiting = online.replicate(context(), SIDES, record, True, warned.append)

    assert waiting.startswith("replicating: 1 of 3 table(s) synchronised; WARNING: replication slot")
    assert len(warned) == 1 and "2147483648 bytes of WAL" in warned[0]
    assert record["replication"] == {"slot": "tenancy_move_tenant_acme", "tables": 3, "tablesSynchronised": 1,
                                     "lagBytes": 5000, "retainedWalBytes": 2 * 1024 ** 3}
