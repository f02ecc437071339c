"""What a tenant uses: status.usage as measured, the per-tenant metrics, and the dashboard that reads them."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

from tenant_operator.dev.cluster import REPO_ROOT
from tenant_operator.infra import metrics
from tenant_operator.infra.usage import DataUsage, Snapshot
from tenant_operator.reconcile.report import usage_status

QUOTA = {"hard": {"pods": "20", "requests.cpu": "4", "requests.memory": "8Gi", "count/secrets": "30"},
         "used": {"pods": "5", "requests.cpu": "500m"}}


def test_a_resync_measurement_and_the_quota_read_make_the_usage():
    usage = usage_status(None, DataUsage(bytes=81920, connections=3), QUOTA)

    assert usage == {"databaseBytes": 81920, "connections": 3, "quota": {
        "pods": {"used": "5", "hard": "20"}, "requests.cpu": {"used": "500m", "hard": "4"},
        "requests.memory": {"used": "0", "hard": "8Gi"}}}


def test_between_resyncs_the_last_measurement_stays():
    before = {"databaseBytes": 4096, "connections": 1, "quota": {"pods": {"used": "1", "hard": "20"}}}

    assert usage_status(before, None, None) == before
    assert usage_status(before, None, QUOTA)["databaseBytes"] == 4096


def test_an_idle_tenants_drift_of_kilobytes_is_no_status_write_but_a_real_change_is():
    told = usage_status(None, DataUsage(bytes=8_000_000, connections=0), None)

    drifted = usage_status(told, DataUsage(bytes=8_000_000 + 200_000, connections=0), None)
    assert drifted == told  # autovacuum's maps, catalog churn: the same status, no write
    grown = usage_status(told, DataUsage(bytes=8_000_000 + 2_000_000, connections=0), None)
    assert grown["databaseBytes"] == 10_000_000
    assert usage_status(told, DataUsage(bytes=8_000_000, connections=3), None)["connections"] == 3


def test_share_of_max_size_follows_the_size_and_the_limit():
    usage = usage_status(None, DataUsage(bytes=3 * 2**20, connections=0), QUOTA, 4 * 2**20)
    assert (usage["maxSizeBytes"], usage["maxSizeShare"]) == (4 * 2**20, "75%")

    later = usage_status(usage, DataUsage(bytes=5 * 2**20, connections=0), None)  # limit not known: kept
    assert later["maxSizeShare"] == "125%"

    dropped = usage_status(later, None, QUOTA, None)  # the plan dropped its maxSize
    assert "maxSizeBytes" not in dropped and "maxSizeShare" not in dropped


def test_per_tenant_series_are_dropped_with_the_tenant():
    metrics.track_usage("gone-soon", 1024, 2, {"pods": 0.25, "requests.cpu": 0.5})
    assert REGISTRY.get_sample_value("tenant_database_bytes", {"tenant": "gone-soon"}) == 1024
    assert REGISTRY.get_sample_value("tenant_quota_used_ratio", {"tenant": "gone-soon", "resource": "pods"}) == 0.25

    metrics.track_usage("gone-soon", 2048, 0, {"pods": 0.5})  # a resource no longer in the quota goes too
    assert REGISTRY.get_sample_value("tenant_quota_used_ratio",
                                     {"tenant": "gone-soon", "resource": "requests.cpu"}) is None

    metrics.track_storage("gone-soon", True)
    assert REGISTRY.get_sample_value("tenant_storage_exceeded", {"tenant": "gone-soon"}) == 1

    metrics.forget_tenant("gone-soon")
    for name in ("tenant_database_bytes", "tenant_database_connections", "tenant_storage_exceeded"):
        assert REGISTRY.get_sample_value(name, {"tenant": "gone-soon"}) is None
    assert REGISTRY.get_sample_value("tenant_quota_used_ratio", {"tenant": "gone-soon", "resource": "pods"}) is None


def test_the_stop_series_goes_when_the_plan_drops_its_max_size():
    metrics.track_storage("unbounded-soon", False)
    assert REGISTRY.get_sample_value("tenant_storage_exceeded", {"tenant": "unbounded-soon"}) == 0
    metrics.track_storage("unbounded-soon", None)
    assert REGISTRY.get_sample_value("tenant_storage_exceeded", {"tenant": "unbounded-soon"}) is None


def test_one_measurement_serves_a_whole_pass():
    taken = []
    snapshot = Snapshot(lambda: taken.append(1) or {"tenant_a": DataUsage(1, 0)}, max_age=60)

    for _ in range(100):
        assert snapshot.get()["tenant_a"].bytes == 1
    snapshot.forget()
    snapshot.get()

    assert len(taken) == 2


def exported_metric_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_dashboard_query_names_a_metric_the_operator_exports():
    dashboard = json.loads((REPO_ROOT / "charts" / "tenant-operator" / "dashboards" / "tenants.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exported = exported_metric_names()

    assert len(exprs) == len(dashboard["panels"]) >= 5
    for expr in exprs:
        named = set(re.findall(r"\b(tenant_[a-z_]+)\b", expr))
        assert named, f"{expr!r} names no metric of ours"
        assert named <= exported, f"{expr!r} names {named - exported}, which the operator does not export"
