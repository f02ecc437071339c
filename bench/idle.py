"""Idle cost and restart: what N Ready tenants cost when nothing changes, and after a restart.

Idle: writes to the API server and to PostgreSQL over a quiet window (must be 0),
API requests per tenant per hour, operator CPU seconds, RSS (and MB per 1,000
tenants). Restart: stop and start the operator, time until it has examined every
tenant (reconciles >= N), writes made (must be 0), against a bare LIST of the
same tenants with the same client.

    .venv/bin/python bench/idle.py --tenants 1000 --seconds 300
"""

from __future__ import annotations

import time

from common import (
    arguments,
    create_tenants,
    environment,
    median,
    metric,
    process_usage,
    report,
    tenant_names,
    wait_all_ready,
)
from tenant_operator.api.kinds import TENANT
from tenant_operator.dev.wait import wait_for


def _started(operator) -> str:
    return wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--tenants", type=int, nargs="+", default=[100])
    parser.add_argument("--seconds", type=float, default=300, help="the quiet window")
    parser.add_argument("--resync-seconds", type=float, default=300)
    args = parser.parse_args()
    rows = []
    for count in args.tenants:
        with environment() as env:
            operator = env.operator(name="idle", resync_seconds=args.resync_seconds)
            _started(operator)
            create_tenants(env.kube, tenant_names(count, 0.1))
            wait_all_ready(env.kube, count, timeout=max(600, count * 3), operator=operator)
            time.sleep(5)  # let the last status writes and events land before the window opens
            before, usage_before = operator.metrics(), process_usage(operator.process.pid)
            time.sleep(args.seconds)
            after, usage_after = operator.metrics(), process_usage(operator.process.pid)
            hours = args.seconds / 3600
            requests = metric(after, "tenant_operator_api_requests_total") - metric(
                before, "tenant_operator_api_requests_total")
            reconciles = metric(after, "tenant_operator_reconciles_total") - metric(
                before, "tenant_operator_reconciles_total")
            idle = {
                "tenants": count,
                "window_s": args.seconds,
                "kube_writes": metric(after, 'tenant_operator_writes_total{target="kubernetes"}')
                - metric(before, 'tenant_operator_writes_total{target="kubernetes"}'),
                "pg_writes": metric(after, 'tenant_operator_writes_total{target="postgres"}')
                - metric(before, 'tenant_operator_writes_total{target="postgres"}'),
                "reconciles": reconciles,
                "requests_per_tenant_hour": requests / count / hours,
                "cpu_s": usage_after["cpu_seconds"] - usage_before["cpu_seconds"],
                "rss_mb": usage_after["rss_mb"],
                "rss_mb_per_1000": usage_after["rss_mb"] / count * 1000,
            }
            operator.stop()

            lists = []
            for _ in range(max(3, args.runs)):
                started = time.monotonic()
                env.kube.request("GET", TENANT.collection_path())
                lists.append(time.monotonic() - started)
            restarted = env.operator(name="restarted", resync_seconds=args.resync_seconds)
            started = time.monotonic()
            wait_for(lambda: metric(restarted.metrics(), "tenant_operator_reconciles_total") >= count,
                     timeout=max(300, count), interval=0.1, what="every tenant examined after the restart")
            examined = time.monotonic() - started
            text = restarted.metrics()
            restarted.stop()
            rows.append({**idle, "restart_examined_s": examined, "bare_list_s": median(lists),
                         "restart_ratio": examined / median(lists),
                         "restart_writes": metric(text, "tenant_operator_writes_total")})
    report("idle", rows, {"resync_seconds": args.resync_seconds})


if __name__ == "__main__":
    main()
