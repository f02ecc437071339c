"""The benchmarks still run: each script once at a tiny size, so they do not rot.

These are not measurements (see bench/ and the README for those); they check
that each script completes and writes the figures it promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script,args,figures", [
    ("provision.py", ["--tenants", "5", "--isolated-fraction", "0.2"], ["floor_s", "operator_s", "ratio"]),
    ("idle.py", ["--tenants", "5", "--seconds", "3", "--resync-seconds", "1"],
     ["kube_writes", "pg_writes", "requests_per_tenant_hour", "rss_mb", "restart_examined_s", "restart_writes"]),
    ("migration.py", ["--megabytes", "2"],
     ["copy_s", "pg_dump_restore_s", "throughput_ratio", "write_freeze_s", "migration_s", "lost_writes"]),
    ("schema_rollout.py", ["--tenants", "4", "--rows", "100"],
     ["floor_s", "floor_with_status_s", "operator_s", "ratio", "ratio_with_status"]),
    ("shared_app.py", ["--seconds", "1", "--clients", "2"], ["requests", "errors", "rps", "p50_ms", "p99_ms"]),
    ("noisy_neighbour.py", ["--seconds", "1", "--heavy", "2"], ["b_queries", "b_p50_ms", "b_p99_ms", "a_done"]),
    ("database_servers.py", ["--tenants", "6", "--drain", "2", "--drain-mb", "1"],
     ["floor_s", "operator_s", "ratio", "on_a", "on_b", "drain_s", "s_per_tenant", "freeze_p50_s", "freeze_max_s",
      "rows_verified"]),
])
def test_benchmark_runs_and_reports_its_figures(script, args, figures, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1].removeprefix("results: "))
    rows = json.loads(path.read_text())["rows"]
    path.unlink()
    assert rows and all(figure in rows[0] for figure in figures)
    assert all(isinstance(rows[0][figure], (int, float)) for figure in figures)
