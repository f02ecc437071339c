"""A pool of DatabaseServers: provisioning spread over two servers, and draining one of them.

Two extra PostgreSQL servers run as DatabaseServers `bench-a` and `bench-b`
(label bench=servers, admin Secrets in `default`), and a plan whose
spec.database.servers.shared selects that label; the operator's own
DATABASE_URL (the server `default`) holds no tenant.

1. Provisioning: `--tenants` shared tenants applied at once, time until all are
   Ready, how they spread (status.database.server), against the floor: the same
   objects and DDL made by provision.py's bare script, each tenant on the server
   the operator's choice alternates to (half on each, one server after the other,
   with the operator's parallelism).
2. Draining: on a fresh cluster, `--drain` tenants born on bench-a (bench-b
   cordoned meanwhile), each filled with `--drain-mb` MB through its own Secret's
   DATABASE_URL; bench-b uncordoned, then spec.drain: true on bench-a. Drain time:
   until every tenant's status says bench-b with no move under way (one watch),
   and until bench-a's status.tenants says 0. Per tenant: the move (first
   status.migration seen to its end, by the watch) and the write freeze (the
   "writes frozen X.XXs" of its Migrating condition, MigrationCompleted, the
   same text as the event). Afterwards each tenant's row count is read with its
   own credentials (its Secret, now naming bench-b).

    .venv/bin/python bench/database_servers.py --tenants 1000 --drain 100 --drain-mb 10
"""

from __future__ import annotations

import concurrent.futures
import copy
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

import psycopg
import yaml

import provision
from common import (
    ROOT,
    Environment,
    ReadyTenants,
    arguments,
    environment,
    median,
    process_usage,
    report,
    tenant_names,
)
from migration import ROW_BYTES, fill
from noisy_neighbour import tenant_url
from tenant_operator.api.kinds import DATABASE_SERVER, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.postgres import PostgresServer, start_postgres, stop_postgres
from tenant_operator.dev.session import OperatorProcess
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra import postgres

SERVERS = ("bench-a", "bench-b")
LABEL = {"bench": "servers"}
PLAN = "bench-servers"
SECRETS_NAMESPACE = "default"
FROZEN = re.compile(r"writes frozen ([0-9.]+)s")
FROZEN_STEPS = ("freeze", "copy", "verify", "switch")


@contextmanager
def servers(env: Environment, max_tenants: int, cordoned: tuple[str, ...] = ()) -> Iterator[dict[str, PostgresServer]]:
    """Two PostgreSQL servers as DatabaseServers, and the plan that selects them."""
    started: dict[str, PostgresServer] = {}
    try:
        for name in SERVERS:
            started[name] = start_postgres()
        for name, server in started.items():
            env.kube.create(KINDS[("v1", "Secret")].collection_path(SECRETS_NAMESPACE), {
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-admin"},
                "stringData": {"uri": server.url()}})
            env.kube.create(DATABASE_SERVER.collection_path(), {
                "apiVersion": DATABASE_SERVER.api_version, "kind": DATABASE_SERVER.kind,
                "metadata": {"name": name, "labels": LABEL},
                "spec": {"adminSecretRef": {"namespace": SECRETS_NAMESPACE, "name": f"{name}-admin"},
                         "tiers": ["shared"], "maxTenants": max_tenants, "cordoned": name in cordoned}})
        plans = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
            (ROOT / "manifests" / "samples" / "plans.yaml").read_text()) if d}
        spec = copy.deepcopy(plans["starter"]["spec"])
        spec["database"] = {"servers": {"shared": {"matchLabels": LABEL}}}
        env.kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                        "metadata": {"name": PLAN}, "spec": spec})
        yield started
    finally:
        for server in started.values():
            stop_postgres(server, mode="immediate")
            shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def server_body(env: Environment, name: str) -> dict:
    return env.kube.read(ObjectRef(DATABASE_SERVER, name)) or {}


def server_ready(env: Environment, name: str) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (server_body(env, name).get("status") or {}).get("conditions", []))


def start_operator(env: Environment, label: str, **settings) -> OperatorProcess:
    operator = env.operator(name=label, workers=provision.WORKERS, **settings)
    wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")
    # Not part of any figure: the servers probed and their shared databases made.
    wait_for(lambda: all(server_ready(env, name) for name in SERVERS), timeout=120, interval=0.5,
             what=f"DatabaseServers {', '.join(SERVERS)} Ready ({operator.log_path})")
    return operator


