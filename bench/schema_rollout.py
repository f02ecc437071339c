"""Schema rollout speed: one new version across N shared tenants, operator vs a bare loop.

Every tenant is born with version 1 (a table of `--rows` rows). The new version
adds a column with a default and an index on that table. The floor applies the
same SQL to every tenant with a bare psycopg loop, logged in as each tenant, with
the same parallelism, on the same server; then it is undone and the operator
rolls it out as version 2 (maxParallel = the same parallelism), timed from the
DatabaseSchema's change to every tenant's status saying version 2. A second floor
does the same loop and also writes each tenant's version into its status (one
status write per tenant, as the operator must): the part Kubernetes charges for.

    .venv/bin/python bench/schema_rollout.py --tenants 1000 --rows 10000 --parallel 4
"""

from __future__ import annotations

import concurrent.futures
import copy
import time

import psycopg
import yaml

from common import ROOT, ReadyTenants, arguments, environment, median, report, wait_all_ready
from tenant_operator.api.kinds import DATABASE_SCHEMA, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube
from tenant_operator.reconcile.state import secret_password

SCHEMA = "bench-app"
PLAN = "bench-shop"
NEW_VERSION = ("ALTER TABLE items ADD COLUMN flagged boolean NOT NULL DEFAULT false;"
               " CREATE INDEX items_by_account ON items (account);")
UNDO = "DROP INDEX items_by_account; ALTER TABLE items DROP COLUMN flagged;"


def v1(rows: int) -> dict:
    return {"version": 1, "description": "items", "sql": (
        "CREATE TABLE items (id bigserial PRIMARY KEY, account int NOT NULL, payload text NOT NULL);"
        f" INSERT INTO items (account, payload) SELECT g % 997, md5(g::text) FROM generate_series(1, {rows}) g;")}


def setup(env, tenants: int, rows: int, parallel: int) -> list[str]:
    kube = env.kube
    kube.create(DATABASE_SCHEMA.collection_path(), {
        "apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseSchema", "metadata": {"name": SCHEMA},
        "spec": {"migrations": {"inline": [v1(rows)]}, "rollout": {"maxParallel": parallel}}})
    plans = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (ROOT / "manifests" / "samples" / "plans.yaml").read_text()) if d}
    spec = copy.deepcopy(plans["starter"]["spec"])
    spec["database"] = {"schema": SCHEMA}
    kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                "metadata": {"name": PLAN}, "spec": spec})
    names = [f"s{i:05d}" for i in range(tenants)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: kube.create(TENANT.collection_path(), {
            "apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"plan": PLAN, "tier": "shared"}}), names))
    return names


def tenant_urls(kube: Kube, names: list[str]) -> list[str]:
    import base64

    urls = []
    for name in names:
        secret = kube.read(ObjectRef(KINDS[("v1", "Secret")], "tenant-db", f"tenant-{name}"))
        assert secret_password(secret)
        urls.append(base64.b64decode(secret["data"]["DATABASE_URL"]).decode())
    return urls


def floor(urls: list[str], parallel: int, sql: str, statuses: tuple[Kube, list[str], int] | None = None) -> float:
    """The bare loop; with `statuses` (kube, tenant names, version) it also records each tenant's version in
    its status, as the operator must: one status write per tenant, the part of the work Kubernetes charges for."""
    def one(index: int) -> None:
        with psycopg.connect(urls[index]) as conn:  # one transaction, committed on leaving the block
            conn.execute(sql.encode())
        if statuses:
            kube, names, version = statuses
            kube.request("PATCH", TENANT.path(names[index]) + "/status", [("fieldManager", "bench-floor")],
                         {"status": {"database": {"schemaVersion": version}}},
                         content_type="application/merge-patch+json")

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(len(urls))))
    return time.monotonic() - started


def at_version_2(item: dict) -> bool:
    return ((item.get("status") or {}).get("database") or {}).get("schemaVersion") == 2


def operator_rollout(kube: Kube, tenants: int, rows: int) -> float:
    """From the DatabaseSchema's change to every tenant's status at version 2, seen by one watch (a LIST of every
    tenant polled several times a second would load the API server the operator is measured on)."""
    with ReadyTenants(kube, at_version_2) as done:
        started = time.monotonic()
        kube.merge_patch(ObjectRef(DATABASE_SCHEMA, SCHEMA), {"spec": {"migrations": {"inline": [
            v1(rows), {"version": 2, "description": "flagged", "sql": NEW_VERSION}]}}})
        done.wait(tenants, timeout=3600)
        return time.monotonic() - started


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="the operator's workers (its default: 4)")
    args = parser.parse_args()
    floors, with_status, operators = [], [], []
    for _ in range(args.runs):
        with environment() as env:
            operator = env.operator(name="schema-rollout", workers=args.workers)
            wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")
            names = setup(env, args.tenants, args.rows, args.parallel)
            wait_all_ready(env.kube, args.tenants, timeout=60 + args.tenants * 2, operator=operator)
            urls = tenant_urls(env.kube, names)
            floors.append(floor(urls, args.parallel, NEW_VERSION))
            floor(urls, args.parallel, UNDO)
            with_status.append(floor(urls, args.parallel, NEW_VERSION, (env.kube, names, 2)))
            floor(urls, args.parallel, UNDO, (env.kube, names, 1))
            operators.append(operator_rollout(env.kube, args.tenants, args.rows))
            operator.stop()
    row = {"tenants": args.tenants, "rows": args.rows, "parallel": args.parallel, "floor_s": median(floors),
           "floor_with_status_s": median(with_status), "operator_s": median(operators),
           "ratio": median(operators) / median(floors),
           "ratio_with_status": median(operators) / median(with_status)}
    report("schema_rollout", [row])


if __name__ == "__main__":
    main()
