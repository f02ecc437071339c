"""Migration speed: shared -> isolated of a tenant holding 100 MB and 1 GB of rows.

Copy throughput of the operator's copy step against `pg_dump | pg_restore` of the
same schema on the same server, the whole migration's duration, and how long the
tenant's writes were frozen.

    .venv/bin/python bench/migration.py --megabytes 100 1000
"""

from __future__ import annotations

import subprocess
import time

import psycopg

from common import arguments, environment, median, metric, report, wait_all_ready
from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

ROW_BYTES = 1000


def fill(dsn: str, schema: str, megabytes: int) -> int:
    """Rows of about 1 kB (some text, numbers, a timestamp) until the schema holds `megabytes`."""
    rows = megabytes * 1024 * 1024 // ROW_BYTES
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{schema}"')
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, account int NOT NULL, amount numeric(12,2),"
                     " at timestamptz NOT NULL DEFAULT now(), payload text)")
        conn.execute("INSERT INTO events (account, amount, payload) SELECT g %% 997, g * 0.01,"
                     " repeat(md5(g::text), 29) FROM generate_series(1, %s) g", [rows])
        conn.execute("CREATE INDEX events_by_account ON events (account)")
        return conn.execute("SELECT pg_total_relation_size('events')").fetchone()[0]


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


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--megabytes", type=int, nargs="+", default=[100])
    args = parser.parse_args()
    rows = []
    for megabytes in args.megabytes:
        with environment() as env:
            operator = env.operator(name="migration")
            wait_for(lambda: operator.metrics(), timeout=60, what="the operator to start")
            copies, baselines, totals, freezes = [], [], [], []
            for run in range(args.runs):
                name = f"big{run}"
                schema = f"tenant_{name}"
                env.kube.create(TENANT.collection_path(), {
                    "apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                    "spec": {"plan": "professional", "tier": "shared"}})
                wait_all_ready(env.kube, run + 1, timeout=120, operator=operator)
                size = fill(env.postgres.dsn(dbname=env.shared_database), schema, megabytes)
                baselines.append(pg_dump_restore(env, schema))
                before = operator.metrics()
                env.kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
                wait_for(lambda: metric(operator.metrics(), 'tenant_operator_migrations_total{outcome="succeeded"}')
                         >= run + 1, timeout=3600, interval=0.5, what="the migration to complete")
                after = operator.metrics()
                for values, series in ((copies, "tenant_operator_migration_copy_seconds_sum"),
                                       (totals, "tenant_operator_migration_duration_seconds_sum"),
                                       (freezes, "tenant_operator_migration_freeze_seconds_sum")):
                    values.append(metric(after, series) - metric(before, series))
            operator.stop()
            mb = size / 1024 / 1024
            rows.append({"megabytes": round(mb, 1), "copy_s": median(copies), "copy_mb_s": mb / median(copies),
                         "pg_dump_restore_s": median(baselines), "baseline_mb_s": mb / median(baselines),
                         "throughput_ratio": median(baselines) / median(copies),
                         "migration_s": median(totals), "write_freeze_s": median(freezes)})
    report("migration", rows, {"runs": args.runs})


if __name__ == "__main__":
    main()
