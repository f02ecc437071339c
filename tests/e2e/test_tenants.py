"""What a shared and an isolated tenant become, on the real API server and PostgreSQL."""

from __future__ import annotations

import base64
import re

import psycopg
import pytest

from tenant_operator.api.kinds import DATABASE_SERVER, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.postgres import restart_postgres, stop_postgres, wait_ready
from tenant_operator.dev.session import run_kubectl
from tenant_operator.dev.wait import wait_for

from .conftest import RESYNC_SECONDS, namespaced


def secret_values(kube, name: str) -> dict[str, str]:
    secret = namespaced(kube, "v1", "Secret", "tenant-db", f"tenant-{name}")
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def routes(kube) -> dict[str, str]:
    return (namespaced(kube, "v1", "ConfigMap", "tenant-routes", "tenancy-shared") or {}).get("data") or {}


def test_shared_tenant_gets_namespace_quota_access_schema_and_route(tenants, kube, shared_database):
    name = tenants.unique("shared")
    tenants.create(name, plan="starter", owners=[{"kind": "User", "name": "alice@example.com"}],
                   quotaOverrides={"pods": "7"})
    tenant = tenants.wait_ready(name)
    ns = f"tenant-{name}"

    status = tenant["status"]
    assert status["phase"] == "Ready"
    assert status["tier"] == "shared"
    assert status["namespace"] == ns
    assert status["database"]["database"] == shared_database
    assert status["database"]["schema"] == f"tenant_{name.replace('-', '_')}"
    assert status["observedGeneration"] == tenant["metadata"]["generation"]
    for type_ in ("Ready", "NamespaceReady", "QuotaReady", "DatabaseReady", "WorkloadsReady"):
        condition = tenants.condition(name, type_)
        assert condition["status"] == "True", condition
        assert condition["reason"] and condition["lastTransitionTime"]

    labels = namespaced(kube, "v1", "Namespace", ns)["metadata"]["labels"]
    assert labels["tenancy.dev/tenant"] == name
    assert labels["tenancy.dev/tier"] == "shared"
    assert labels["tenancy.dev/plan"] == "starter"

    quota = namespaced(kube, "v1", "ResourceQuota", "tenant-quota", ns)["spec"]["hard"]
    assert quota["pods"] == "7"  # the override wins over the plan's 20
    assert quota["requests.memory"] == "4Gi"
    limits = namespaced(kube, "v1", "LimitRange", "tenant-limits", ns)["spec"]["limits"][0]
    assert limits["default"]["cpu"] == "500m"

    policy = namespaced(kube, "networking.k8s.io/v1", "NetworkPolicy", "tenant-isolation", ns)["spec"]
    peers = policy["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}} in peers
    assert policy["podSelector"] == {}

    binding = namespaced(kube, "rbac.authorization.k8s.io/v1", "RoleBinding", "tenant-owners", ns)
    assert binding["roleRef"]["name"] == "tenancy-tenant-owner"
    assert binding["subjects"] == [{"kind": "User", "name": "alice@example.com",
                                    "apiGroup": "rbac.authorization.k8s.io"}]

    values = secret_values(kube, name)
    assert values["schema"] == status["database"]["schema"]
    assert values["user"] == values["schema"]
    assert values["database"] == shared_database
    assert len(values["password"]) >= 24
    assert values["password"] in values["DATABASE_URL"]

    entry = routes(kube)[name]
    assert f'"schema": "{values["schema"]}"' in entry and '"state": "active"' in entry


def test_shared_tenant_role_creates_tables_in_its_own_schema_only(tenants, kube):
    first, second = tenants.unique("own"), tenants.unique("other")
    tenants.create(first, plan="starter")
    tenants.create(second, plan="starter")
    tenants.wait_ready(first)
    tenants.wait_ready(second)
    mine, theirs = secret_values(kube, first), secret_values(kube, second)

    with psycopg.connect(mine["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders (note) VALUES ('first')")
        # The schema the unqualified name landed in, whatever other schemas hold an `orders`.
        schema = conn.execute(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'orders'::regclass").fetchone()[0]
        assert schema == mine["schema"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'CREATE TABLE "{theirs["schema"]}".stolen (id int)')


def test_isolated_tenant_gets_own_database_and_available_workload(tenants, kube, postgres):
    name = tenants.unique("iso")
    tenants.create(name, plan="professional", tier="isolated")
    tenant = tenants.wait_ready(name, timeout=120)
    ns = f"tenant-{name}"
    sql_name = f"tenant_{name.replace('-', '_')}"

    assert tenant["status"]["tier"] == "isolated"
    assert tenant["status"]["database"]["database"] == sql_name
    values = secret_values(kube, name)
    assert values["database"] == sql_name

    deployment = namespaced(kube, "apps/v1", "Deployment", "web", ns)
    assert deployment["spec"]["replicas"] == 2  # professional plan sizing
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["TENANT_ID"]["value"] == name
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "tenant-db", "key": "DATABASE_URL"}
    assert container["resources"]["requests"]["cpu"] == "250m"
    assert deployment["status"]["availableReplicas"] == 2
    assert namespaced(kube, "v1", "Service", "web", ns)["spec"]["ports"][0]["port"] == 80
    assert name not in routes(kube)

    with psycopg.connect(values["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
        assert conn.execute("SELECT current_schema()").fetchone()[0] == sql_name
    with psycopg.connect(postgres.dsn(dbname=sql_name), autocommit=True) as admin:
        owner = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                              [sql_name]).fetchone()[0]
        assert owner == sql_name


def test_kubectl_get_tenants_shows_plan_tier_phase_ready(tenants, cluster):
    name = tenants.unique("columns")
    tenants.create(name, plan="free")
    tenants.wait_ready(name)
    output = run_kubectl(cluster, "get", "tenants", name)
    header, row = output.strip().splitlines()
    assert header.split() == ["NAME", "PLAN", "TIER", "PHASE", "READY", "AGE"]
    assert row.split()[:5] == [name, "free", "shared", "Ready", "True"]
    assert run_kubectl(cluster, "get", "tn", name, "-o", "name").strip() == f"tenant.tenancy.dev/{name}"


def test_deleted_and_edited_objects_are_put_back(tenants, kube):
    name = tenants.unique("drift")
    tenants.create(name, plan="starter")
    tenants.wait_ready(name)
    ns = f"tenant-{name}"
    quota_ref = ObjectRef(KINDS[("v1", "ResourceQuota")], "tenant-quota", ns)
    policy_ref = ObjectRef(KINDS[("networking.k8s.io/v1", "NetworkPolicy")], "tenant-isolation", ns)

    kube.delete(quota_ref)
    kube.merge_patch(policy_ref, {"spec": {"ingress": [{}]}})  # someone opens the tenant to everyone

    wait_for(lambda: kube.read(quota_ref), timeout=30, what="the ResourceQuota to come back")
    wait_for(lambda: len(kube.read(policy_ref)["spec"]["ingress"][0].get("from", [])) == 2, timeout=30,
             what="the NetworkPolicy to be restored")
    assert kube.read(quota_ref)["spec"]["hard"]["pods"] == "20"


def test_plan_change_reaches_every_tenant_on_it(tenants, kube, plans):
    plan_name = tenants.unique("plan")
    plan = {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan", "metadata": {"name": plan_name},
            "spec": {"tiers": ["shared"], "quota": {"pods": "3"}}}
    kube.create(TENANT_PLAN.collection_path(), plan)
    try:
        names = [tenants.unique("onplan"), tenants.unique("onplan")]
        for name in names:
            tenants.create(name, plan=plan_name)
        for name in names:
            tenants.wait_ready(name)

        kube.merge_patch(ObjectRef(TENANT_PLAN, plan_name), {"spec": {"quota": {"pods": "9"}}})

        for name in names:
            ref = ObjectRef(KINDS[("v1", "ResourceQuota")], "tenant-quota", f"tenant-{name}")
            wait_for(lambda: kube.read(ref)["spec"]["hard"]["pods"] == "9", timeout=30,
                     what=f"tenant {name} quota to follow the plan")
    finally:
        for name in tenants.created:
            tenants.delete(name)
        for name in tenants.created:
            tenants.wait_gone(name)
        kube.delete(ObjectRef(TENANT_PLAN, plan_name))


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(\{[^}]*\})?") + r" ([0-9.e+]+)"
    return sum(float(match.group(match.lastindex)) for match in re.finditer(pattern, text))


def test_reconcile_of_unchanged_tenants_makes_no_writes(tenants, kube, operator):
    shared, isolated = tenants.unique("idle"), tenants.unique("idle")
    tenants.create(shared, plan="starter")
    tenants.create(isolated, plan="professional", tier="isolated")
    tenants.wait_ready(shared)
    tenants.wait_ready(isolated, timeout=120)
    versions = {name: tenants.get(name)["metadata"]["resourceVersion"] for name in (shared, isolated)}

    # Let anything still settling settle: writes stop changing for two resync periods.
    def writes() -> float:
        return _metric(operator.metrics(), "tenant_operator_writes_total")

    def settled():
        before = writes()
        reconciles = _metric(operator.metrics(), "tenant_operator_reconciles_total")
        wait_for(lambda: _metric(operator.metrics(), "tenant_operator_reconciles_total") >= reconciles + 4,
                 timeout=RESYNC_SECONDS * 10, what="two more reconciles")
        return writes() == before

    # The server's status counts its tenants (a write of its own, every few seconds): counted first.
    def counted():
        on_default = [t for t in kube.list(TENANT) if ((t.get("status") or {}).get("database") or {}).get(
            "server") == "default"]
        server = kube.read(ObjectRef(DATABASE_SERVER, "default")) or {}
        return (server.get("status") or {}).get("tenants") == len(on_default)

    wait_for(counted, timeout=30, what="the default DatabaseServer to count the tenants")
    wait_for(settled, timeout=60, what="the operator to stop writing")
    before_writes = writes()
    before_reconciles = _metric(operator.metrics(), "tenant_operator_reconciles_total")

    wait_for(lambda: _metric(operator.metrics(), "tenant_operator_reconciles_total") >= before_reconciles + 6,
             timeout=RESYNC_SECONDS * 15, what="several resync reconciles")

    assert writes() == before_writes
    for name, version in versions.items():
        assert tenants.get(name)["metadata"]["resourceVersion"] == version


def test_unknown_plan_and_disallowed_tier_become_conditions(tenants):
    missing, disallowed = tenants.unique("noplan"), tenants.unique("notier")
    tenants.create(missing, plan="does-not-exist")
    tenants.create(disallowed, plan="free", tier="isolated")

    condition = tenants.wait_condition(missing, "Ready", "False", reason="PlanNotFound")
    assert "does-not-exist" in condition["message"]
    condition = tenants.wait_condition(disallowed, "Ready", "False", reason="TierNotAllowed")
    assert "shared" in condition["message"] and "isolated" in condition["message"]
    assert tenants.get(disallowed)["status"]["phase"] == "Failed"


def test_postgres_outage_becomes_condition_and_recovers(tenants, postgres):
    name = tenants.unique("outage")
    stop_postgres(postgres)
    try:
        tenants.create(name, plan="starter")
        condition = tenants.wait_condition(name, "DatabaseReady", "False", reason="DatabaseUnavailable")
        assert postgres.password not in condition["message"]
        assert tenants.condition(name, "Ready")["status"] == "False"
    finally:
        restart_postgres(postgres)
        wait_ready(postgres)
    tenants.wait_ready(name, timeout=60)
