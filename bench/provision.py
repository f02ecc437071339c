"""Provisioning throughput: N tenants applied at once, time until all are Ready, against the floor.

The floor is a bare script with the same client, creating the same objects on
the same API server and running the same DDL on the same PostgreSQL, with the
same parallelism as the operator's workers, and waiting for the same
readiness (isolated Deployments Available). Figure of merit: operator / floor.

    .venv/bin/python bench/provision.py --tenants 100 1000 --isolated-fraction 0 0.1
"""

from __future__ import annotations

import concurrent.futures
import time

import yaml

from common import (
    ROOT,
    Environment,
    ReadyTenants,
    arguments,
    create_tenants,
    environment,
    median,
    metric,
    process_usage,
    report,
    tenant_body,
    tenant_names,
)
from tenant_operator.api.kinds import ObjectRef
from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import postgres, shared_database

WORKERS = 4


def floor(env: Environment, tenants: list[tuple[str, str]]) -> float:
    settings = Settings(database_url=env.postgres.url(), shared_database=env.shared_database)
    plans = {doc["metadata"]["name"]: TenantPlan.from_body(doc)
             for doc in yaml.safe_load_all((ROOT / "manifests/samples/plans.yaml").read_text()) if doc}
    kube = env.kube
    host, port = settings.tenant_endpoint()
    routes = render.routes_ref(settings)

    def provision(item: tuple[str, str]) -> ObjectRef | None:
        name, tier = item
        body = tenant_body(name, tier)
        tenant = Tenant.from_body({**body, "metadata": {"name": name, "generation": 1}})
        plan = plans[tenant.spec.plan]
        objects = render.tenant_objects(tenant, plan, settings, tier)
        for manifest in objects["namespace"] + objects["quota"]:
            kube.apply(manifest)
        placement = postgres.placement(name, tier, settings.shared_database)
        password = postgres.new_password()
        postgres.ensure_tenant_data(settings.admin_dsn(), placement, password)
        kube.apply(render.database_secret(tenant, host, port, placement.database, placement.schema, password))
        if tier == "shared":
            kube.merge_patch(routes, {"data": {name: render.route_entry(tenant, placement.database)}})
        for manifest in objects["workloads"]:
            kube.apply(manifest)
        deployments = [ObjectRef.of(m) for m in objects["workloads"] if m["kind"] == "Deployment"]
        return deployments[0] if deployments else None

    started = time.monotonic()
    shared_database.ensure_shared_database(settings.maintenance_dsn(), settings.shared_database)
    for manifest in render.shared_infrastructure(settings):
        kube.apply(manifest)
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        waiting = [ref for ref in pool.map(provision, tenants) if ref]
    while waiting:
        waiting = [ref for ref in waiting if not _available(kube.read(ref))]
        if waiting:
            time.sleep(0.5)
    return time.monotonic() - started


def _available(deployment: dict | None) -> bool:
    conditions = ((deployment or {}).get("status") or {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def operator_run(env: Environment, tenants: list[tuple[str, str]], label: str) -> dict:
    operator = env.operator(name=f"operator-{label}", workers=WORKERS)
    try:
        _wait_metrics(operator)
        with ReadyTenants(env.kube) as ready:
            started = time.monotonic()
            create_tenants(env.kube, tenants)
            ready.wait(len(tenants), timeout=max(600, len(tenants) * 3), operator=operator)
            seconds = time.monotonic() - started
        usage = process_usage(operator.process.pid)
        text = operator.metrics()
        return {"seconds": seconds, **usage,
                "kube_writes": metric(text, 'tenant_operator_writes_total{target="kubernetes"}'),
                "pg_writes": metric(text, 'tenant_operator_writes_total{target="postgres"}'),
                "api_requests": metric(text, "tenant_operator_api_requests_total")}
    finally:
        operator.stop()


def _wait_metrics(operator) -> None:
    from tenant_operator.dev.wait import wait_for

    wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--tenants", type=int, nargs="+", default=[100])
    parser.add_argument("--isolated-fraction", type=float, nargs="+", default=[0.0, 0.1])
    args = parser.parse_args()
    rows = []
    for count in args.tenants:
        for fraction in args.isolated_fraction:
            floors, operators, last = [], [], {}
            for run in range(args.runs):
                # Each on a cluster and server of its own: the second would otherwise start with the first's
                # objects in etcd and the first's routes in the shared ConfigMap it patches.
                with environment() as env:
                    floors.append(floor(env, tenant_names(count, fraction)))
                with environment() as env:
                    last = operator_run(env, tenant_names(count, fraction), f"{count}-{run}")
                    operators.append(last["seconds"])
            rows.append({"tenants": count, "isolated": fraction, "floor_s": median(floors),
                         "operator_s": median(operators), "ratio": median(operators) / median(floors),
                         "tenants_per_s": count / median(operators),
                         "kube_writes_per_tenant": last["kube_writes"] / count,
                         "pg_writes_per_tenant": last["pg_writes"] / count,
                         "requests_per_tenant": last["api_requests"] / count,
                         "cpu_s": last["cpu_seconds"], "rss_mb": last["rss_mb"]})
    report("provision", rows, {"runs": args.runs, "workers": WORKERS})


if __name__ == "__main__":
    main()
