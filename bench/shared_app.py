"""Requests per second through the reference shared app, for two shared tenants.

The operator provisions two tenants on a plan whose DatabaseSchema holds the
app's notes table; the reference app (examples/shared-app) runs as a local
process fed from the real routing ConfigMap and the app logins' Secret, and
`--clients` threads send requests alternating between the two tenants (every
`--write-every`-th a POST, the rest GETs) for `--seconds`. Each request is one
transaction that does SET LOCAL ROLE and SET LOCAL search_path first.

    .venv/bin/python bench/shared_app.py --seconds 10 --clients 8
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from common import ROOT, arguments, environment, report
from tenant_operator.api.kinds import DATABASE_SCHEMA, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.shared_app import NOTES_SQL, AppProcess, RoutesVolume
from tenant_operator.dev.wait import wait_for

TENANTS = ("bench-a", "bench-b")


def setup(env) -> None:
    kube = env.kube
    kube.create(DATABASE_SCHEMA.collection_path(), {
        "apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseSchema", "metadata": {"name": "bench-notes"},
        "spec": {"migrations": {"inline": [{"version": 1, "description": "notes", "sql": NOTES_SQL}]}}})
    plans = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (ROOT / "manifests" / "samples" / "plans.yaml").read_text()) if d}
    spec = copy.deepcopy(plans["starter"]["spec"])
    spec["database"] = {"schema": "bench-notes"}
    kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                "metadata": {"name": "bench-notes"}, "spec": spec})
    for name in TENANTS:
        kube.create(TENANT.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
                                               "metadata": {"name": name},
                                               "spec": {"plan": "bench-notes", "tier": "shared"}})

    def ready(name: str) -> bool:
        body = kube.read(ObjectRef(TENANT, name)) or {}
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (body.get("status") or {}).get("conditions", []))

    wait_for(lambda: all(ready(name) for name in TENANTS), timeout=120, what="both tenants Ready")


def drive(app: AppProcess, seconds: float, clients: int, write_every: int) -> dict:
    deadline = time.monotonic() + seconds

    def client(index: int) -> tuple[list[float], int]:
        latencies, errors, n = [], 0, 0
        while time.monotonic() < deadline:
            n += 1
            tenant = TENANTS[(index + n) % len(TENANTS)]
            started = time.perf_counter()
            if n % write_every == 0:
                status = app.request("POST", "/notes", tenant, {"body": f"client {index} note {n}"})[0]
                ok = status == 201
            else:
                ok = app.request("GET", "/notes", tenant)[0] == 200
            latencies.append(time.perf_counter() - started)
            errors += not ok
        return latencies, errors

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.monotonic() - started
    latencies = sorted(latency for found, _ in results for latency in found)
    return {"clients": clients, "requests": len(latencies), "errors": sum(errors for _, errors in results),
            "rps": len(latencies) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1]}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--write-every", type=int, default=5)
    args = parser.parse_args()
    with environment() as env:
        operator = env.operator(name="shared-app")
        wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")
        setup(env)
        secret = env.kube.read(ObjectRef(KINDS[("v1", "Secret")], "shared-app-db", "tenancy-shared"))
        workdir = Path(tempfile.mkdtemp(prefix="shared-app-bench-"))
        volume = RoutesVolume(env.kube, "tenancy-shared", workdir / "routes")
        volume.sync()
        app = AppProcess({"DATABASE_URL": base64.b64decode(secret["data"]["DATABASE_URL"]).decode(),
                          "TENANT_ROUTES_DIR": str(volume.directory), "POOL_SIZE": str(args.clients)},
                         workdir / "app.log")
        try:
            for name in TENANTS:
                app.answers(name, 200)
            row = drive(app, args.seconds, args.clients, args.write_every)
        finally:
            app.stop()
            operator.stop()
    report("shared_app", [row])


if __name__ == "__main__":
    main()
