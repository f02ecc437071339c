"""Lease leader election against an in-memory Lease with the API server's optimistic concurrency."""

from __future__ import annotations

import copy

import pytest

from tenant_operator.runtime.leader import Conflict, LeaderElector, LeaseConfig


class FakeLeases:
    """One Lease, with resourceVersion checks as the API server does them."""

    def __init__(self):
        self.lease: dict | None = None
        self.version = 0
        self.failing = False
        self.writes = 0

    def read(self) -> dict | None:
        if self.failing:
            raise ConnectionError("API server unreachable")
        return copy.deepcopy(self.lease)

    def create(self, lease: dict) -> dict:
        if self.failing:
            raise ConnectionError("API server unreachable")
        if self.lease is not None:
            raise Conflict("AlreadyExists")
        return self._store(lease)

    def replace(self, lease: dict) -> dict:
        if self.failing:
            raise ConnectionError("API server unreachable")
        if self.lease is None or lease["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        return self._store(lease)

    def _store(self, lease: dict) -> dict:
        self.version += 1
        self.writes += 1
        self.lease = copy.deepcopy(lease)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str | None:
        return ((self.lease or {}).get("spec") or {}).get("holderIdentity")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def elector(store: FakeLeases, clock: Clock, identity: str, events: list | None = None) -> LeaderElector:
    config = LeaseConfig(namespace="ops", name="tenant-operator", identity=identity)
    return LeaderElector(store, config, clock=clock,
                         on_started_leading=lambda: (events or []).append((identity, "started")),
                         on_stopped_leading=lambda: (events or []).append((identity, "stopped")))


@pytest.fixture
def store() -> FakeLeases:
    return FakeLeases()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_first_replica_creates_the_lease_and_leads(store, clock):
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    assert a.is_leader
    spec = store.lease["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["renewTime"].endswith("Z") and "." in spec["renewTime"]


def test_second_replica_follows_while_the_lease_is_renewed(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    for _ in range(10):
        assert not b.try_acquire_or_renew()
        clock.advance(5)
        assert a.try_acquire_or_renew()
    assert a.is_leader and not b.is_leader
    assert store.holder == "a"


def test_follower_takes_over_once_the_lease_is_not_renewed_for_its_duration(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b notes the record now
    clock.advance(14.9)
    assert not b.try_acquire_or_renew()
    clock.advance(0.2)
    assert b.try_acquire_or_renew()
    assert store.holder == "b"
    assert store.lease["spec"]["leaseTransitions"] == 1


def test_leader_stops_leading_before_anyone_may_take_over(store, clock):
    """a's renewals fail: it must count itself out before b's takeover can happen."""
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    store.failing = True
    clock.advance(9.9)
    a.try_acquire_or_renew()
    assert a.is_leader  # a failed renewal, but still within its renew deadline
    clock.advance(0.2)
    assert not a.is_leader  # 10 s deadline passed, with no request answered
    store.failing = False
    clock.advance(4.0)
    assert not b.try_acquire_or_renew()  # 14.1 s after b saw the record: not yet expired
    clock.advance(1.0)
    assert b.try_acquire_or_renew()


def test_expiry_is_measured_from_when_the_record_was_seen_not_from_its_timestamps(store, clock):
    """A follower started late waits a whole duration: it cannot trust another machine's clock."""
    a = elector(store, clock, "a")
    a.try_acquire_or_renew()
    clock.advance(60)  # a died long ago, but the new replica only sees the lease now
    c = elector(store, clock, "c")
    assert not c.try_acquire_or_renew()
    clock.advance(15)
    assert c.try_acquire_or_renew()


def test_racing_followers_one_wins_by_resource_version(store, clock):
    a, b, c = elector(store, clock, "a"), elector(store, clock, "b"), elector(store, clock, "c")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    c.try_acquire_or_renew()
    clock.advance(16)
    stale = store.read()

    # b and c both read the expired lease; c writes first, so b's write carries a stale resourceVersion.
    original_read = store.read
    store.read = lambda: copy.deepcopy(stale)
    assert c.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    store.read = original_read
    assert store.holder == "c"
    assert not b.is_leader


def test_a_leader_that_sees_another_holder_steps_down_at_once(store, clock):
    a = elector(store, clock, "a")
    a.try_acquire_or_renew()
    lease = store.read()
    lease["spec"]["holderIdentity"] = "b"
    store.replace(lease)  # e.g. an admin handed it over
    assert not a.try_acquire_or_renew()
    assert not a.is_leader


def test_release_lets_a_follower_take_over_without_waiting(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    assert a.release()
    assert not a.is_leader
    assert store.holder is None
    assert b.try_acquire_or_renew()
    assert store.holder == "b"


def test_release_by_a_follower_changes_nothing(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    writes = store.writes
    assert not b.release()
    assert store.writes == writes and store.holder == "a"


def test_leader_reacquires_its_own_lease_after_a_conflict(store, clock):
    a = elector(store, clock, "a")
    a.try_acquire_or_renew()
    lease = store.read()
    store.replace(lease)  # somebody touched it (e.g. kubectl label)
    clock.advance(5)
    assert a.try_acquire_or_renew()
    assert store.holder == "a"
    assert store.lease["spec"]["leaseTransitions"] == 0


def test_periods_must_leave_room_for_a_safe_handover():
    with pytest.raises(ValueError):
        LeaseConfig(namespace="ops", name="x", identity="a", duration=10, renew_period=5, renew_deadline=12)


def test_config_from_settings_keeps_client_go_proportions():
    from tenant_operator.api.settings import Settings

    settings = Settings(database_url="postgresql://x@y/z", leader_election=True, leader_election_namespace="ops")
    config = LeaseConfig.from_settings(settings, identity="me")
    assert (config.namespace, config.name, config.identity) == ("ops", "tenant-operator", "me")
    assert config.renew_period < config.renew_deadline < config.duration
    assert config.duration == 15


def test_identities_are_unique_per_process():
    from tenant_operator.runtime.leader import default_identity

    assert default_identity() != default_identity()


# --- the controller under leader election ------------------------------------------------

def test_follower_workers_do_not_reconcile_and_a_new_leader_queues_every_tenant(monkeypatch):
    import asyncio

    from tenant_operator.api.settings import Settings
    from tenant_operator.reconcile.context import Outcome
    from tenant_operator.runtime import controller as controller_module
    from tenant_operator.runtime.controller import Controller

    reconciled: list[str] = []
    monkeypatch.setattr(controller_module, "reconcile", lambda ctx, tenant: reconciled.append(tenant.name)
                        or Outcome())

    async def scenario() -> None:
        settings = Settings(database_url="postgresql://x@y/z", workers=2, resync_seconds=3600)
        controller = Controller.create(kube=None, settings=settings)
        leading = {"now": False}
        controller.start(leading=lambda: leading["now"])
        for name in ("a", "b", "c"):
            controller.tenant_seen("ADDED", {"metadata": {"name": name}, "spec": {"plan": "free"}})
        await asyncio.sleep(0.05)
        assert reconciled == []  # a follower keeps the cache, reconciles nothing

        leading["now"] = True
        controller.leadership_gained()
        await asyncio.sleep(0.05)
        assert sorted(reconciled) == ["a", "b", "c"]

        leading["now"] = False
        controller.leadership_lost()
        controller.tenant_seen("MODIFIED", {"metadata": {"name": "a", "generation": 2}, "spec": {"plan": "free"}})
        await asyncio.sleep(0.05)
        assert sorted(reconciled) == ["a", "b", "c"]  # nothing more once the lease is gone
        assert set(controller.tenants) == {"a", "b", "c"}
        await controller.stop()

    asyncio.run(scenario())


def test_standalone_controller_reconciles_without_any_lease(monkeypatch):
    import asyncio

    from tenant_operator.api.settings import Settings
    from tenant_operator.reconcile.context import Outcome
    from tenant_operator.runtime import controller as controller_module
    from tenant_operator.runtime.controller import Controller

    reconciled: list[str] = []
    monkeypatch.setattr(controller_module, "reconcile", lambda ctx, tenant: reconciled.append(tenant.name)
                        or Outcome())

    async def scenario() -> None:
        controller = Controller.create(kube=None, settings=Settings(database_url="postgresql://x@y/z"))
        controller.start()
        controller.tenant_seen("ADDED", {"metadata": {"name": "a"}, "spec": {"plan": "free"}})
        await asyncio.sleep(0.05)
        await controller.stop()

    asyncio.run(scenario())
    assert reconciled == ["a"]
