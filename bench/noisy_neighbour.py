"""A noisy neighbour in the shared database: tenant B's small query while tenant A runs a heavy workload.

Two shared tenants on one server. B runs a small indexed query in a loop and
its latency is recorded: alone, then while A runs `--heavy` sessions of large
sorts on a plan without database limits, then the same with A on a plan with
limits (connectionLimit, statementTimeout, workMem), all in one run on the same
server. A's sessions connect and query as fast as they can; refusals and
cancellations are counted.

    .venv/bin/python bench/noisy_neighbour.py --seconds 15 --heavy 6
"""

from __future__ import annotations

import copy
import statistics
import threading
import time

import psycopg
import yaml

from common import ROOT, arguments, environment, report
from tenant_operator.api.kinds import TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.wait import wait_for
from tenant_operator.reconcile.state import secret_password

HEAVY = "SELECT count(*) FROM (SELECT md5(g::text) AS h FROM generate_series(1, 400000) g ORDER BY h) s"
LIMITS = {"connectionLimit": 1, "statementTimeout": "500ms", "workMem": "1MB"}


def plan(kube, name: str, limits: dict | None) -> None:
    plans = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (ROOT / "manifests" / "samples" / "plans.yaml").read_text()) if d}
    spec = copy.deepcopy(plans["starter"]["spec"])
    if limits:
        spec["database"] = {"limits": limits}
    kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                "metadata": {"name": name}, "spec": spec})


def tenant_url(kube, name: str) -> str:
    import base64

    from tenant_operator.api.kinds import KINDS

    secret = kube.read(ObjectRef(KINDS[("v1", "Secret")], "tenant-db", f"tenant-{name}"))
    assert secret_password(secret)
    return base64.b64decode(secret["data"]["DATABASE_URL"]).decode()


def ready(kube, name: str) -> bool:
    body = kube.read(ObjectRef(TENANT, name)) or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (body.get("status") or {}).get("conditions", []))


def victim(url: str, seconds: float) -> list[float]:
    latencies = []
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            started = time.perf_counter()
            conn.execute("SELECT payload FROM items WHERE id = %s", [n % 1000 + 1]).fetchone()
            latencies.append(time.perf_counter() - started)
    return latencies


def noisy(url: str, sessions: int, stop: threading.Event) -> dict[str, int]:
    counts = {"done": 0, "cancelled": 0, "refused": 0}
    lock = threading.Lock()

    def run() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    while not stop.is_set():
                        try:
                            conn.execute(HEAVY)
                            outcome = "done"
                        except psycopg.errors.QueryCanceled:
                            outcome = "cancelled"
                        with lock:
                            counts[outcome] += 1
            except psycopg.OperationalError:
                with lock:
                    counts["refused"] += 1
                stop.wait(0.2)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(timeout=30)
    return counts


def measure(admin_url: str, b_url: str, a_url: str | None, heavy: int, seconds: float) -> dict:
    stop, counts = threading.Event(), {}
    worker = None
    if a_url:
        worker = threading.Thread(target=lambda: counts.update(noisy(a_url, heavy, stop)), daemon=True)
        worker.start()
        with psycopg.connect(admin_url, autocommit=True) as admin:  # B is measured once A is at work
            wait_for(lambda: admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tenant_tenant_a'"
                                           " AND state = 'active'").fetchone()[0] > 0, timeout=30, interval=0.05,
                     what="tenant A's heavy sessions")
    latencies = sorted(victim(b_url, seconds))
    stop.set()
    if worker:
        worker.join(timeout=60)
    return {"b_queries": len(latencies), "b_p50_ms": 1000 * statistics.median(latencies),
            "b_p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
            "a_done": counts.get("done", 0), "a_cancelled": counts.get("cancelled", 0),
            "a_refused": counts.get("refused", 0)}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--heavy", type=int, default=6)
    args = parser.parse_args()
    with environment() as env:
        kube = env.kube
        operator = env.operator(name="noisy")
        wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")
        plan(kube, "unbounded", None)
        plan(kube, "bounded", LIMITS)
        for name in ("tenant-a", "tenant-b"):
            kube.create(TENANT.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
                                                   "metadata": {"name": name},
                                                   "spec": {"plan": "unbounded", "tier": "shared"}})
        wait_for(lambda: ready(kube, "tenant-a") and ready(kube, "tenant-b"), timeout=120, what="both tenants")
        a_url, b_url = tenant_url(kube, "tenant-a"), tenant_url(kube, "tenant-b")
        with psycopg.connect(b_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, payload text)")
            conn.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        admin_url = env.postgres.url()
        rows = [{"scenario": "B alone", **measure(admin_url, b_url, None, args.heavy, args.seconds)},
                {"scenario": "A without limits", **measure(admin_url, b_url, a_url, args.heavy, args.seconds)}]
        kube.merge_patch(ObjectRef(TENANT, "tenant-a"), {"spec": {"plan": "bounded"}})
        with psycopg.connect(env.postgres.url(), autocommit=True) as admin:
            wait_for(lambda: admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'tenant_tenant_a'")
                     .fetchone()[0] == LIMITS["connectionLimit"], timeout=60, what="A's plan limits on its role")
        rows.append({"scenario": "A with limits", **measure(admin_url, b_url, a_url, args.heavy, args.seconds)})
        operator.stop()
    report("noisy_neighbour", rows)


if __name__ == "__main__":
    main()
