"""The shared tier's data plane: the app's login per tenant, its membership, and the reference app serving through it.

On the real API server and PostgreSQL, with the operator as a process (paused
inside a move's copy, so the move's `moving` state can be seen) and the
reference app of examples/shared-app as a local process fed from the real
ConfigMap and Secrets. What a user checks: HTTP answers per tenant, rows read
back with each tenant's own credentials, and the catalogs.
"""

from __future__ import annotations

import base64
import copy
import secrets

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tenant_operator.api.kinds import DATABASE_SCHEMA, KINDS, TENANT, TENANT_PLAN, ObjectRef
from tenant_operator.dev.shared_app import NOTES_SQL, AppProcess, RoutesVolume
from tenant_operator.dev.wait import wait_for

from .migration_data import tenant_secret
from .shared_app_process import NoteWriter
from .writers import TABLE, Writers, count_writes, wait_for_commits

pytestmark = pytest.mark.e2e

SHARED_NAMESPACE = "tenancy-shared"
# (Leading and trailing blanks are not part of an HTTP header's value: " b" is b, as HTTP says.)
HOSTILE = ["", " ", "'; DROP TABLE notes; --", '" OR 1=1', "../{b}", "{b}/../{a}", "{b}'", "{B}",
           "tenant_{b}", "{b}\u0000", "x" * 5000, "%2e%2e%2f{b}", "{b};{a}"]


@pytest.fixture(scope="module")
def operator(launch):
    process = launch(fault="pause:copy", resync_seconds=30)
    wait_for(lambda: process.process.poll() is None and process.metrics(), timeout=60,
             what="the operator to serve metrics")
    return process


@pytest.fixture(scope="module")
def plan(fault_kube, operator):
    """A plan with both tiers, an isolated `web` workload and the app's schema (the notes table)."""
    suffix = secrets.token_hex(3)
    fault_kube.create(DATABASE_SCHEMA.collection_path(), {
        "apiVersion": "tenancy.dev/v1alpha1", "kind": "DatabaseSchema", "metadata": {"name": f"notes-{suffix}"},
        "spec": {"migrations": {"inline": [{"version": 1, "description": "notes", "sql": NOTES_SQL},
                                           {"version": 2, "description": "writes", "sql": TABLE + ";"}]}}})
    professional = fault_kube.read(ObjectRef(TENANT_PLAN, "professional"))
    spec = copy.deepcopy(professional["spec"])
    spec["database"] = {"schema": f"notes-{suffix}"}
    fault_kube.create(TENANT_PLAN.collection_path(), {"apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantPlan",
                                                      "metadata": {"name": f"notes-{suffix}"}, "spec": spec})
    return f"notes-{suffix}"


def _secret(kube, name: str, namespace: str) -> dict[str, str]:
    secret = kube.read(ObjectRef(KINDS[("v1", "Secret")], name, namespace))
    assert secret, f"Secret {namespace}/{name} is missing"
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


@pytest.fixture
def app_url(fault_kube, operator):
    return wait_for(lambda: _secret(fault_kube, "shared-app-db", SHARED_NAMESPACE)["DATABASE_URL"], timeout=30,
                    what="the shared app's Secret")


@pytest.fixture
def app(fault_kube, app_url, tmp_path):
    volume = RoutesVolume(fault_kube, SHARED_NAMESPACE, tmp_path / "routes")
    volume.sync()
    process = AppProcess({"DATABASE_URL": app_url, "TENANT_ROUTES_DIR": str(volume.directory)},
                         tmp_path / "app.log")
    process.volume = volume
    yield process
    process.stop()


def _ready_pair(fault_tenants, plan) -> tuple[str, str]:
    a, b = fault_tenants.unique("na"), fault_tenants.unique("nb")
    for name in (a, b):
        fault_tenants.create(name, plan=plan)
    for name in (a, b):
        fault_tenants.wait_ready(name, timeout=120)
    return a, b


def _role(name: str) -> str:
    return "tenant_" + name.replace("-", "_")


def _login(name: str) -> str:
    return "tenancy_app_for_" + name.replace("-", "_")


def _as_login(app_url: str, name: str) -> str:
    """The app's DSN (the Secret's password, no user) logged in as the tenant's own app login."""
    return make_conninfo(app_url, user=_login(name))


def _members_of_app(admin: psycopg.Connection) -> set[str]:
    """The tenant roles some app login may act as; each login a member of its own tenant's role and no other."""
    rows = admin.execute("SELECT r.rolname, a.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                         " JOIN pg_roles a ON a.oid = m.member WHERE starts_with(a.rolname, 'tenancy_app_')"
                         ).fetchall()
    assert all(login == "tenancy_app_for_" + role.removeprefix("tenant_") for role, login in rows), rows
    return {role for role, _ in rows}


