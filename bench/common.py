"""What every benchmark needs: its own control plane and PostgreSQL, the operator, figures.

Each benchmark starts a fresh local control plane (or uses KUBECONFIG) and a
throwaway PostgreSQL, so figures of one run never include another's objects.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from tenant_operator.api.kinds import TENANT  # noqa: E402
from tenant_operator.dev.cluster import existing_cluster, start_cluster  # noqa: E402
from tenant_operator.dev.postgres import start_postgres, stop_postgres  # noqa: E402
from tenant_operator.dev.session import OperatorProcess, install_crds, run_kubectl  # noqa: E402
from tenant_operator.infra.kube import Kube  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class Environment:
    def __init__(self, cluster, server, kube: Kube, workdir: Path):
        self.cluster, self.postgres, self.kube, self.workdir = cluster, server, kube, workdir
        self.shared_database = "tenants"

    def operator(self, name: str = "operator", **settings) -> OperatorProcess:
        settings.setdefault("shared_database", self.shared_database)
        return OperatorProcess(self.cluster, self.postgres.url(), self.workdir / f"{name}.log", **settings)


@contextmanager
def environment():
    from kubernetes import config

    workdir = Path(tempfile.mkdtemp(prefix="tenant-operator-bench-"))
    cluster = existing_cluster() or start_cluster()
    server = start_postgres()
    try:
        install_crds(cluster)
        run_kubectl(cluster, "apply", "-f", str(ROOT / "manifests" / "samples" / "plans.yaml"))
        client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        client.configuration.connection_pool_maxsize = 32
        yield Environment(cluster, server, Kube(client, field_manager="bench"), workdir)
    finally:
        if cluster.owned:
            cluster.stop()
            shutil.rmtree(cluster.workdir, ignore_errors=True)
        stop_postgres(server, mode="immediate")
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def tenant_body(name: str, tier: str) -> dict:
    plan = "professional" if tier == "isolated" else "starter"
    return {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"plan": plan, "tier": tier}}


def tenant_names(count: int, isolated_fraction: float, prefix: str = "t") -> list[tuple[str, str]]:
    isolated_every = round(1 / isolated_fraction) if isolated_fraction else 0
    return [(f"{prefix}{i:05d}", "isolated" if isolated_every and i % isolated_every == 0 else "shared")
            for i in range(count)]


def create_tenants(kube: Kube, tenants: list[tuple[str, str]], threads: int = 8) -> None:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: kube.create(TENANT.collection_path(), tenant_body(*item)), tenants))


def is_ready(item: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (item.get("status") or {}).get("conditions", []))


class ReadyTenants:
    """Which tenants are Ready (or pass another `test`), kept up to date by one watch.

    Polling a LIST of a thousand tenants every half second would load the API
    server the operator is being measured on; one watch costs it almost nothing.
    """

    def __init__(self, kube: Kube, test: Callable[[dict], bool] = is_ready):
        self.kube = kube
        self.test = test
        self._ready: dict[str, bool] = {}
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="ready-tenants", daemon=True)

    def __enter__(self) -> ReadyTenants:
        self._relist()
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stopped.set()

    def wait(self, expected: int, timeout: float, operator: OperatorProcess | None = None) -> float:
        """Seconds until `expected` tenants are Ready."""
        started = time.monotonic()
        with self._changed:
            while sum(self._ready.values()) < expected:
                if operator and operator.process.poll() is not None:
                    raise RuntimeError(f"the operator exited; log: {operator.log_path}")
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{sum(self._ready.values())}/{expected} tenants Ready after {timeout}s")
                self._changed.wait(1.0)
        return time.monotonic() - started

    def _follow(self) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(self.kube.api_client)
        group, version = TENANT.api_version.split("/")
        while not self._stopped.is_set():
            try:
                stream = watch.Watch().stream(api.list_cluster_custom_object, group, version, TENANT.plural,
                                              resource_version=self._version, timeout_seconds=30)
                for event in stream:
                    self._version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        with self._changed:
                            self._ready.pop(event["object"]["metadata"]["name"], None)
                    else:
                        self._update([event["object"]])
                    if self._stopped.is_set():
                        return
            except Exception:  # noqa: BLE001 - the cluster went away at the end of a run, or the watch expired
                if self._stopped.wait(1.0):
                    return
                self._relist()

    def _relist(self) -> None:
        listed = self.kube.request("GET", TENANT.collection_path())
        self._update(listed["items"])
        self._version = listed["metadata"]["resourceVersion"]

    def _update(self, items: list[dict]) -> None:
        with self._changed:
            for item in items:
                self._ready[item["metadata"]["name"]] = self.test(item)
            self._changed.notify_all()


def wait_all_ready(kube: Kube, expected: int, timeout: float, operator: OperatorProcess | None = None) -> float:
    with ReadyTenants(kube) as ready:
        return ready.wait(expected, timeout, operator)


def metric(text: str, name: str) -> float:
    return sum(float(m.group(2)) for m in re.finditer(re.escape(name) + r"(\{[^}]*\})? ([0-9.e+-]+)", text))


def process_usage(pid: int) -> dict:
    """CPU seconds and resident memory of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return {"cpu_seconds": cpu, "rss_mb": rss_kb / 1024}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(name: str, rows: list[dict], extra: dict | None = None) -> Path:
    """Print rows as a table and write them (with the run's parameters) as JSON."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(_fmt(row.get(c))) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"benchmark": name, "rows": rows, **(extra or {})}, indent=2))
    print(f"results: {path}")
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return "" if value is None else str(value)


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=1, help="repeat and report the median")
    return parser
