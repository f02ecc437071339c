"""The chart's identities, and nothing else, run every production path; and reach nothing else.

A `helm install` into a control plane of its own, then the operator and its grants
process run with tokens of their ServiceAccounts (test_install.py explains how). The
first half drives what users do to tenants (a tier move under live writers, suspend and
resume, password rotation, deletion under each reclaim policy) and asserts that the
install's RBAC refused the operator nothing. The second half is a security review: each
right the operator must not have is asked of the authorizer (`kubectl auth can-i`) and
tried with a real request under the token, and must be refused.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import psycopg
import pytest
import yaml

from tenant_operator.api import names
from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.dev.cluster import kubectl
from tenant_operator.dev.session import run_kubectl
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

from . import writers as writers_module
from .conftest import Tenants
from .migration_data import tenant_secret, write_sample_data
from .test_install import (
    CHART,
    NAMESPACE,
    RELEASE,
    Install,
    assert_no_permission_trouble,
    fresh_cluster,
    helm_binary,
    run,
)
from .writers import Writers, count_writes, wait_for_commits

DEPLOYMENT = KINDS[("apps/v1", "Deployment")]


@pytest.fixture(scope="module")
def installed(postgres, tmp_path_factory):
    for cluster in fresh_cluster():
        helm = helm_binary(cluster)
        run_kubectl(cluster, "create", "namespace", NAMESPACE)
        run_kubectl(cluster, "-n", NAMESPACE, "create", "secret", "generic", "pg-admin",
                    f"--from-literal=url={postgres.url()}")
        shared_database = f"tenants_identity_{secrets.token_hex(3)}"
        run(helm, "install", RELEASE, str(CHART), "--kubeconfig", str(cluster.kubeconfig), "--namespace", NAMESPACE,
            "--set", "database.existingSecret=pg-admin", "--set", f"database.sharedDatabase={shared_database}",
            "--wait", "--timeout", "180s")
        install = Install(cluster, NAMESPACE, RELEASE, RELEASE, shared_database)
        logdir = tmp_path_factory.mktemp("identity")
        grants = install.start_grants(logdir)
        operator = install.start_operator(logdir, "identity-operator")
        try:
            yield install, operator
        finally:
            operator.stop()
            grants.terminate()
            grants.wait(timeout=30)
            print(f"identity test logs: {logdir}")


@pytest.fixture(scope="module")
def install(installed) -> Install:
    return installed[0]


@pytest.fixture(scope="module")
def admin(install) -> Kube:
    from kubernetes import config

    return Kube(config.new_client_from_config(config_file=str(install.cluster.kubeconfig)), field_manager="e2e-test")


@pytest.fixture
def tenants(admin, install, installed):
    helper = Tenants(admin, install.cluster)
    yield helper
    assert_no_permission_trouble(installed[1])
    for name in helper.created:
        if helper.get(name):
            helper.delete(name)
    for name in helper.created:
        helper.wait_gone(name, timeout=120)


@pytest.fixture(scope="module")
def managed(admin, install, installed) -> str:
    """A tenant namespace the operator created (and so manages)."""
    helper = Tenants(admin, install.cluster)
    name = helper.unique("managed")
    helper.create(name, plan="starter", database={"reclaimPolicy": "Delete"})
    helper.wait_ready(name, timeout=120)
    yield names.tenant_namespace(name)
    helper.delete(name)
    helper.wait_gone(name, timeout=120)


def _move(tenants: Tenants, admin: Kube, name: str, tier: str) -> None:
    generation = admin.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": tier}})["metadata"]["generation"]
    wait_for(lambda: (c := tenants.condition(name, "Migrating")) and c["reason"] == "MigrationCompleted"
             and c["observedGeneration"] == generation, timeout=120, what=f"tenant {name} to move to {tier}")
    assert tenants.wait_ready(name, timeout=60)["status"]["tier"] == tier


# --- every production path under the chart's identity ------------------------------------------------

def test_tier_moves_under_live_writers_lose_no_committed_write(tenants, admin):
    name = tenants.unique("move")
    tenants.create(name, plan="professional", tier="shared", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    url = tenant_secret(admin, name)["DATABASE_URL"]
    write_sample_data(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(writers_module.TABLE)
    writers = Writers(admin, name, count=3, stubborn=1).start()
    try:
        for tier in ("isolated", "shared"):
            wait_for_commits(writers, writers.committed_total() + 50)
            _move(tenants, admin, name, tier)
            wait_for_commits(writers, writers.committed_total() + 50)
    finally:
        writers.stop()

    count = count_writes(tenant_secret(admin, name)["DATABASE_URL"], writers)
    print(f"\nunder the chart identity: writes attempted {count.attempted}, committed {count.committed}, "
          f"found {count.found}")
    assert count.missing == [] and count.changed_ids == [] and count.phantoms == []
    assert all(len(w.committed) > 50 for w in writers.writers if w.follows_secret)


def test_suspend_and_resume(tenants, admin):
    name = tenants.unique("suspend")
    tenants.create(name, plan="professional", tier="isolated", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    url = tenant_secret(admin, name)["DATABASE_URL"]
    web = ObjectRef(DEPLOYMENT, "web", names.tenant_namespace(name))

    admin.merge_patch(ObjectRef(TENANT, name), {"spec": {"suspended": True}})
    wait_for(lambda: tenants.get(name)["status"]["phase"] == "Suspended", timeout=60, what="phase Suspended")
    assert admin.read(web)["spec"]["replicas"] == 0
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(url, connect_timeout=5).close()

    admin.merge_patch(ObjectRef(TENANT, name), {"spec": {"suspended": False}})
    wait_for(lambda: tenants.get(name)["status"]["phase"] == "Ready", timeout=120, what="phase Ready")
    assert admin.read(web)["spec"]["replicas"] == 2
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_password_rotation(tenants, admin):
    name = tenants.unique("rotate")
    tenants.create(name, plan="professional", tier="isolated", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    old = tenant_secret(admin, name)

    admin.merge_patch(ObjectRef(TENANT, name),
                      {"metadata": {"annotations": {names.ROTATE_PASSWORD_ANNOTATION: "first"}}})
    new = wait_for(lambda: (s := tenant_secret(admin, name))["password"] != old["password"] and s, timeout=60,
                   what="the Secret to hold a new password")
    with psycopg.connect(new["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == new["user"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(old["DATABASE_URL"], connect_timeout=5).close()


def _schema_exists(install: Install, postgres, schema: str) -> bool:
    with psycopg.connect(postgres.dsn(dbname=install.shared_database), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is not None


@pytest.mark.parametrize("policy", ["Retain", "Delete", "Snapshot"])
def test_deletion_under_each_reclaim_policy(tenants, admin, install, postgres, policy):
    name = tenants.unique(policy.lower())
    schema = f"tenant_{name.replace('-', '_')}"
    tenants.create(name, plan="starter", database={"reclaimPolicy": policy})
    tenants.wait_ready(name, timeout=120)
    with psycopg.connect(tenant_secret(admin, name)["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept SELECT generate_series(1, 100)")

    tenants.delete(name)
    tenants.wait_gone(name, timeout=120)

    assert admin.read(ObjectRef(KINDS[("v1", "Namespace")], names.tenant_namespace(name))) is None
    assert _schema_exists(install, postgres, schema) is (policy == "Retain")
    if policy == "Retain":
        with psycopg.connect(postgres.dsn(dbname=install.shared_database), autocommit=True) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}".kept').fetchone() == (100,)
    if policy == "Snapshot":
        events = admin.request("GET", "/api/v1/namespaces/default/events", [
            ("fieldSelector", f"involvedObject.kind=Tenant,involvedObject.name={name},reason=SnapshotTaken")])
        (taken,) = events["items"]
        assert ".dump" in taken["message"]
    if policy == "Retain":
        with psycopg.connect(postgres.dsn(dbname=install.shared_database), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f'DROP OWNED BY "{schema}"')
            conn.execute(f'DROP ROLE "{schema}"')


# --- and nothing more -------------------------------------------------------------------------------

def can_i(install: Install, user: str, verb: str, resource: str, namespace: str) -> str:
    where = ["-A"] if namespace == "-A" else ["-n", namespace]
    answer = subprocess.run([*kubectl(install.cluster), "auth", "can-i", verb, resource, *where, f"--as={user}"],
                            capture_output=True, text=True)
    return answer.stdout.strip()


OPERATOR_MAY_NOT = [
    ("get", "secrets", "kube-system"), ("create", "secrets", "kube-system"), ("patch", "secrets", "kube-system"),
    ("get", "secrets", "default"), ("create", "secrets", "default"), ("patch", "secrets", "default"),
    ("patch", "configmaps", "kube-system"), ("delete", "deployments.apps", "kube-system"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "kube-system"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "default"),
    ("delete", "namespaces/kube-system", "kube-system"), ("delete", "namespaces/default", "default"),
    ("patch", "namespaces/kube-system", "kube-system"),
    ("bind", "clusterroles/cluster-admin", "-A"), ("bind", "clusterroles/admin", "-A"),
    ("bind", "clusterroles/tenancy-tenant-owner", "kube-system"),
    ("list", "secrets", "-A"), ("list", "configmaps", "-A"), ("get", "secrets", "-A"),
    ("create", "clusterrolebindings", "-A"), ("delete", "tenants.tenancy.dev", "-A"),
    ("create", "pods", "-A"), ("create", "serviceaccounts", "-A"),
]


@pytest.mark.parametrize(("verb", "resource", "namespace"), OPERATOR_MAY_NOT,
                         ids=[" ".join(case) for case in OPERATOR_MAY_NOT])
def test_authorizer_refuses_the_operator_outside_its_namespaces(install, verb, resource, namespace):
    assert can_i(install, install.user, verb, resource, namespace) == "no"


@pytest.mark.parametrize(("verb", "resource"), [
    ("get", "secrets"), ("create", "secrets"), ("patch", "secrets"), ("patch", "namespaces"),
    ("create", "rolebindings.rbac.authorization.k8s.io"), ("bind", "clusterroles/tenancy-tenant-owner"),
])
def test_authorizer_allows_the_operator_in_a_namespace_it_manages(install, managed, verb, resource):
    resource = f"namespaces/{managed}" if resource == "namespaces" else resource
    assert can_i(install, install.user, verb, resource, managed) == "yes"


@pytest.mark.parametrize(("verb", "resource", "namespace"), [
    ("get", "secrets", "-A"), ("list", "secrets", "-A"), ("create", "secrets", "kube-system"),
    ("delete", "rolebindings.rbac.authorization.k8s.io", "-A"), ("patch", "rolebindings.rbac.authorization.k8s.io", "-A"),
    ("bind", "clusterroles/cluster-admin", "-A"), ("bind", "clusterroles/tenancy-tenant-owner", "-A"),
    ("create", "namespaces", "-A"), ("delete", "namespaces", "-A"),
])
def test_authorizer_gives_the_grants_identity_nothing_but_its_one_right(install, verb, resource, namespace):
    assert can_i(install, install.grants_user, verb, resource, namespace) == "no"


def _refused(result: subprocess.CompletedProcess, why: str = "forbidden") -> str:
    assert result.returncode != 0, f"the request was allowed:\n{result.stdout}"
    assert why.lower() in result.stderr.lower(), result.stderr
    return result.stderr


def _binding(namespace: str, role: str, subject: dict, name: str = "probe") -> str:
    return json.dumps({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": name, "namespace": namespace},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                       "subjects": [subject]})


def _operator_subject(install: Install) -> dict:
    return {"kind": "ServiceAccount", "name": install.service_account, "namespace": install.namespace}


@pytest.mark.parametrize("namespace", ["kube-system", "default"])
def test_operator_token_cannot_read_create_or_patch_secrets_elsewhere(install, namespace):
    probe = f"probe-{secrets.token_hex(3)}"
    install.kubectl("-n", namespace, "create", "secret", "generic", probe, "--from-literal=token=precious")

    _refused(install.as_operator("-n", namespace, "get", "secret", probe, "-o", "json"))
    _refused(install.as_operator("-n", namespace, "create", "secret", "generic", f"{probe}-new",
                                 "--from-literal=k=v"))
    _refused(install.as_operator("-n", namespace, "patch", "secret", probe, "--type=merge",
                                 "-p", '{"stringData": {"token": "mine"}}'))
    kept = json.loads(install.kubectl("-n", namespace, "get", "secret", probe, "-o", "json"))
    assert kept["data"] == {"token": "cHJlY2lvdXM="}
    assert install.kubectl("-n", namespace, "get", "secret", f"{probe}-new", "--ignore-not-found", "-o",
                           "name").strip() == ""


@pytest.mark.parametrize("namespace", ["kube-system", "default"])
@pytest.mark.parametrize("role", ["tenancy-tenant-owner", "tenant-operator-tenant-namespace", "cluster-admin"])
def test_operator_token_cannot_bind_itself_outside_managed_namespaces(install, namespace, role):
    _refused(install.as_operator("create", "-f", "-", input=_binding(namespace, role, _operator_subject(install))))
    assert install.kubectl("-n", namespace, "get", "rolebinding", "probe", "--ignore-not-found",
                           "-o", "name").strip() == ""


@pytest.mark.parametrize("role", ["cluster-admin", "admin"])
def test_operator_token_cannot_bind_cluster_admin_or_admin_even_where_it_manages(install, managed, role):
    _refused(install.as_operator("create", "-f", "-", input=_binding(managed, role, _operator_subject(install))))
    crb = json.dumps({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                      "metadata": {"name": f"probe-{secrets.token_hex(3)}"},
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                      "subjects": [_operator_subject(install)]})
    _refused(install.as_operator("create", "-f", "-", input=crb))


def test_operator_token_cannot_widen_its_own_grant(install, managed):
    """Its RoleBinding in a tenant namespace is the grants process's: another subject may not be added."""
    patch = json.dumps({"subjects": [_operator_subject(install),
                                     {"kind": "ServiceAccount", "name": "default", "namespace": managed}]})
    stderr = _refused(install.as_operator("-n", managed, "patch", "rolebinding", "tenant-operator",
                                          "--type=merge", "-p", patch), why="denied")
    assert "tenancy-tenant-owner" in stderr
    _refused(install.as_operator("-n", managed, "delete", "rolebinding", "tenant-operator"), why="denied")


