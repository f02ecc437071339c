"""The application's schema: tenants born with it, new versions rolled out across them.

Against the real API server and PostgreSQL, with the operator as a process. What
a user checks: the tenant's status, the DatabaseSchema's status, and the
tenant's own history table read with the tenant's own credentials.
"""

from __future__ import annotations

import copy
import secrets

import psycopg
import pytest

from tenant_operator.api.kinds import DATABASE_SCHEMA, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.cluster import REPO_ROOT
from tenant_operator.dev.session import run_kubectl
from tenant_operator.dev.wait import wait_for
from tests.e2e.migration_data import tenant_secret

pytestmark = pytest.mark.e2e

BASE = [
    {"version": 1, "description": "items", "sql": "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);"},
    {"version": 2, "description": "price", "sql": "ALTER TABLE items ADD COLUMN price numeric NOT NULL DEFAULT 0;"},
    {"version": 3, "description": "by_name", "sql": "CREATE INDEX items_by_name ON items (name);"},
]


class Schemas:
    def __init__(self, kube, plans):
        self.kube = kube
        self.plans = plans
        self.made: list[ObjectRef] = []

    def schema(self, migrations: list[dict], **rollout) -> str:
        name = f"app-{secrets.token_hex(3)}"
        body = {"apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseSchema", "metadata": {"name": name},
                "spec": {"migrations": {"inline": migrations}, "rollout": rollout}}
        self.kube.create(DATABASE_SCHEMA.collection_path(), body)
        self.made.append(ObjectRef(DATABASE_SCHEMA, name))
        return name

    def plan(self, schema: str, like: str = "starter") -> str:
        name = f"{like}-{secrets.token_hex(3)}"
        spec = copy.deepcopy(self.plans[like]["spec"])
        spec["database"] = {"schema": schema}
        self.kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                         "metadata": {"name": name}, "spec": spec})
        self.made.append(ObjectRef(TENANT_PLAN, name))
        return name

    def migrations(self, name: str, migrations: list[dict]) -> None:
        self.kube.merge_patch(ObjectRef(DATABASE_SCHEMA, name), {"spec": {"migrations": {"inline": migrations}}})

    def status(self, name: str) -> dict:
        return (self.kube.read(ObjectRef(DATABASE_SCHEMA, name)) or {}).get("status") or {}


@pytest.fixture
def schemas(kube, plans):
    made = Schemas(kube, plans)
    yield made
    for ref in reversed(made.made):
        kube.delete(ref)


def schema_version(tenants, name: str) -> int | None:
    return (((tenants.get(name) or {}).get("status") or {}).get("database") or {}).get("schemaVersion")


def history(kube, name: str) -> list[int]:
    """The versions in the tenant's history table, read with the tenant's own credentials."""
    with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_history ORDER BY version")]