def create_tenants(env: Environment, names: list[str], threads: int = 8) -> None:
    def create(name: str) -> None:
        env.kube.create(TENANT.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
                                                   "metadata": {"name": name},
                                                   "spec": {"plan": PLAN, "tier": "shared"}})

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))


def spread(env: Environment) -> dict[str, int]:
    """Tenants per server, from status.database.server."""
    found: dict[str, int] = {}
    for item in env.kube.request("GET", TENANT.collection_path())["items"]:
        server = str(((item.get("status") or {}).get("database") or {}).get("server"))
        found[server] = found.get(server, 0) + 1
    return found


# --- 1. provisioning -------------------------------------------------------------------------------


def floor(count: int) -> tuple[float, int]:
    """provision.py's bare script, half the tenants on each server as the operator spreads them; and its retries.

    Its parallel GRANT CONNECT ON DATABASE of the shared database can fail with "tuple concurrently updated"
    (PostgreSQL does not serialise two updates of the database's ACL); a script would try again, as the
    operator's reconcile does, so the tenant's DDL is retried here, and counted.
    """
    tenants = tenant_names(count, 0)
    seconds, retries = 0.0, [0]
    ensure = postgres.ensure_tenant_data

    def retrying(*args, **kwargs):
        for attempt in range(5):
            try:
                return ensure(*args, **kwargs)
            except psycopg.errors.InternalError as error:
                if "concurrently updated" not in str(error) or attempt == 4:
                    raise
                retries[0] += 1
                time.sleep(0.05)

    with environment() as env, servers(env, count) as started, \
            mock.patch.object(postgres, "ensure_tenant_data", retrying):
        for index, name in enumerate(SERVERS):
            on_server = Environment(env.cluster, started[name], env.kube, env.workdir)
            seconds += provision.floor(on_server, tenants[index::len(SERVERS)])
    return seconds, retries[0]


def provisioning(count: int, run: int) -> dict:
    names = [name for name, _ in tenant_names(count, 0)]
    with environment() as env, servers(env, count) as _:
        operator = start_operator(env, f"provision-{run}")
        try:
            with ReadyTenants(env.kube) as ready:
                started = time.monotonic()
                create_tenants(env, names)
                ready.wait(count, timeout=max(600, count * 3), operator=operator)
                seconds = time.monotonic() - started
            usage = process_usage(operator.process.pid)
            where = spread(env)
        finally:
            operator.stop()
    return {"seconds": seconds, "spread": where, **usage}


# --- 2. draining -----------------------------------------------------------------------------------


class Moves(ReadyTenants):
    """ReadyTenants that also follows where each tenant lives and its move: when a move was first and last seen."""

    def __init__(self, kube, target: str):
        super().__init__(kube)
        self.target = target
        self.server: dict[str, str | None] = {}
        self.moving_since: dict[str, float] = {}
        self.landed_at: dict[str, float] = {}
        self.freeze_seen: dict[str, float] = {}
        self.moving_now: set[str] = set()
        self.freeze_began: dict[str, float] = {}
        self.unfrozen_at: dict[str, float] = {}

    def _update(self, items: list[dict]) -> None:
        now = time.monotonic()
        with self._changed:
            for item in items:
                name = item["metadata"]["name"]
                status = item.get("status") or {}
                migration = status.get("migration")
                server = (status.get("database") or {}).get("server")
                self.server[name] = server
                if migration:
                    self.moving_now.add(name)
                    self.moving_since.setdefault(name, now)
                    if migration.get("step") in FROZEN_STEPS:
                        self.freeze_began.setdefault(name, now)
                    if migration.get("freezeSeconds") is not None:
                        self.freeze_seen[name] = float(migration["freezeSeconds"])
                        self.unfrozen_at.setdefault(name, now)
                else:
                    self.moving_now.discard(name)
                    if server == self.target:
                        self.landed_at.setdefault(name, now)
        super()._update(items)

    def wait_until(self, done: Callable[[], bool], timeout: float, operator: OperatorProcess, what: str) -> float:
        started = time.monotonic()
        with self._changed:
            while not done():
                if operator.process.poll() is not None:
                    raise RuntimeError(f"the operator exited; log: {operator.log_path}")
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{what} after {timeout}s; operator log: {operator.log_path}")
                self._changed.wait(1.0)
        return time.monotonic() - started