def _notes_of(kube, name: str) -> list[str]:
    with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT body FROM notes ORDER BY id").fetchall()]


def test_app_logins_reach_tenant_data_only_by_set_role_and_only_their_own(fault_kube, fault_tenants, plan, app_url,
                                                                          postgres, launch):
    a, b = _ready_pair(fault_tenants, plan)
    admin_dsn = make_conninfo(postgres.url(), dbname=launch.shared_database)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for name in (a, b):
            attributes = admin.execute("SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolbypassrls,"
                                       " rolcanlogin FROM pg_roles WHERE rolname = %s", [_login(name)]).fetchone()
            assert attributes == (False, False, False, False, False, True)
        assert {_role(a), _role(b)} <= _members_of_app(admin)

    with psycopg.connect(_as_login(app_url, a), autocommit=True) as conn:
        for name in (a, b):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT count(*) FROM {_role(name)}.notes")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"INSERT INTO {_role(name)}.notes (body) VALUES ('app alone')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # A's login may never become B
            conn.execute(f"SET ROLE {_role(b)}")
        conn.execute(f"SET ROLE {_role(a)}")
        assert conn.execute(f"SELECT count(*) FROM {_role(a)}.notes").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # acting as A reaches nothing of B's
            conn.execute(f"SELECT count(*) FROM {_role(b)}.notes")
    # Its own credentials reach nothing else: not the maintenance database's tenants, not a superuser's powers.
    with psycopg.connect(_as_login(app_url, a), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.planted (id int)")


ESCAPE = """
CREATE FUNCTION escape() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    RESET ROLE;  -- back to the session's login, whatever SET LOCAL ROLE said
    EXECUTE format('SET ROLE %I', '{b}');
    NEW.body := NEW.body || ' | stolen: ' || (SELECT coalesce(string_agg(body, ','), '') FROM {b}.notes);
    EXECUTE format('INSERT INTO %I.notes (body) VALUES (%L)', '{b}', 'planted by a');
  EXCEPTION WHEN others THEN
    NEW.body := NEW.body || ' | escape failed: ' || SQLERRM;
  END;
  RETURN NEW;
END $$;
CREATE TRIGGER escape BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION escape();
"""


def test_tenant_code_in_the_apps_transaction_cannot_reach_another_tenant(fault_kube, fault_tenants, plan, app):
    # A trigger of A's (A owns its schema) runs inside the app's request for A: RESET ROLE there goes back
    # to the session's login. That login must be A's alone, or one request of A's reads and writes B.
    a, b = _ready_pair(fault_tenants, plan)
    app.volume.sync()
    app.answers(b, 200)
    assert app.request("POST", "/notes", b, {"body": "secret of b"})[0] == 201
    with psycopg.connect(tenant_secret(fault_kube, a)["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(ESCAPE.format(b=_role(b)).encode())

    assert app.request("POST", "/notes", a, {"body": "hello"})[0] == 201

    (note,) = _notes_of(fault_kube, a)
    assert "secret of b" not in note and "stolen" not in note, note
    assert "escape failed: permission denied to set role" in note, note  # it was tried, and refused
    assert _notes_of(fault_kube, b) == ["secret of b"]  # read with B's own credentials


def test_requests_see_and_write_only_their_own_tenant(fault_kube, fault_tenants, plan, app):
    a, b = _ready_pair(fault_tenants, plan)
    app.volume.sync()
    app.answers(b, 200)

    assert app.request("POST", "/notes", a, {"body": "note of a"})[0] == 201
    assert app.request("POST", "/notes", b, {"body": "note of b"})[0] == 201
    assert app.notes(a) == ["note of a"]
    assert app.notes(b) == ["note of b"]
    assert _notes_of(fault_kube, a) == ["note of a"]  # read back with A's own credentials
    assert _notes_of(fault_kube, b) == ["note of b"]

    assert app.request("GET", "/notes")[0] == 400
    assert app.request("GET", "/notes", "nobody-here")[0] == 404
    for spelling in HOSTILE:
        header = spelling.format(a=a, b=b, B=b.upper())
        try:
            status, _, body = app.request("GET", "/notes", header)
        except ValueError:
            continue  # http.client itself refuses to send some (NUL): nothing reached the app
        assert status in (400, 404), (header[:40], status, body)
        assert "note of b" not in str(body)
        status, _, body = app.request("POST", "/notes", header, {"body": "planted"})
        assert status in (400, 404), (header[:40], status, body)
    assert _notes_of(fault_kube, a) == ["note of a"]
    assert _notes_of(fault_kube, b) == ["note of b"]


def test_suspension_cuts_the_app_off_even_on_a_session_opened_before(fault_kube, fault_tenants, plan, app, app_url,
                                                                     postgres, launch):
    a, b = _ready_pair(fault_tenants, plan)
    app.volume.sync()
    app.answers(a, 200)
    assert app.request("POST", "/notes", a, {"body": "before"})[0] == 201
    writers = Writers(fault_kube, a, count=2).start()
    wait_for_commits(writers, more_than=20)
    early = psycopg.connect(_as_login(app_url, a), autocommit=True)
    early.execute(f"SET ROLE {_role(a)}")  # a session acting as A before the suspension

    fault_kube.merge_patch(ObjectRef(TENANT, a), {"spec": {"suspended": True}})
    wait_for(lambda: (fault_tenants.get(a).get("status") or {}).get("phase") == "Suspended", timeout=60,
             what=f"tenant {a} Suspended")
    writers.stop()

    with pytest.raises(psycopg.Error):
        early.execute(f"INSERT INTO {_role(a)}.notes (body) VALUES ('through an old session')")
    early.close()
    # The app's routing still says active (the kubelet has not synced yet): the database refuses anyway.
    statuses = {app.request("POST", "/notes", a, {"body": "stale route"})[0] for _ in range(3)}
    assert 201 not in statuses and statuses <= {403, 503}, statuses
    app.volume.sync()
    app.answers(a, 403)
    assert app.request("POST", "/notes", a, {"body": "suspended"})[0] == 403
    assert app.request("POST", "/notes", b, {"body": "b still served"})[0] == 201
    with psycopg.connect(make_conninfo(postgres.url(), dbname=launch.shared_database), autocommit=True) as admin:
        assert _role(a) not in _members_of_app(admin)
        assert _role(b) in _members_of_app(admin)

    fault_kube.merge_patch(ObjectRef(TENANT, a), {"spec": {"suspended": False}})

    def resumed() -> bool:  # a suspended tenant is Ready too: its phase, for this generation, says it serves again
        body = fault_tenants.get(a)
        status = body.get("status") or {}
        return status.get("phase") == "Ready" and status.get("observedGeneration") == body["metadata"]["generation"]

    wait_for(resumed, timeout=60, what=f"tenant {a} resumed")
    app.volume.sync()
    app.answers(a, 200)
    assert app.request("POST", "/notes", a, {"body": "back"})[0] == 201
    assert _notes_of(fault_kube, a) == ["before", "back"]
    count = count_writes(tenant_secret(fault_kube, a)["DATABASE_URL"], writers)
    assert not count.missing and not count.phantoms and not count.changed_ids, count


def test_a_tenant_moving_to_isolated_is_503_then_served_by_its_own_web_app(fault_kube, fault_tenants, plan, app,
                                                                         operator, tmp_path):
    a, b = _ready_pair(fault_tenants, plan)
    app.volume.sync()
    app.answers(a, 200)
    notes = NoteWriter(app, a).start()
    writers = Writers(fault_kube, a, count=2).start()
    wait_for(lambda: len(notes.committed) > 10, timeout=30, what="notes committed through the app")
    wait_for_commits(writers, more_than=20)

    fault_kube.merge_patch(ObjectRef(TENANT, a), {"spec": {"tier": "isolated"}})
    paused = operator.fault_dir / "paused"
    wait_for(paused.exists, timeout=120, what="the move to pause inside its copy")
    routes = app.volume.sync()
    assert '"moving"' in routes[a]
    app.answers(a, 503)
    status, headers, _ = app.request("GET", "/notes", a)
    assert status == 503 and headers.get("retry-after"), (status, headers)
    assert app.request("GET", "/notes", b)[0] == 200
    (operator.fault_dir / "resume").write_text("")

    wait_for(lambda: (fault_tenants.get(a).get("status") or {}).get("tier") == "isolated"
             and fault_tenants.condition(a, "Ready")["status"] == "True", timeout=180, what=f"{a} Ready on isolated")
    notes.stop()
    writers.stop()
    assert a not in app.volume.sync()
    app.answers(a, 404)
    assert app.request("POST", "/notes", a, {"body": "after the move"})[0] == 404

    # Every note the app said it committed is in the new home, once.
    found = _notes_of(fault_kube, a)
    assert sorted(found) == sorted(set(found))
    assert not set(notes.committed) - set(found), "notes committed through the app are missing after the move"
    count = count_writes(tenant_secret(fault_kube, a)["DATABASE_URL"], writers)
    assert count.committed > 0 and not count.missing and not count.phantoms and not count.changed_ids, count

    # The isolated `web` Deployment's environment, taken from the Secret as its env says, reaches A there.
    namespace = f"tenant-{a}"
    deployment = fault_kube.read(ObjectRef(KINDS[("apps/v1", "Deployment")], "web", namespace))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for item in container["env"]:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        env[item["name"]] = _secret(fault_kube, ref["name"], namespace)[ref["key"]] if ref else item["value"]
    assert env["TENANT_ID"] == a and env["DATABASE_URL"].endswith(f"/{_role(a)}")
    web = AppProcess(env, tmp_path / "web.log")
    try:
        assert web.request("POST", "/notes", None, {"body": "isolated home"})[0] == 201
        served = web.notes(a)
        assert served[0] == "isolated home" and set(served[1:]) <= set(found)
        assert web.request("GET", "/notes", b)[0] == 404
    finally:
        web.stop()


def test_app_credentials_rotate_on_request_and_roll_the_shared_workload(fault_kube, fault_tenants, plan, app_url,
                                                                       operator):
    a = fault_tenants.unique("nr")
    fault_tenants.create(a, plan=plan)
    fault_tenants.wait_ready(a, timeout=120)
    secret_ref = ObjectRef(KINDS[("v1", "Secret")], "shared-app-db", SHARED_NAMESPACE)
    deployment_ref = ObjectRef(KINDS[("apps/v1", "Deployment")], "shared-web", SHARED_NAMESPACE)
    request = f"r-{secrets.token_hex(3)}"

    def digest() -> str | None:
        template = fault_kube.read(deployment_ref)["spec"]["template"]
        return (template["metadata"].get("annotations") or {}).get("tenancy.dev/credentials-digest")

    before = digest()
    assert before
    fault_kube.merge_patch(secret_ref, {"metadata": {"annotations": {"tenancy.dev/rotate-password": request}}})

    def rotated() -> str | None:
        secret = fault_kube.read(secret_ref)
        answered = (secret["metadata"].get("annotations") or {}).get("tenancy.dev/rotated-for")
        return base64.b64decode(secret["data"]["DATABASE_URL"]).decode() if answered == request else None

    new_url = wait_for(rotated, timeout=60, what="the shared app's password to be rotated")
    assert new_url != app_url
    with psycopg.connect(_as_login(new_url, a), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (_login(a),)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_as_login(app_url, a), connect_timeout=5).close()
    wait_for(lambda: digest() != before, timeout=30, what="shared-web's pods to roll")

    # A Secret lost is made again with a new password, and the pods roll to it as well.
    rolled = digest()
    fault_kube.delete(secret_ref)
    again = wait_for(lambda: fault_kube.read(secret_ref), timeout=60, what="the Secret made again")
    remade = base64.b64decode(again["data"]["DATABASE_URL"]).decode()
    with psycopg.connect(_as_login(remade, a), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (_login(a),)
    wait_for(lambda: digest() != rolled, timeout=30, what="shared-web's pods to roll to the new Secret")


def test_deleted_tenant_leaves_the_app_no_way_in(fault_kube, fault_tenants, plan, app_url, postgres, launch):
    a, b = _ready_pair(fault_tenants, plan)
    admin_dsn = make_conninfo(postgres.url(), dbname=launch.shared_database)
    fault_tenants.delete(a)
    fault_tenants.wait_gone(a, timeout=120)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        members = _members_of_app(admin)
        kept = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [_role(a)]).fetchone()
    assert _role(a) not in members and _role(b) in members
    url = wait_for(lambda: _secret(fault_kube, "shared-app-db", SHARED_NAMESPACE)["DATABASE_URL"], timeout=30,
                   what="the shared app's Secret")
    if not kept:  # reclaimPolicy Delete: A's app login went with its role
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_as_login(url, a), connect_timeout=5).close()
        return
    # Retain keeps the role and its schema: the app's login for A may still log in, and act as nobody.
    with psycopg.connect(_as_login(url, a), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SET ROLE {_role(a)}")


def test_the_single_app_role_of_earlier_builds_is_taken_apart(fault_tenants, plan, operator, postgres, launch):
    # Earlier builds made one app role per shared database, a member of every served tenant: an upgrade
    # must not leave that way in behind.
    a = fault_tenants.unique("nu")
    fault_tenants.create(a, plan=plan)
    fault_tenants.wait_ready(a, timeout=120)
    old = "tenancy_app_" + launch.shared_database
    with psycopg.connect(make_conninfo(postgres.url(), dbname=launch.shared_database), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {old} LOGIN NOINHERIT PASSWORD 'old-build'")
        admin.execute(f"GRANT CONNECT ON DATABASE {launch.shared_database} TO {old}")
        admin.execute(f"GRANT {_role(a)} TO {old}")

        wait_for(lambda: admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [old]).fetchone() is None,
                 timeout=60, what=f"the operator to drop {old}")
        assert _role(a) in _members_of_app(admin)  # A's own login still serves it
