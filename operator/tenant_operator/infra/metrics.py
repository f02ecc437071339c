"""Prometheus metrics: what a platform team graphs and alerts on.

`writes_total` is also how the tests and benchmarks see that an unchanged
tenant costs no writes: it counts every request that changes something in
Kubernetes and every DDL/DCL batch sent to PostgreSQL.
"""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from tenant_operator import __version__

RECONCILES = Counter("tenant_operator_reconciles_total", "Reconciles of tenants, by result", ["result"])
RECONCILE_SECONDS = Histogram("tenant_operator_reconcile_duration_seconds", "Duration of one tenant reconcile",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
API_REQUESTS = Counter("tenant_operator_api_requests_total",
                       "Requests the reconciles sent to the Kubernetes API (watches are kopf's), by verb", ["verb"])
WRITES = Counter("tenant_operator_writes_total", "Writes made, by target (kubernetes, postgres)", ["target"])
MIGRATIONS = Counter("tenant_operator_migrations_total", "Tier migrations, by outcome", ["outcome"])
MIGRATION_SECONDS = Histogram("tenant_operator_migration_duration_seconds", "Duration of a tier migration",
                              buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
MIGRATION_FREEZE = Histogram("tenant_operator_migration_freeze_seconds", "Writes frozen during a tier migration",
                             buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
MIGRATION_COPY_SECONDS = Histogram("tenant_operator_migration_copy_seconds",
                                   "Duration of the copy step (schema and rows) of a tier migration",
                                   buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800))
SCHEMA_MIGRATIONS = Counter("tenant_operator_schema_migrations_total",
                            "Versions of a DatabaseSchema applied to tenants, by schema, version and outcome",
                            ["schema", "version", "outcome"])
ROLLOUT_SECONDS = Histogram("tenant_operator_schema_rollout_duration_seconds",
                            "From a DatabaseSchema's new latest version to every tenant at it",
                            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200))
TENANTS = Gauge("tenant_operator_tenants", "Tenants by phase, tier and plan", ["phase", "tier", "plan"])
# Always 1: the labels say which build runs (`helm test` and dashboards compare the version).
BUILD_INFO = Gauge("tenant_operator_build_info", "The running tenant-operator: its version and Python's",
                   ["version", "python_version"])
BUILD_INFO.labels(__version__, platform.python_version()).set(1)

# Per tenant, one series each (per resource for quota), removed when the tenant goes: bounded by the fleet.
TENANT_DATABASE_BYTES = Gauge("tenant_database_bytes", "Bytes of the tenant's schema or database, at the last resync",
                              ["tenant"])
TENANT_DATABASE_CONNECTIONS = Gauge("tenant_database_connections",
                                    "Sessions the tenant's role had open at the last resync", ["tenant"])
TENANT_QUOTA_USED_RATIO = Gauge("tenant_quota_used_ratio", "used / hard of the tenant's ResourceQuota, per resource",
                                ["tenant", "resource"])
TENANT_STORAGE_EXCEEDED = Gauge("tenant_storage_exceeded",
                                "1 while the tenant is over its maxSize and its writes are stopped, else 0 "
                                "(only tenants with a maxSize or a stop)", ["tenant"])

_tenant_labels: dict[str, tuple[str, str, str]] = {}
_quota_resources: dict[str, set[str]] = {}


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="0.0.0.0")


def observe_reconcile(seconds: float, result: str) -> None:
    RECONCILES.labels(result).inc()
    RECONCILE_SECONDS.observe(seconds)


def count_schema_migration(schema: str, version: int, outcome: str) -> None:
    SCHEMA_MIGRATIONS.labels(schema, str(version), outcome).inc()


def count_write(target: str, amount: int = 1) -> None:
    WRITES.labels(target).inc(amount)


def track_tenant(name: str, phase: str, tier: str | None, plan: str | None) -> None:
    labels = (phase or "Pending", tier or "", plan or "")
    previous = _tenant_labels.get(name)
    if previous == labels:
        return
    if previous:
        TENANTS.labels(*previous).dec()
    TENANTS.labels(*labels).inc()
    _tenant_labels[name] = labels


def track_usage(name: str, database_bytes: int | None, connections: int | None,
                quota_ratios: dict[str, float]) -> None:
    if database_bytes is not None:
        TENANT_DATABASE_BYTES.labels(name).set(database_bytes)
    if connections is not None:
        TENANT_DATABASE_CONNECTIONS.labels(name).set(connections)
    for resource in _quota_resources.get(name, set()) - set(quota_ratios):
        TENANT_QUOTA_USED_RATIO.remove(name, resource)
    for resource, ratio in quota_ratios.items():
        TENANT_QUOTA_USED_RATIO.labels(name, resource).set(ratio)
    _quota_resources[name] = set(quota_ratios)


def track_storage(name: str, exceeded: bool | None) -> None:
    """The tenant's stop as a 0/1 series; None (no maxSize, nothing stopped): no series."""
    if exceeded is None:
        try:
            TENANT_STORAGE_EXCEEDED.remove(name)
        except KeyError:
            pass
    else:
        TENANT_STORAGE_EXCEEDED.labels(name).set(1 if exceeded else 0)


def forget_tenant(name: str) -> None:
    previous = _tenant_labels.pop(name, None)
    if previous:
        TENANTS.labels(*previous).dec()
    for gauge in (TENANT_DATABASE_BYTES, TENANT_DATABASE_CONNECTIONS, TENANT_STORAGE_EXCEEDED):
        try:
            gauge.remove(name)
        except KeyError:
            pass
    for resource in _quota_resources.pop(name, set()):
        TENANT_QUOTA_USED_RATIO.remove(name, resource)


SERVER_UP = Gauge("tenant_operator_database_server_up", "1 when the DatabaseServer is Ready (reachable, the admin's "
                  "rights), else 0", ["server"])
SERVER_TENANTS = Gauge("tenant_operator_database_server_tenants", "Tenants whose data lives on the DatabaseServer",
                       ["server"])


def track_server(name: str, ready: bool, tenants: int) -> None:
    SERVER_UP.labels(name).set(1 if ready else 0)
    SERVER_TENANTS.labels(name).set(tenants)


def forget_server(name: str) -> None:
    for gauge in (SERVER_UP, SERVER_TENANTS):
        try:
            gauge.remove(name)
        except KeyError:
            pass
