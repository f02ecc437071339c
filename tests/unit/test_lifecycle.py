"""Deletion under each reclaim policy, in order, with the I/O replaced by recorders."""

from __future__ import annotations

import contextlib
import datetime
import types
from pathlib import Path

import pytest

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.api.names import FINALIZER
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import connection, postgres, snapshot, tierdata
from tenant_operator.reconcile import deletion, moves
from tenant_operator.reconcile.context import Context

NAMESPACE = KINDS[("v1", "Namespace")]
CONFIGMAP = KINDS[("v1", "ConfigMap")]


class FakeKube:
    """Objects by ref; every call is recorded as (verb, what)."""

    def __init__(self, objects: dict[ObjectRef, dict]):
        self.objects = objects
        self.calls: list[tuple[str, str]] = []
        self.statuses: list[dict] = []
        self.events: list[tuple[str, str]] = []

    def read(self, ref):
        return self.objects.get(ref)

    def merge_patch(self, ref, patch):
        self.calls.append(("patch", str(ref)))
        return {}

    def delete(self, ref, propagation="Background"):
        self.calls.append(("delete", str(ref)))
        self.objects[ref]["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        return True

    def apply_status(self, kind, name, status, resource_version=None):
        self.calls.append(("status", status["conditions"][0]["reason"]))
        self.statuses.append(status)
        return {"metadata": {"resourceVersion": str(len(self.statuses) + 100)}}

    def create(self, path, body):
        self.events.append((body["reason"], body["message"]))
        return body


class FakeData:
    """What postgres and snapshot would do, recorded in order."""

    def __init__(self, exists: bool = True, dump_fails: str | None = None):
        self.exists = exists
        self.dump_fails = dump_fails
        self.calls: list[str] = []

    def install(self, monkeypatch, tmp_path: Path) -> None:
        monkeypatch.setattr(postgres, "tenant_data_exists", lambda dsn, placement: self.exists)
        monkeypatch.setattr(postgres, "set_login", self.set_login)
        monkeypatch.setattr(postgres, "drop_tenant_data", self.drop)
        monkeypatch.setattr(postgres, "snapshot_tables", lambda dsn, placement: [postgres.TableName("s", "t")])
        monkeypatch.setattr(snapshot, "take_snapshot", self.dump)
        monkeypatch.setattr(deletion, "_drop_quarantined_copies", lambda ctx, name: [])

    def set_login(self, dsn, role, enabled):
        self.calls.append(f"login {enabled}")
        return True

    def drop(self, dsn, placement):
        self.calls.append(f"drop {placement.tier}")
        self.exists = False
        return postgres.EnsureResult(("dropped schema", "dropped role"))

    def dump(self, dsn, placement, tenant, tables, directory, bin_dir, timeout):
        self.calls.append("dump")
        if self.dump_fails:
            raise snapshot.SnapshotFailed(self.dump_fails)
        path = directory / f"{tenant}-20300101T000000Z.dump"
        return snapshot.Snapshot(path, len(tables), 2048)


def tenant_body(policy: str, tier: str = "shared", migration: dict | None = None) -> dict:
    status = {"phase": "Ready", "tier": tier, "conditions": []}
    if migration:
        status["migration"] = migration
    return {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "generation": 2, "resourceVersion": "7", "uid": "u",
                         "finalizers": [FINALIZER], "deletionTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {"plan": "starter", "tier": tier, "database": {"reclaimPolicy": policy}},
            "status": status}


@pytest.fixture
def world(tmp_path):
    routes = ObjectRef(CONFIGMAP, "tenant-routes", "tenancy-shared")
    namespace = ObjectRef(NAMESPACE, "tenant-acme")
    kube = FakeKube({routes: {"data": {"acme": "{}"}}, namespace: {"metadata": {"name": "tenant-acme"}}})
    settings = Settings(database_url="postgresql://admin:secret@db:5432/postgres", snapshot_dir=tmp_path)
    return Context(kube=kube, settings=settings, plan_body=lambda name: None), namespace


def as_written(ctx, body: dict) -> dict:
    """The Tenant as the next watch event brings it: with the status the last pass wrote."""
    return {**body, "status": ctx.kube.statuses[-1]}


def run(ctx, body):
    return deletion.finalize(ctx, Tenant.from_body(body))


def test_retain_removes_route_blocks_login_then_deletes_namespace(world, monkeypatch, tmp_path):
    ctx, namespace = world
    data = FakeData()
    data.install(monkeypatch, tmp_path)
    outcome = run(ctx, tenant_body("Retain"))

    assert ctx.kube.calls[0] == ("patch", "ConfigMap tenancy-shared/tenant-routes")
    assert data.calls == ["login False"]
    assert ("delete", "Namespace tenant-acme") in ctx.kube.calls
    assert outcome.requeue_after == deletion.NAMESPACE_GONE_POLL
    status = ctx.kube.statuses[-1]
    assert status["phase"] == "Deleting"
    ready = status["conditions"][0]
    assert ready["reason"] == "DataRetained"
    assert "schema tenant_acme in database tenants kept; role tenant_acme cannot log in" in ready["message"]
    assert ctx.kube.events[-1][0] == "DataRetained"


def test_second_pass_writes_no_status_again(world, monkeypatch, tmp_path):
    ctx, namespace = world
    FakeData().install(monkeypatch, tmp_path)
    body = tenant_body("Retain")
    run(ctx, body)
    writes = len(ctx.kube.statuses)
    run(ctx, as_written(ctx, body))
    assert len(ctx.kube.statuses) == writes
    assert len(ctx.kube.events) == 1


def test_finalizer_removed_only_when_namespace_is_gone(world, monkeypatch, tmp_path):
    ctx, namespace = world
    FakeData().install(monkeypatch, tmp_path)
    del ctx.kube.objects[namespace]
    outcome = run(ctx, tenant_body("Delete"))
    assert ctx.kube.calls[-1] == ("patch", "Tenant acme")
    assert outcome.requeue_after is None and not outcome.failed
    assert ctx.kube.events[-1][0] == "DataDeleted"  # told once, even with no namespace to wait for


def test_last_pass_adds_no_status_write_when_already_told(world, monkeypatch, tmp_path):
    ctx, namespace = world
    FakeData().install(monkeypatch, tmp_path)
    body = tenant_body("Retain")
    run(ctx, body)
    del ctx.kube.objects[namespace]
    writes = len(ctx.kube.statuses)
    run(ctx, as_written(ctx, body))
    assert len(ctx.kube.statuses) == writes
    assert ctx.kube.calls[-1] == ("patch", "Tenant acme")


def test_delete_drops_the_data(world, monkeypatch, tmp_path):
    ctx, _ = world
    data = FakeData()
    data.install(monkeypatch, tmp_path)
    run(ctx, tenant_body("Delete", tier="isolated"))
    assert data.calls == ["drop isolated"]
    assert ctx.kube.statuses[-1]["conditions"][0]["reason"] == "DataDeleted"
    assert "database tenant_acme and role tenant_acme dropped" in ctx.kube.statuses[-1]["conditions"][0]["message"]


def test_snapshot_blocks_login_dumps_then_drops(world, monkeypatch, tmp_path):
    ctx, _ = world
    data = FakeData()
    data.install(monkeypatch, tmp_path)
    run(ctx, tenant_body("Snapshot"))
    assert data.calls == ["login False", "dump", "drop shared"]
    reasons = [reason for verb, reason in ctx.kube.calls if verb == "status"]
    assert reasons == ["SnapshotInProgress", "SnapshotTaken"]
    message = ctx.kube.statuses[-1]["conditions"][0]["message"]
    assert str(tmp_path / "acme-20300101T000000Z.dump") in message
    assert any(reason == "SnapshotTaken" and str(tmp_path) in text for reason, text in ctx.kube.events)


def test_failed_snapshot_drops_nothing_keeps_namespace_and_retries(world, monkeypatch, tmp_path):
    ctx, _ = world
    data = FakeData(dump_fails="pg_dump failed: could not obtain lock on relation orders")
    data.install(monkeypatch, tmp_path)
    outcome = run(ctx, tenant_body("Snapshot"))
    assert outcome.failed
    assert "drop shared" not in data.calls
    assert not any(verb == "delete" for verb, _ in ctx.kube.calls)
    condition = ctx.kube.statuses[-1]["conditions"][0]
    assert condition["reason"] == "SnapshotFailed"
    assert "could not obtain lock" in condition["message"] and "nothing was dropped" in condition["message"]


def test_snapshot_retry_keeps_the_failure_in_view(world, monkeypatch, tmp_path):
    ctx, _ = world
    data = FakeData(dump_fails="pg_dump failed: disk full")
    data.install(monkeypatch, tmp_path)
    body = tenant_body("Snapshot")
    run(ctx, body)
    run(ctx, as_written(ctx, body))
    reasons = [reason for verb, reason in ctx.kube.calls if verb == "status"]
    assert reasons == ["SnapshotInProgress", "SnapshotFailed"]  # no flapping back to InProgress


def test_snapshot_pass_after_the_drop_finds_the_dump_again(world, monkeypatch, tmp_path):
    """The operator died after dropping, before the namespace went: the message still names the dump."""
    ctx, _ = world
    data = FakeData(exists=False)
    data.install(monkeypatch, tmp_path)
    (tmp_path / "acme-20300101T000001Z.dump").write_bytes(b"x" * 10)
    (tmp_path / "acme-20200101T000000Z.dump").write_bytes(b"an older tenant of that name")
    run(ctx, tenant_body("Snapshot"))
    assert "dump" not in data.calls
    message = ctx.kube.statuses[-1]["conditions"][0]["message"]
    assert "acme-20300101T000001Z.dump" in message


class HeldAuthority:
    """The tenant's lock, as a process that holds it and leads sees it."""

    lock = types.SimpleNamespace(session="the lock's session")

    def check(self, before: str) -> None:
        pass


@contextlib.contextmanager
def held_authority(ctx, tenant_name):
    yield HeldAuthority()


class FakeTierData:
    """What tierdata would do to the two places of a migrating tenant, recorded in order."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        monkeypatch.setattr(moves, "authority_over", held_authority)
        monkeypatch.setattr(tierdata, "drop_target", lambda dsn, tenant, target: self._record("drop", target))
        monkeypatch.setattr(tierdata, "unmark", lambda dsn, target: self._record("unmark", target))
        monkeypatch.setattr(tierdata, "quarantine", lambda dsn, source, name: self._record("quarantine", source))

    def _record(self, verb: str, placement) -> bool:
        self.calls.append(f"{verb} {placement.tier}")
        return True


def test_deletion_before_the_switch_drops_the_target_and_reclaims_the_source(world, monkeypatch, tmp_path):
    ctx, _ = world
    data, moves = FakeData(), FakeTierData(monkeypatch)
    data.install(monkeypatch, tmp_path)
    record = {"from": "shared", "to": "isolated", "step": "copy", "started": "2030-01-01T00:00:00Z"}
    run(ctx, tenant_body("Delete", migration=record))

    assert moves.calls == ["drop isolated"]
    assert data.calls == ["drop shared"]  # the policy then deals with the tenant's one home
    assert "migration" not in ctx.kube.statuses[-1]
    assert ctx.kube.statuses[-1]["tier"] == "shared"
    assert "MigrationSettled" in [reason for reason, _ in ctx.kube.events]


def test_deletion_after_the_switch_quarantines_the_source_and_keeps_the_target(world, monkeypatch, tmp_path):
    ctx, _ = world
    data, moves = FakeData(), FakeTierData(monkeypatch)
    data.install(monkeypatch, tmp_path)
    record = {"from": "shared", "to": "isolated", "step": "switch", "started": "2030-01-01T00:00:00Z"}
    run(ctx, tenant_body("Retain", migration=record))

    assert moves.calls == ["quarantine shared", "unmark isolated"]  # out of the tenant's reach first
    assert data.calls == ["login False"]
    status = ctx.kube.statuses[-1]
    assert "migration" not in status and status["tier"] == "isolated"
    assert "database tenant_acme kept" in status["conditions"][0]["message"]


def test_deletion_of_a_migrating_tenant_during_an_outage_keeps_the_record(world, monkeypatch, tmp_path):
    ctx, _ = world
    FakeData().install(monkeypatch, tmp_path)

    def unavailable(*args):
        raise connection.DatabaseUnavailable("PostgreSQL at db:5432/tenants is unavailable")

    monkeypatch.setattr(moves, "authority_over", held_authority)
    monkeypatch.setattr(tierdata, "drop_target", unavailable)
    record = {"from": "shared", "to": "isolated", "step": "copy", "started": "2030-01-01T00:00:00Z"}
    outcome = run(ctx, tenant_body("Delete", migration=record))

    assert outcome.failed
    assert ctx.kube.statuses[-1]["migration"] == record  # retried from the same step
    assert ctx.kube.statuses[-1]["conditions"][0]["reason"] == "DatabaseUnavailable"


def test_database_outage_becomes_a_condition_and_a_retry(world, monkeypatch, tmp_path):
    ctx, _ = world

    def unavailable(dsn, placement):
        raise connection.DatabaseUnavailable("PostgreSQL at db:5432/tenants is unavailable: connection refused")

    monkeypatch.setattr(postgres, "tenant_data_exists", unavailable)
    outcome = run(ctx, tenant_body("Retain"))
    assert outcome.failed
    assert ctx.kube.statuses[-1]["conditions"][0]["reason"] == "DatabaseUnavailable"
    assert not any(verb == "delete" for verb, _ in ctx.kube.calls)


def test_where_names_schema_or_database():
    shared = postgres.placement("acme", "shared", "tenants")
    isolated = postgres.placement("acme", "isolated", "tenants")
    assert deletion.where(shared) == "schema tenant_acme in database tenants"
    assert deletion.where(isolated) == "database tenant_acme"


# --- snapshot.py ---------------------------------------------------------------------

def test_snapshot_file_is_named_after_tenant_and_utc_time(tmp_path):
    at = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert snapshot.snapshot_path(tmp_path, "acme", at) == tmp_path / "acme-20300506T050809Z.dump"


def test_pg_dump_gets_the_password_by_environment_only():
    placement = postgres.placement("acme", "shared", "tenants")
    argv, env = snapshot.dump_command("/usr/bin/pg_dump", "postgresql://admin:s3cret@db:5433/postgres?sslmode=require",
                                      placement, Path("/snap/acme.dump"))
    assert not any("s3cret" in arg for arg in argv)
    assert env["PGPASSWORD"] == "s3cret"
    dbname = next(arg for arg in argv if arg.startswith("--dbname="))
    assert "dbname=tenants" in dbname and "port=5433" in dbname and "sslmode=require" in dbname
    assert '--schema="tenant_acme"' in argv
    assert "--format=custom" in argv and "--no-password" in argv


def test_isolated_dump_is_the_whole_database():
    placement = postgres.placement("acme", "isolated", "tenants")
    argv, _ = snapshot.dump_command("pg_dump", "host=db user=admin password=x", placement, Path("/s.dump"))
    assert not any(arg.startswith("--schema") for arg in argv)
    assert "dbname=tenant_acme" in next(arg for arg in argv if arg.startswith("--dbname="))


TOC = """;
; Archive created at 2030-01-01 00:00:00 UTC
;
6; 2615 16386 SCHEMA - tenant_x tenant_x
215; 1259 16387 TABLE tenant_x orders tenant_x
217; 1259 16393 TABLE tenant_x p tenant_x
218; 1259 16396 TABLE tenant_x p1 tenant_x
216; 1259 16390 TABLE tenant_x we ird tenant_x
3352; 0 16387 TABLE DATA tenant_x orders tenant_x
3354; 0 16396 TABLE DATA tenant_x p1 tenant_x
"""


def test_toc_check_finds_every_table_and_its_data():
    tables = [postgres.TableName("tenant_x", "orders"), postgres.TableName("tenant_x", "p", has_data=False),
              postgres.TableName("tenant_x", "p1")]
    assert snapshot.missing_from_toc(TOC, tables) == []


def test_toc_check_reports_missing_tables_and_missing_data():
    tables = [postgres.TableName("tenant_x", "invoices"), postgres.TableName("tenant_x", "we ird"),
              postgres.TableName("tenant_x", "order")]
    assert snapshot.missing_from_toc(TOC, tables) == ["tenant_x.invoices", "tenant_x.we ird (data)", "tenant_x.order"]


def test_failed_dump_leaves_no_file_behind(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, script in (("pg_dump", "echo 'pg_dump: error: connection refused' >&2; exit 1"),
                         ("pg_restore", "exit 0")):
        (fake / name).write_text(f"#!/bin/sh\n{script}\n")
        (fake / name).chmod(0o755)
    placement = postgres.placement("acme", "shared", "tenants")
    with pytest.raises(snapshot.SnapshotFailed, match="connection refused"):
        snapshot.take_snapshot("host=db user=admin password=hunter2", placement, "acme", [], tmp_path / "out", fake)
    assert list((tmp_path / "out").iterdir()) == []


def test_dump_missing_a_table_is_not_accepted(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\nfor a; do case $a in --file=*) echo dump > ${a#--file=};; esac; done\n")
    (fake / "pg_restore").write_text("#!/bin/sh\necho '6; 2615 16386 SCHEMA - tenant_acme tenant_acme'\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    placement = postgres.placement("acme", "shared", "tenants")
    with pytest.raises(snapshot.SnapshotFailed, match="does not list tenant_acme.orders"):
        snapshot.take_snapshot("host=db user=admin", placement, "acme", [postgres.TableName("tenant_acme", "orders")],
                               tmp_path / "out", fake)
    assert list((tmp_path / "out").iterdir()) == []


def test_verified_dump_is_private_and_final(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\nfor a; do case $a in --file=*) echo dump > ${a#--file=};; esac; done\n")
    (fake / "pg_restore").write_text("#!/bin/sh\necho '1; 1259 1 TABLE tenant_acme orders o'\n"
                                     "echo '2; 0 1 TABLE DATA tenant_acme orders o'\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    placement = postgres.placement("acme", "shared", "tenants")
    taken = snapshot.take_snapshot("host=db user=admin", placement, "acme",
                                   [postgres.TableName("tenant_acme", "orders")], tmp_path / "out", fake)
    assert taken.path.parent == tmp_path / "out" and taken.path.suffix == ".dump"
    assert taken.path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "out").iterdir()] == [taken.path.name]


def test_missing_tool_is_named(tmp_path):
    with pytest.raises(snapshot.SnapshotFailed, match=f"pg_dump not found in {tmp_path}"):
        snapshot.tool("pg_dump", tmp_path)


def test_a_refused_drop_becomes_a_condition_not_a_crash_loop(world, monkeypatch, tmp_path):
    import psycopg

    ctx, _ = world
    FakeData().install(monkeypatch, tmp_path)

    def refused(dsn, placement):
        raise psycopg.errors.DependentObjectsStillExist('role "tenant_acme" cannot be dropped because some '
                                                        "objects depend on it")

    monkeypatch.setattr(postgres, "drop_tenant_data", refused)
    outcome = run(ctx, tenant_body("Delete"))
    assert outcome.failed
    condition = ctx.kube.statuses[-1]["conditions"][0]
    assert condition["reason"] == "ReclaimFailed" and "cannot be dropped" in condition["message"]
    assert not any(verb == "delete" for verb, _ in ctx.kube.calls)