def fill_tenant(env: Environment, name: str, megabytes: int) -> int:
    """`megabytes` of rows written as the tenant itself (its Secret's DATABASE_URL); the rows written."""
    fill(tenant_url(env.kube, name), megabytes)
    return megabytes * 1024 * 1024 // ROW_BYTES


def count_rows(env: Environment, name: str) -> tuple[int, str]:
    """The tenant's rows, read with its own credentials, and the host:port its Secret names."""
    url = tenant_url(env.kube, name)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(f'SELECT count(*) FROM "tenant_{name}".events').fetchone()
        where = f"{conn.info.host}:{conn.info.port}"
    return (rows[0] if rows else -1), where


def frozen_seconds(env: Environment, name: str) -> float | None:
    """From the tenant's Migrating condition once MigrationCompleted: "... writes frozen X.XXs; ..."."""
    body = env.kube.read(ObjectRef(TENANT, name)) or {}
    for condition in (body.get("status") or {}).get("conditions", []):
        if condition["type"] == "Migrating" and condition.get("reason") == "MigrationCompleted":
            found = FROZEN.search(condition.get("message", ""))
            return float(found.group(1)) if found else None
    return None


def draining(count: int, megabytes: int, run: int, drain_parallel: int | None) -> dict:
    source, target = SERVERS
    names = [name for name, _ in tenant_names(count, 0, prefix="d")]
    settings = {"drain_parallel": drain_parallel} if drain_parallel else {}
    with environment() as env, servers(env, count, cordoned=(target,)) as started:
        operator = start_operator(env, f"drain-{run}", **settings)
        try:
            with Moves(env.kube, target) as moves:
                create_tenants(env, names)
                moves.wait(count, timeout=max(600, count * 3), operator=operator)
                placed = {name: moves.server.get(name) for name in names}
                if set(placed.values()) != {source}:
                    raise RuntimeError(f"tenants not all born on {source} (bench-b cordoned): {spread(env)}")
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    written = dict(zip(names, pool.map(lambda name: fill_tenant(env, name, megabytes), names),
                                       strict=True))
                env.kube.merge_patch(ObjectRef(DATABASE_SERVER, target), {"spec": {"cordoned": False}})
                wait_for(lambda: not (server_body(env, target).get("spec") or {}).get("cordoned"), timeout=30,
                         what=f"{target} uncordoned")
                started_at = time.monotonic()
                env.kube.merge_patch(ObjectRef(DATABASE_SERVER, source), {"spec": {"drain": True}})
                timeout = max(600, count * megabytes * 3)
                drain_s = moves.wait_until(
                    lambda: all(moves.server.get(name) == target and name not in moves.moving_now for name in names),
                    timeout, operator, f"the drain of {source}: "
                    f"{sum(moves.server.get(n) == target for n in names)}/{count} tenants on {target}")
                wait_for(lambda: (server_body(env, source).get("status") or {}).get("tenants") == 0,
                         timeout=120, interval=0.2, what=f"{source}'s status.tenants 0")
                status_s = time.monotonic() - started_at
                # A move the watch saw begin (it may miss one while it lists again after an expiry).
                move_s = [moves.landed_at[name] - moves.moving_since[name] for name in names
                          if name in moves.moving_since and name in moves.landed_at]
                seen = dict(moves.freeze_seen)
                # The same freeze as the watch saw it: step freeze written (before its work) to the first status
                # with freezeSeconds (written with the next step, once the password works again).
                watched = [moves.unfrozen_at[name] - moves.freeze_began[name] for name in names
                           if name in moves.unfrozen_at and name in moves.freeze_began]
            freeze = {name: frozen_seconds(env, name) for name in names}
            missing = [name for name, value in freeze.items() if value is None]
            if missing:
                raise RuntimeError(f"no MigrationCompleted condition with 'writes frozen' for {missing[:10]}")
            counted = {name: count_rows(env, name) for name in names}
            endpoint = f"{started[target].host}:{started[target].port}"
            wrong = {name: found for name, found in counted.items()
                     if found != (written[name], endpoint)}
            after = server_body(env, source).get("status") or {}
        finally:
            operator.stop()
    if wrong:
        raise RuntimeError(f"rows or endpoint not as written ({endpoint}) after the drain: "
                           f"{dict(list(wrong.items())[:10])}")
    freezes = [value for value in freeze.values() if value is not None]
    agreeing = sum(1 for name, value in freeze.items() if name in seen and abs(seen[name] - (value or 0)) < 0.01)
    return {"drain_s": drain_s, "status_s": status_s, "move_s": move_s, "freeze_s": freezes,
            "watched_freeze_s": watched, "freeze_agrees_with_status": agreeing, "rows_verified": sum(written.values()),
            "draining_status": after.get("draining")}