def test_operator_token_cannot_delete_or_relabel_a_namespace_it_did_not_create(install):
    namespace = f"admin-made-{secrets.token_hex(3)}"
    install.kubectl("create", "namespace", namespace)

    _refused(install.as_operator("delete", "namespace", namespace, "--wait=false"))
    _refused(install.as_operator("label", "namespace", namespace, "app.kubernetes.io/managed-by=tenant-operator",
                                 "tenancy.dev/tenant=x"))
    _refused(install.as_operator("delete", "namespace", "kube-system", "--wait=false"))
    assert json.loads(install.kubectl("get", "namespace", namespace, "-o", "json"))["status"]["phase"] == "Active"


def test_operator_token_creates_only_namespaces_it_labels_as_a_tenants(install):
    unlabelled = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sneaky"}})
    stderr = _refused(install.as_operator("create", "-f", "-", input=unlabelled), why="denied")
    assert "tenant-<name>" in stderr
    mislabelled = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "sneaky", "labels": {"app.kubernetes.io/managed-by": "tenant-operator", "tenancy.dev/tenant": "acme"}}})
    _refused(install.as_operator("create", "-f", "-", input=mislabelled), why="denied")


def test_grants_token_binds_only_the_operator_only_in_managed_namespaces(install, managed):
    own_role = f"{RELEASE}-tenant-namespace"
    stderr = _refused(install.as_grants("create", "-f", "-", input=_binding(
        "kube-system", own_role, _operator_subject(install), name="tenant-operator")), why="denied")
    assert "writes only in namespaces it manages" in stderr
    other = {"kind": "ServiceAccount", "name": "default", "namespace": managed}
    _refused(install.as_grants("create", "-f", "-", input=_binding(managed, own_role, other, name="tenant-operator")),
             why="denied")
    _refused(install.as_grants("create", "-f", "-", input=_binding(
        managed, "cluster-admin", _operator_subject(install), name="tenant-operator-x")))
    _refused(install.as_grants("-n", "kube-system", "get", "secrets"))
