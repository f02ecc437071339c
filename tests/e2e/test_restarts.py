"""Operator restarts and two replicas, each test with operators of its own.

These tests start, kill and restart operator processes, so no other operator may
reconcile their tenants: the module runs its own control plane (about 20 s) and
its own shared database, and never uses the session `operator` fixture.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.dev.cluster import REPO_ROOT, existing_cluster, start_cluster
from tenant_operator.dev.session import OperatorProcess, install_crds, run_kubectl
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

from .conftest import Tenants

LEASE_NAMESPACE = "tenancy-system"
LEASE = KINDS[("coordination.k8s.io/v1", "Lease")]
LEADER_ARGS = ("--standalone", "--leader-election", "--leader-election-namespace", LEASE_NAMESPACE)
LEASE_DURATION = 15
TENANT_OBJECT_KINDS = [KINDS[k] for k in (("v1", "ResourceQuota"), ("v1", "LimitRange"), ("v1", "Secret"),
                                          ("v1", "Service"), ("apps/v1", "Deployment"),
                                          ("networking.k8s.io/v1", "NetworkPolicy"),
                                          ("rbac.authorization.k8s.io/v1", "RoleBinding"))]


class World:
    """A control plane, a shared database and operators of this module's own."""

    def __init__(self, cluster, postgres, logdir: Path):
        from kubernetes import config

        self.cluster = cluster
        self.postgres = postgres
        self.logdir = logdir
        self.shared_database = f"restarts_{secrets.token_hex(3)}"
        self.kube = Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)), field_manager="e2e-test")
        self.tenants = Tenants(self.kube, cluster)
        self.operators: list[OperatorProcess] = []

    def operator(self, *run_args: str, wait: bool = True, **settings) -> OperatorProcess:
        settings = {"shared_database": self.shared_database, "resync_seconds": 2, "backoff_max_seconds": 5,
                    **settings}
        number = len(self.operators) + 1
        process = OperatorProcess(self.cluster, self.postgres.url(), self.logdir / f"operator-{number}.log",
                                  run_args=run_args or ("--standalone",), **settings)
        process.started = time.monotonic()
        self.operators.append(process)
        if wait:
            wait_for(lambda: process.process.poll() is None and process.metrics(), timeout=60,
                     what=f"operator {number} to serve metrics")
        return process

    def stop_all(self) -> None:
        for process in self.operators:
            if process.process.poll() is None:
                process.stop()


@pytest.fixture(scope="module")
def world(postgres):
    if existing_cluster() is not None:
        pytest.skip("restart and leader-election tests start a control plane of their own; KUBECONFIG is set")
    cluster = start_cluster()
    logdir = Path(tempfile.mkdtemp(prefix="tenant-operator-restarts-"))
    try:
        install_crds(cluster)
        run_kubectl(cluster, "apply", "-f", str(REPO_ROOT / "manifests" / "samples" / "plans.yaml"))
        run_kubectl(cluster, "create", "namespace", LEASE_NAMESPACE)
        world = World(cluster, postgres, logdir)
        yield world
        world.stop_all()
        print(f"operator logs: {logdir}")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)


@pytest.fixture
def world_clean(world):
    """Every test starts with no operator running and leaves none running."""
    world.stop_all()
    yield world
    world.stop_all()


def metric(process: OperatorProcess, name: str, labels: str = "") -> float:
    text = process.metrics()
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(\{[^}]*\})?") + \
        r" ([0-9.e+-]+)$"
    return sum(float(match.group(match.lastindex)) for match in re.finditer(pattern, text, re.MULTILINE))


def writes(process: OperatorProcess) -> float:
    return metric(process, "tenant_operator_writes_total")


def reconciles(process: OperatorProcess) -> float:
    return metric(process, "tenant_operator_reconciles_total")


def examined(process: OperatorProcess) -> float:
    """Tenants the process has reconciled at least once (its tenants-by-phase gauge)."""
    return metric(process, "tenant_operator_tenants")