def test_tenants_are_born_with_every_version_and_follow_new_ones(tenants, kube, schemas):
    schema = schemas.schema(BASE, maxParallel=2)
    first, second = schemas.plan(schema), schemas.plan(schema, like="professional")
    names = [tenants.unique("born") for _ in range(20)]
    for index, name in enumerate(names):
        tenants.create(name, plan=first if index % 2 else second,
                       tier="isolated" if index == 0 else "shared", database={"reclaimPolicy": "Delete"})
    for name in names:
        tenants.wait_ready(name, timeout=240)
        assert schema_version(tenants, name) == 3
        assert history(kube, name) == [1, 2, 3]
        assert tenants.condition(name, "SchemaReady")["reason"] == "SchemaAtLatest"
    with psycopg.connect(tenant_secret(kube, names[1])["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('kept')")  # the tenant's own data, across versions

    schemas.migrations(schema, [*BASE,
                                {"version": 4, "description": "stock", "sql": "ALTER TABLE items ADD stock int;"},
                                {"version": 5, "description": "notes", "sql": "CREATE TABLE notes (t text);"}])
    wait_for(lambda: all(schema_version(tenants, n) == 5 for n in names), timeout=180,
             what="every tenant at version 5")
    for name in names:
        assert history(kube, name) == [1, 2, 3, 4, 5]
        assert tenants.condition(name, "Ready")["status"] == "True"
    with psycopg.connect(tenant_secret(kube, names[1])["DATABASE_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT name, price, stock FROM items").fetchall() == [("kept", 0, None)]
    # The status is refreshed every 2 s: one from before version 5 also counts 20 tenants at its latest.
    status = wait_for(lambda: (s := schemas.status(schema)) and s.get("latestVersion") == 5
                      and s.get("atLatest") == 20 and s, timeout=30,
                      what="the DatabaseSchema to count every tenant at the latest version")
    assert (status["latestVersion"], status["tenants"], status["pending"], status["failed"]) == (5, 20, 0, 0)
    rolled_out = next(c for c in status["conditions"] if c["type"] == "RolledOut")
    assert rolled_out["status"] == "True"


def test_a_failing_version_halts_the_rollout_at_the_canaries_and_a_fix_resumes_it(tenants, kube, schemas):
    schema = schemas.schema(BASE[:1], maxParallel=2, maxFailures=1,
                            canary={"selector": {"matchLabels": {"ring": "canary"}}, "healthySeconds": 0})
    plan = schemas.plan(schema)
    canary, *rest = [tenants.unique("ring") for _ in range(4)]
    for name in (canary, *rest):
        tenants.create(name, plan=plan, database={"reclaimPolicy": "Delete"})
    kube.merge_patch(ObjectRef(TENANT, canary), {"metadata": {"labels": {"ring": "canary"}}})
    for name in (canary, *rest):
        tenants.wait_ready(name, timeout=180)

    broken = {"version": 2, "description": "broken", "sql": "ALTER TABLE no_such_table ADD COLUMN x int;"}
    schemas.migrations(schema, [*BASE[:1], broken])
    failed = tenants.wait_condition(canary, "SchemaReady", "False", "SchemaMigrationFailed", timeout=120)
    assert "42P01" in failed["message"] and "no_such_table" in failed["message"]
    halted = wait_for(lambda: next((c for c in schemas.status(schema).get("conditions", [])
                                    if c["type"] == "Halted" and c["status"] == "True"), None),
                      timeout=60, what="the rollout to halt")
    assert "change the DatabaseSchema" in halted["message"]
    status = schemas.status(schema)
    assert status["failed"] == 1 and status["failures"][0]["tenant"] == canary
    # The canary serves on its old version; nothing went beyond it.
    assert tenants.condition(canary, "Ready")["status"] == "True"
    assert tenants.get(canary)["status"]["phase"] == "Degraded"
    for name in rest:
        assert history(kube, name) == [1]
        # Each says why it waits once its turn has come (a reconcile in flight at the change comes again).
        wait_for(lambda n=name: tenants.condition(n, "SchemaReady")["reason"] == "SchemaRolloutPending",
                 timeout=30, what=f"{name} to say it waits for the halted rollout")
        assert history(kube, name) == [1]
    assert history(kube, canary) == [1]

    fixed = {"version": 2, "description": "fixed", "sql": "ALTER TABLE items ADD COLUMN x int;"}
    schemas.migrations(schema, [*BASE[:1], fixed])
    wait_for(lambda: all(schema_version(tenants, n) == 2 for n in (canary, *rest)), timeout=180,
             what="every tenant at the fixed version 2")
    for name in (canary, *rest):
        assert history(kube, name) == [1, 2]
    wait_for(lambda: tenants.get(canary)["status"]["phase"] == "Ready", timeout=60, what="the canary Ready again")


def test_sql_leaving_the_tenants_reach_fails_for_that_tenant_only(tenants, kube, schemas, postgres):
    escape = {"version": 2, "description": "escape", "sql": (
        "RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; CREATE TABLE public.escaped_by_migration (i int);")}
    bad, good = schemas.schema([*BASE[:1], escape]), schemas.schema(BASE[:1])
    bad_tenant, good_tenant = tenants.unique("escape"), tenants.unique("calm")
    tenants.create(bad_tenant, plan=schemas.plan(bad), database={"reclaimPolicy": "Delete"})
    tenants.create(good_tenant, plan=schemas.plan(good), database={"reclaimPolicy": "Delete"})

    failed = tenants.wait_condition(bad_tenant, "SchemaReady", "False", "SchemaMigrationFailed", timeout=120)
    assert "permission denied" in failed["message"] or "42501" in failed["message"]
    assert tenants.condition(bad_tenant, "Ready")["status"] == "False"  # born without its schema: not Ready
    tenants.wait_ready(good_tenant, timeout=120)
    assert history(kube, bad_tenant) == [1]
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        role = f"tenant_{bad_tenant.replace('-', '_')}"
        attributes = admin.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
                                   [role]).fetchone()
        assert attributes == (False, False, False)
        found = admin.execute("SELECT count(*) FROM pg_class WHERE relname = 'escaped_by_migration'").fetchone()
        assert found == (0,)


def test_the_sample_folder_of_migrations_becomes_every_version(tenants, kube, cluster):
    """kubectl apply -k manifests/samples/schema: a ConfigMap of migrations, the DatabaseSchema, the plan."""
    if not kube.read(ObjectRef(KINDS[("v1", "Namespace")], "tenant-operator")):
        run_kubectl(cluster, "create", "namespace", "tenant-operator")
    run_kubectl(cluster, "apply", "-k", str(REPO_ROOT / "manifests" / "samples" / "schema"))
    name = tenants.unique("shop")
    try:
        tenants.create(name, plan="shop", database={"reclaimPolicy": "Delete"})
        tenants.wait_ready(name, timeout=120)
        assert schema_version(tenants, name) == 3
        assert history(kube, name) == [1, 2, 3]
        with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
            index = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_by_name'::regclass")
            assert index.fetchone() == (True,)  # built CONCURRENTLY, outside a transaction
    finally:
        tenants.delete(name)
        tenants.wait_gone(name, timeout=120)
        run_kubectl(cluster, "delete", "-k", str(REPO_ROOT / "manifests" / "samples" / "schema"), "--wait=false")


def test_a_moved_tenant_keeps_its_version_and_takes_the_next_in_its_new_home(tenants, kube, schemas):
    schema = schemas.schema(BASE)
    plan = schemas.plan(schema, like="professional")
    name = tenants.unique("mover")
    tenants.create(name, plan=plan, tier="shared", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": "isolated"}})
    wait_for(lambda: (c := tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted",
             timeout=120, what=f"tenant {name} to move to isolated")
    assert tenants.get(name)["status"]["tier"] == "isolated"
    assert history(kube, name) == [1, 2, 3]  # the history moved with the data
    assert schema_version(tenants, name) == 3

    schemas.migrations(schema, [*BASE, {"version": 4, "description": "stock", "sql": "ALTER TABLE items ADD s int;"}])
    wait_for(lambda: schema_version(tenants, name) == 4, timeout=120, what="version 4 in the isolated home")
    assert history(kube, name) == [1, 2, 3, 4]


def test_a_changed_or_removed_applied_version_is_refused_and_nothing_runs(tenants, kube, schemas):
    schema = schemas.schema(BASE[:2])
    name = tenants.unique("strict")
    tenants.create(name, plan=schemas.plan(schema), database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)

    changed = {**BASE[0], "sql": BASE[0]["sql"].replace("name text", "label text")}
    schemas.migrations(schema, [changed, BASE[1], BASE[2]])
    refused = tenants.wait_condition(name, "SchemaReady", "False", "MigrationChecksumMismatch", timeout=60)
    assert "version 1" in refused["message"]
    assert history(kube, name) == [1, 2]  # version 3 did not run either
    assert tenants.condition(name, "Ready")["status"] == "True"

    schemas.migrations(schema, [BASE[0]])  # version 2 taken away, though the tenant has it
    removed = tenants.wait_condition(name, "SchemaReady", "False", "MigrationVersionRemoved", timeout=60)
    assert "2" in removed["message"]
    assert history(kube, name) == [1, 2]
    assert schema_version(tenants, name) == 2
