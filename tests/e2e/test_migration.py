"""Tier migration on the real API server and PostgreSQL: every row arrives, nothing is lost."""

from __future__ import annotations

import re

import psycopg
import psycopg.sql
import pytest

from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from . import writers as writers_module
from .conftest import namespaced
from .migration_data import (
    can_write,
    read_fingerprint,
    tenant_secret,
    write_sample_data,
)
from .writers import Writers, count_writes, wait_for_commits


def _databases(postgres) -> set[str]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()}


def _schemas(postgres, database: str) -> set[str]:
    with psycopg.connect(postgres.dsn(dbname=database), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def _move(tenants, kube, name: str, tier: str) -> dict:
    generation = kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": tier}})["metadata"]["generation"]

    def completed():
        found = tenants.condition(name, "Migrating")
        return found if found and found["reason"] == "MigrationCompleted" and \
            found["observedGeneration"] == generation else None

    condition = wait_for(completed, timeout=120, what=f"tenant {name} to complete its move to {tier}")
    tenant = tenants.wait_ready(name, timeout=60)
    assert tenant["status"]["tier"] == tier
    assert "migration" not in tenant["status"]
    return condition


def test_shared_to_isolated_and_back_keeps_every_row(tenants, kube, postgres, shared_database):
    name = tenants.unique("move")
    sql_name = f"tenant_{name.replace('-', '_')}"
    tenants.create(name, plan="professional", tier="shared")
    tenants.wait_ready(name)
    write_sample_data(tenant_secret(kube, name)["DATABASE_URL"])
    before = read_fingerprint(tenant_secret(kube, name)["DATABASE_URL"])

    condition = _move(tenants, kube, name, "isolated")
    assert "rows" in condition["message"] and "frozen" in condition["message"]
    secret = tenant_secret(kube, name)
    assert secret["database"] == sql_name
    assert read_fingerprint(secret["DATABASE_URL"]) == before
    assert can_write(secret["DATABASE_URL"])
    assert namespaced(kube, "apps/v1", "Deployment", "web", f"tenant-{name}")["status"]["availableReplicas"] == 2
    quarantined = [s for s in _schemas(postgres, shared_database) if s.startswith(sql_name + "$")]
    assert len(quarantined) == 1 and sql_name not in _schemas(postgres, shared_database)

    after_first = read_fingerprint(secret["DATABASE_URL"])
    _move(tenants, kube, name, "shared")
    secret = tenant_secret(kube, name)
    assert secret["database"] == shared_database
    assert read_fingerprint(secret["DATABASE_URL"]) == after_first
    assert can_write(secret["DATABASE_URL"])
    assert namespaced(kube, "apps/v1", "Deployment", "web", f"tenant-{name}") is None
    assert [d for d in _databases(postgres) if d.startswith(sql_name + "$")]
    assert sql_name not in _databases(postgres)


def test_migrated_tenant_role_reaches_no_other_tenant(tenants, kube):
    mover, neighbour = tenants.unique("mover"), tenants.unique("neighbour")
    tenants.create(mover, plan="professional", tier="shared")
    tenants.create(neighbour, plan="professional", tier="isolated")
    tenants.wait_ready(mover)
    tenants.wait_ready(neighbour)
    write_sample_data(tenant_secret(kube, mover)["DATABASE_URL"])

    _move(tenants, kube, mover, "isolated")
    mine, theirs = tenant_secret(kube, mover), tenant_secret(kube, neighbour)
    other_url = mine["DATABASE_URL"].rsplit("/", 1)[0] + "/" + theirs["database"]
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(other_url).close()


ROUND_TRIPS = 5


def test_no_committed_write_lost_while_moving_back_and_forth_under_load(tenants, kube):
    """Four writers with the tenant's credentials (three re-read the Secret on reconnect, one never
    does) insert rows while the tenant moves shared -> isolated -> shared five times over."""
    name = tenants.unique("load")
    tenants.create(name, plan="professional", tier="shared")
    tenants.wait_ready(name)
    url = tenant_secret(kube, name)["DATABASE_URL"]
    write_sample_data(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(writers_module.TABLE)
    writers = Writers(kube, name, count=4, stubborn=1).start()
    freezes: list[float] = []
    try:
        for _ in range(ROUND_TRIPS):
            for tier in ("isolated", "shared"):
                wait_for_commits(writers, writers.committed_total() + 50)  # writing as the move starts
                condition = _move(tenants, kube, name, tier)
                freezes.append(float(re.search(r"writes frozen ([\d.]+)s", condition["message"]).group(1)))
                wait_for_commits(writers, writers.committed_total() + 50)  # and again on the new home
    finally:
        writers.stop()

    count = count_writes(tenant_secret(kube, name)["DATABASE_URL"], writers)
    uncertain = sum(len(w.uncertain) for w in writers.writers)
    print(f"\n{len(freezes)} moves; writes attempted {count.attempted}, committed {count.committed}, found "
          f"{count.found} ({uncertain} uncertain); freezes {', '.join(f'{f:.2f}s' for f in freezes)}")
    assert count.missing == [], f"{len(count.missing)} committed writes lost"
    assert count.changed_ids == [], "committed rows came back with other ids"
    assert count.phantoms == [], "rows nobody wrote"
    assert sum(w.duplicate_ids for w in writers.writers) == 0, "a sequence handed out an id twice"
    assert all(len(w.committed) > 50 for w in writers.writers if w.follows_secret)
    assert read_fingerprint(tenant_secret(kube, name)["DATABASE_URL"])["customers"][0] == 500


def test_old_secret_and_old_sessions_reach_no_old_home(tenants, kube, postgres, shared_database):
    name = tenants.unique("stale")
    tenants.create(name, plan="professional", tier="shared")
    tenants.wait_ready(name)
    shared_url = tenant_secret(kube, name)["DATABASE_URL"]
    write_sample_data(shared_url)
    held = psycopg.connect(shared_url, autocommit=True)

    _move(tenants, kube, name, "isolated")
    with pytest.raises(psycopg.OperationalError):
        held.execute("INSERT INTO customers (name) VALUES ('through a session from before the move')")
    held.close()
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(shared_url).close()
    isolated_url = tenant_secret(kube, name)["DATABASE_URL"]
    assert can_write(isolated_url)

    _move(tenants, kube, name, "shared")
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(isolated_url).close()
    quarantined = [s for s in _schemas(postgres, shared_database) if s.startswith(f"tenant_{name.replace('-', '_')}$")]
    assert quarantined
    with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}.customers").format(
                psycopg.sql.Identifier(quarantined[0])))
