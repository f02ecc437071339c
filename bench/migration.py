"""Migration speed and write freeze: shared -> isolated of a tenant holding 100 MB and 1 GB, offline and online.

For each size, the same tenant data moves twice, once with MOVE_MODE=offline (the
copy inside the freeze) and once with MOVE_MODE=online (logical replication while
the tenant writes, the freeze covering the tail), while a writer inserts rows with
the tenant's own credentials all along. Reported per mode: how long writes were
frozen, the whole move, the writer's failed attempts, and committed writes missing
afterwards (must be 0). The offline run also times the copy step against
`pg_dump | pg_restore` of the same schema on the same server.

    .venv/bin/python bench/migration.py --megabytes 100 1000
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time

import psycopg

from common import arguments, environment, median, metric, report
from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

ROW_BYTES = 1000
MODES = ("offline", "online")


def fill(url: str, megabytes: int) -> int:
    """As the tenant: rows of about 1 kB (some text, numbers, a timestamp) until its schema holds `megabytes`."""
    rows = megabytes * 1024 * 1024 // ROW_BYTES
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, account int NOT NULL, amount numeric(12,2),"
                     " at timestamptz NOT NULL DEFAULT now(), payload text)")
        conn.execute("INSERT INTO events (account, amount, payload) SELECT g %% 997, g * 0.01,"
                     " repeat(md5(g::text), 29) FROM generate_series(1, %s) g", [rows])
        conn.execute("CREATE INDEX events_by_account ON events (account)")
        conn.execute("CREATE TABLE writes (id bigserial PRIMARY KEY, n bigint NOT NULL UNIQUE)")
        return conn.execute("SELECT pg_total_relation_size('events')").fetchone()[0]


class Writer:
    """Inserts rows as the tenant, re-reading its Secret on every reconnect, and counts what committed."""

    def __init__(self, kube, tenant: str):
        self.kube, self.tenant = kube, tenant
        self.committed: set[int] = set()
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self) -> str:
        secret = self.kube.read(ObjectRef(KINDS[("v1", "Secret")], "tenant-db", f"tenant-{self.tenant}"))
        return base64.b64decode(secret["data"]["DATABASE_URL"]).decode()

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(self.url(), autocommit=True, connect_timeout=3)
            except Exception:  # noqa: BLE001 - refused inside the freeze
                self.failures += 1
                self._stop.wait(0.02)
                continue
            with conn:
                while not self._stop.is_set():
                    n += 1
                    try:
                        conn.execute("INSERT INTO writes (n) VALUES (%s)", [n])
                    except Exception:  # noqa: BLE001 - the session ended: reconnect
                        self.failures += 1
                        break
                    self.committed.add(n)

    def missing(self) -> int:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            found = {row[0] for row in conn.execute("SELECT n FROM writes").fetchall()}
        return len(self.committed - found)


def pg_dump_restore(env, schema: str) -> float:
    scratch = "bench_restore_target"
    with psycopg.connect(env.postgres.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
        conn.execute(f'CREATE DATABASE "{scratch}"')
    bins = env.postgres.bin_dir
    environ = {"PGPASSWORD": env.postgres.password, "PGHOST": env.postgres.host, "PGPORT": str(env.postgres.port),
               "PGUSER": env.postgres.user, "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    subprocess.run(f'"{bins}/pg_dump" -Fc -n "{schema}" {env.shared_database} | "{bins}/pg_restore" -d {scratch}',
                   shell=True, check=True, env=environ)
    return time.monotonic() - started


def move_once(env, mode: str, megabytes: int, run: int) -> dict:
    operator = env.operator(name=f"migration-{mode}-{megabytes}-{run}", move_mode=mode)
    try:
        wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")
        name = f"big-{mode}-{run}"
        env.kube.create(TENANT.collection_path(), {
            "apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"plan": "professional", "tier": "shared"}})
        wait_for(lambda: ((env.kube.read(ObjectRef(TENANT, name)) or {}).get("status") or {}).get("phase")
                 == "Ready", timeout=120, what="the tenant to be Ready")
        writer = Writer(env.kube, name)
        size = fill(writer.url(), megabytes)
        baseline = pg_dump_restore(env, f"tenant_big_{mode}_{run}") if mode == "offline" else None
        writer.start()
        wait_for(lambda: len(writer.committed) > 100, timeout=60, what="the writer to write")
        before = operator.metrics()
        env.kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
        wait_for(lambda: metric(operator.metrics(), 'tenant_operator_migrations_total{outcome="succeeded"}') >= 1,
                 timeout=3600, interval=0.5, what="the migration to complete")
        wait_for(lambda: len(writer.committed) > 100 + len(writer.committed) // 2, timeout=60,
                 what="the writer to write on the new home")
        writer.stop()
        after = operator.metrics()
        figures = {series: metric(after, f"tenant_operator_migration_{series}_sum") -
                   metric(before, f"tenant_operator_migration_{series}_sum")
                   for series in ("copy_seconds", "duration_seconds", "freeze_seconds")}
        return {"size": size, "baseline": baseline, "freeze": figures["freeze_seconds"],
                "total": figures["duration_seconds"], "copy": figures["copy_seconds"],
                "writes": len(writer.committed), "failures": writer.failures, "missing": writer.missing()}
    finally:
        operator.stop()


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--megabytes", type=int, nargs="+", default=[100])
    args = parser.parse_args()
    rows = []
    for megabytes in args.megabytes:
        for mode in MODES:
            with environment() as env:
                runs = [move_once(env, mode, megabytes, run) for run in range(args.runs)]
            mb = runs[0]["size"] / 1024 / 1024
            row = {"megabytes": round(mb, 1), "mode": mode, "write_freeze_s": median([r["freeze"] for r in runs]),
                   "migration_s": median([r["total"] for r in runs]),
                   "writes": sum(r["writes"] for r in runs), "writer_failures": sum(r["failures"] for r in runs),
                   "lost_writes": sum(r["missing"] for r in runs)}
            if mode == "offline":
                copy, baseline = median([r["copy"] for r in runs]), median([r["baseline"] for r in runs])
                row.update(copy_s=copy, pg_dump_restore_s=baseline, throughput_ratio=baseline / copy if copy else 0)
            rows.append(row)
    report("migration", rows, {"runs": args.runs})


if __name__ == "__main__":
    main()