def resource_versions(world: World, names: list[str]) -> dict[str, str]:
    """Every object the operator made for these tenants, and the tenants, by resourceVersion."""
    kube = world.kube
    versions = {}
    for name in names:
        versions[f"Tenant {name}"] = world.tenants.get(name)["metadata"]["resourceVersion"]
        ns = f"tenant-{name}"
        versions[f"Namespace {ns}"] = kube.read(ObjectRef(KINDS[("v1", "Namespace")], ns))["metadata"][
            "resourceVersion"]
        for kind in TENANT_OBJECT_KINDS:
            for item in kube.list(kind, ns):
                if item["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "tenant-operator":
                    versions[f"{kind.kind} {ns}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    routes = kube.read(ObjectRef(KINDS[("v1", "ConfigMap")], "tenant-routes", "tenancy-shared"))
    versions["ConfigMap tenant-routes"] = routes["metadata"]["resourceVersion"]
    return versions


def settled(process: OperatorProcess, tenants: int, periods: int = 2) -> bool:
    """No write while every tenant is reconciled `periods` more times."""
    before, done = writes(process), reconciles(process)
    wait_for(lambda: reconciles(process) >= done + periods * tenants, timeout=60, what="more reconciles")
    return writes(process) == before


def secret_url(world: World, name: str) -> str:
    import base64

    secret = world.kube.read(ObjectRef(KINDS[("v1", "Secret")], "tenant-db", f"tenant-{name}"))
    return base64.b64decode(secret["data"]["DATABASE_URL"]).decode()


# --- restarts ------------------------------------------------------------------------------

SHARED_TENANTS = 18
ISOLATED_TENANTS = 2


def test_restarted_operator_examines_every_tenant_and_writes_nothing(world_clean):
    world = world_clean
    first = world.operator()
    names = [world.tenants.unique("idle") for _ in range(SHARED_TENANTS)]
    isolated = [world.tenants.unique("idleiso") for _ in range(ISOLATED_TENANTS)]
    for name in names:
        world.tenants.create(name, plan="starter")
    for name in isolated:
        world.tenants.create(name, plan="professional", tier="isolated")
    everyone = names + isolated
    for name in everyone:
        world.tenants.wait_ready(name, timeout=180)
    wait_for(lambda: settled(first, len(everyone)), timeout=120, what="the first operator to stop writing")
    before = resource_versions(world, everyone)
    first.kill()  # a crash: no clean-up of any kind

    total = len(tenants_in(world))  # with any left by other tests of this module

    # A long resync: what the new process reconciles is its start-up pass over every tenant.
    second = world.operator(wait=False, resync_seconds=300)
    wait_for(lambda: second.process.poll() is None and examined(second) >= total, timeout=120,
             interval=0.05, what="the restarted operator to examine every tenant")
    seconds = time.monotonic() - second.started
    wait_for(lambda: reconciles(second) >= total, timeout=30, what="the reconciles to be counted")
    time.sleep(3)  # anything a reconcile would still do, it would have done by now

    assert resource_versions(world, everyone) == before
    assert writes(second) == 0
    assert reconciles(second) == total  # each tenant once, no retries, no requeues
    assert metric(second, "tenant_operator_reconciles_total", 'result="error"') == 0
    assert metric(second, "tenant_operator_tenants", 'phase="Ready",plan="starter",tier="shared"') == SHARED_TENANTS
    assert resource_versions(world, everyone) == before
    print(f"\nrestart: {total} tenants examined {seconds:.1f}s after the process started, 0 writes")


def test_work_left_while_the_operator_was_down_is_done_after_start(world_clean):
    world = world_clean
    tenants = world.tenants
    first = world.operator()
    kept, doomed = tenants.unique("kept"), tenants.unique("doomed")
    tenants.create(kept, plan="starter")
    tenants.create(doomed, plan="starter", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(kept)
    tenants.wait_ready(doomed)
    kept_url = secret_url(world, kept)
    first.stop()

    late = tenants.unique("late")
    tenants.create(late, plan="starter")
    tenants.delete(doomed)
    world.kube.merge_patch(ObjectRef(TENANT, kept), {"spec": {"suspended": True}})
    time.sleep(2)
    assert tenants.get(doomed)["metadata"]["deletionTimestamp"]  # held by the finalizer meanwhile
    assert "status" not in tenants.get(late)

    world.operator()
    tenants.wait_ready(late)
    tenants.wait_gone(doomed)
    wait_for(lambda: tenants.get(kept)["status"]["phase"] == "Suspended", timeout=60, what=f"{kept} suspended")
    with psycopg.connect(world.postgres.dsn(dbname=world.shared_database)) as admin:
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                             ["tenant_" + doomed.replace("-", "_")]).fetchone() is None
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(kept_url, connect_timeout=5)


def test_deletion_of_a_tenant_left_mid_migration_settles_it_then_reclaims(world_clean):
    """A migration record in status, as an operator that died in the copy step leaves it: deletion does not
    wait for it forever; before the switch the data's home is the source, which the policy then reclaims."""
    world = world_clean
    tenants = world.tenants
    first = world.operator()
    name = tenants.unique("migr")
    tenants.create(name, plan="professional", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name)
    first.stop()

    path = TENANT.path(name) + "/status"
    record = {"from": "shared", "to": "isolated", "step": "copy", "started": "2030-01-01T00:00:00Z"}
    world.kube.request("PATCH", path, [], {"status": {"migration": record}},
                       content_type="application/merge-patch+json")
    tenants.delete(name)
    world.operator()

    tenants.wait_gone(name, timeout=90)
    role = "tenant_" + name.replace("-", "_")
    with psycopg.connect(world.postgres.dsn()) as admin:
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [role]).fetchone() is None
    from tenant_operator.infra.events import EVENTS_NAMESPACE

    def reasons() -> set[str]:
        events = world.kube.request("GET", f"/api/v1/namespaces/{EVENTS_NAMESPACE}/events", [])["items"]
        return {event["reason"] for event in events if event["involvedObject"].get("name") == name}

    # Events are posted in the background: the tenant may be gone a moment before its last event lands.
    wait_for(lambda: "MigrationSettled" in reasons(), timeout=30, what="the MigrationSettled event")


def test_missing_pg_dump_holds_deletion_until_a_fixed_operator_restarts(world_clean, tmp_path):
    """An image without the PostgreSQL client: the snapshot fails, nothing is dropped; fixed, it completes."""
    world = world_clean
    tenants = world.tenants
    broken = world.operator(pg_bin_dir=str(tmp_path / "no-such-dir"), snapshot_dir=str(tmp_path / "snapshots"))
    name = tenants.unique("nodump")
    tenants.create(name, plan="starter", database={"reclaimPolicy": "Snapshot"})
    tenants.wait_ready(name)
    tenants.delete(name)
    condition = tenants.wait_condition(name, "Ready", "False", reason="SnapshotFailed")
    assert "pg_dump not found" in condition["message"]
    broken.stop()
    schema = "tenant_" + name.replace("-", "_")
    with psycopg.connect(world.postgres.dsn(dbname=world.shared_database)) as admin:
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()

    world.operator(snapshot_dir=str(tmp_path / "snapshots"))
    tenants.wait_gone(name, timeout=60)
    dumps = list((tmp_path / "snapshots").glob(f"{name}-*.dump"))
    assert len(dumps) == 1


# --- two replicas ---------------------------------------------------------------------------

def leader_of(*processes: OperatorProcess) -> OperatorProcess | None:
    leading = [p for p in processes if p.process.poll() is None and metric(p, "tenant_operator_leader") == 1]
    assert len(leading) <= 1, "two replicas lead at once"
    return leading[0] if leading else None


def lease(world: World) -> dict:
    return world.kube.read(ObjectRef(LEASE, "tenant-operator", LEASE_NAMESPACE))


def test_two_replicas_one_reconciles_and_the_other_takes_over(world_clean):
    world = world_clean
    tenants = world.tenants
    a = world.operator(*LEADER_ARGS)
    b = world.operator(*LEADER_ARGS)
    leader = wait_for(lambda: leader_of(a, b), timeout=60, what="one replica to lead")
    follower = b if leader is a else a
    holder = lease(world)["spec"]["holderIdentity"]
    assert holder

    first = [tenants.unique("ha") for _ in range(3)]
    for name in first:
        tenants.create(name, plan="starter")
    for name in first:
        tenants.wait_ready(name)
    wait_for(lambda: reconciles(leader) >= 3 * len(first), timeout=30, what="resync reconciles on the leader")
    assert reconciles(follower) == 0
    assert writes(follower) == 0
    assert leader_of(a, b) is leader and lease(world)["spec"]["holderIdentity"] == holder

    # The leader crashes: the follower waits out the lease, then takes over.
    killed_at = time.monotonic()
    leader.kill()
    wait_for(lambda: leader_of(follower) is follower, timeout=LEASE_DURATION + 15, interval=0.1,
             what="the follower to take over")
    takeover = time.monotonic() - killed_at
    assert lease(world)["spec"]["holderIdentity"] != holder
    late = tenants.unique("ha-after")
    tenants.create(late, plan="starter")
    tenants.wait_ready(late)
    assert reconciles(follower) > 0

    # A graceful stop releases the Lease: a new standby leads almost at once.
    standby = world.operator(*LEADER_ARGS)
    time.sleep(3)
    assert leader_of(follower, standby) is follower and reconciles(standby) == 0
    stopped_at = time.monotonic()
    follower.stop()
    wait_for(lambda: leader_of(standby) is standby, timeout=LEASE_DURATION + 15, interval=0.1,
             what="the standby to take over after a graceful stop")
    handover = time.monotonic() - stopped_at
    last = tenants.unique("ha-last")
    tenants.create(last, plan="starter")
    tenants.wait_ready(last)
    assert lease(world)["spec"]["leaseTransitions"] >= 2
    assert handover < 8, f"a released lease should be taken within a few seconds, took {handover:.1f}s"
    assert takeover <= LEASE_DURATION + 5, f"takeover after a crash took {takeover:.1f}s"
    print(f"\ntakeover after SIGKILL: {takeover:.1f}s (lease {LEASE_DURATION}s); "
          f"after graceful stop: {handover:.1f}s")


def test_follower_keeps_its_cache_warm_and_reconciles_all_on_takeover(world_clean):
    """Tenants created while one replica leads are all reconciled by the next leader at once."""
    world = world_clean
    tenants = world.tenants
    a = world.operator(*LEADER_ARGS, resync_seconds=300)
    wait_for(lambda: leader_of(a), timeout=60, what="a to lead")
    b = world.operator(*LEADER_ARGS, resync_seconds=300)
    names = [tenants.unique("warm") for _ in range(4)]
    for name in names:
        tenants.create(name, plan="starter")
    for name in names:
        tenants.wait_ready(name)
    assert reconciles(b) == 0
    a.stop()
    wait_for(lambda: leader_of(b), timeout=30, what="b to lead")
    # On gaining the lease b queues every tenant it has cached, without any event or resync.
    total = len(tenants_in(world))
    wait_for(lambda: examined(b) >= total, timeout=30, what="b to reconcile every cached tenant")
    assert metric(b, "tenant_operator_reconciles_total", 'result="error"') == 0


def tenants_in(world: World) -> list[str]:
    return [t["metadata"]["name"] for t in world.kube.list(TENANT)]