def spread_of(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": ordered[0], "p50": statistics.median(ordered),
            "p95": ordered[max(0, -(-len(ordered) * 95 // 100) - 1)], "max": ordered[-1]}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--tenants", type=int, default=1000, help="tenants provisioned over the two servers")
    parser.add_argument("--drain", type=int, default=100, help="tenants on the drained server")
    parser.add_argument("--drain-mb", type=int, default=10, help="MB written into each drained tenant")
    parser.add_argument("--drain-parallel", type=int, default=None,
                        help="the operator's drainParallel (default: the operator's own)")
    args = parser.parse_args()
    floors, floor_retries, provisions, drains = [], [], [], []
    for run in range(args.runs):
        seconds, retried = floor(args.tenants)
        floors.append(seconds)
        floor_retries.append(retried)
        print(f"run {run}: floor {seconds:.1f}s ({retried} DDL retries)", flush=True)
        provisions.append(provisioning(args.tenants, run))
        print(f"run {run}: operator {provisions[-1]['seconds']:.1f}s, {provisions[-1]['spread']}", flush=True)
        drains.append(draining(args.drain, args.drain_mb, run, args.drain_parallel))
        print(f"run {run}: drain {drains[-1]['drain_s']:.1f}s", flush=True)
    operator_s = median([p["seconds"] for p in provisions])
    moves = [value for d in drains for value in d["move_s"]]
    freezes = [value for d in drains for value in d["freeze_s"]]
    watched = [value for d in drains for value in d["watched_freeze_s"]]
    move, freeze = spread_of(moves), spread_of(freezes)
    seen = spread_of(watched) if watched else {}
    drain_s = median([d["drain_s"] for d in drains])
    last = provisions[-1]
    print(f"provisioning {args.tenants} tenants: spread {last['spread']}")
    print(f"drain of {args.drain} x {args.drain_mb} MB: move per tenant s min {move['min']:.2f} p50 {move['p50']:.2f}"
          f" p95 {move['p95']:.2f} max {move['max']:.2f}; freeze s min {freeze['min']:.2f} p50 {freeze['p50']:.2f}"
          f" p95 {freeze['p95']:.2f} max {freeze['max']:.2f}")
    if seen:
        print(f"  freeze as the watch saw it ({len(watched)} tenants), s min {seen['min']:.2f} p50 {seen['p50']:.2f}"
              f" p95 {seen['p95']:.2f} max {seen['max']:.2f}")
    row = {"tenants": args.tenants, "floor_s": median(floors), "operator_s": operator_s,
           "ratio": operator_s / median(floors), "tenants_per_s": args.tenants / operator_s,
           "on_a": last["spread"].get(SERVERS[0], 0), "on_b": last["spread"].get(SERVERS[1], 0),
           "drained": args.drain, "drain_mb": args.drain_mb, "drain_s": drain_s,
           "s_per_tenant": drain_s / args.drain, "move_p50_s": move["p50"],
           "freeze_min_s": freeze["min"], "freeze_p50_s": freeze["p50"], "freeze_p95_s": freeze["p95"],
           "freeze_max_s": freeze["max"], "rows_verified": sum(d["rows_verified"] for d in drains)}
    report("database_servers", [row], {
        "runs": args.runs, "workers": provision.WORKERS, "drain_parallel": args.drain_parallel,
        "freeze_source": "Migrating condition MigrationCompleted: 'writes frozen X.XXs' (the event's text)",
        "spread": [p["spread"] for p in provisions], "operator_cpu_s": last["cpu_seconds"],
        "operator_rss_mb": last["rss_mb"], "floor_runs_s": floors, "floor_ddl_retries": floor_retries,
        "operator_runs_s": [p["seconds"] for p in provisions],
        "drain_runs_s": [d["drain_s"] for d in drains], "drain_until_status_s": [d["status_s"] for d in drains],
        "move_s": move, "freeze_s": freeze, "move_samples_s": moves, "freeze_samples_s": freezes,
        "watched_freeze_s": seen, "watched_freeze_samples_s": watched,
        "freeze_agrees_with_status_migration": [d["freeze_agrees_with_status"] for d in drains],
        "draining_status_after": [d["draining_status"] for d in drains]})


if __name__ == "__main__":
    main()
