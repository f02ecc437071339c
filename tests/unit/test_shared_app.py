"""The shared tier's reference app (examples/shared-app): what a client and a tenant see.

No PostgreSQL here: the pool is a fake that records what each transaction
runs, and the routing table is a directory laid out the way the kubelet
mounts a ConfigMap (`..data` -> `..<timestamp>/`, visible names as links).
In shared mode each tenant has a login of its own (`login` in its entry), and
the app keeps a pool per server address and login.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import io
import json
import logging
import os
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolClosed, PoolTimeout

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shared-app"
sys.path.insert(0, str(EXAMPLE))

from shared_app import Routes, SingleTenant, make_app  # noqa: E402
from shared_app.metrics import UNKNOWN  # noqa: E402
from shared_app.pools import Pools  # noqa: E402
from shared_app.routing import Route  # noqa: E402
from shared_app.server import make_server  # noqa: E402
from shared_app.settings import (  # noqa: E402
    SettingsError,
    login_conninfo,
    open_pools,
    settings_from_env,
    url_address,
)

ACME = {"schema": "tenant_acme", "role": "tenant_acme", "login": "tenancy_app_for_acme", "database": "tenants",
        "state": "active"}
GLOBEX = {"schema": "tenant_globex", "role": "tenant_globex", "login": "tenancy_app_for_globex",
          "database": "tenants", "state": "active"}
INITECH = {"schema": "tenant_initech", "role": "tenant_initech", "login": "tenancy_app_for_initech",
           "database": "tenants", "state": "active"}
CREATED = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


class FakeConnection:
    """Records each statement as PostgreSQL would receive its text; fails where told."""

    def __init__(self, rows=(), fail_on: str | None = None, error: Exception | None = None) -> None:
        self.log: list[str] = []
        self.params: list[tuple | None] = []
        self.rows = list(rows)
        self.fail_on, self.error = fail_on, error

    @contextlib.contextmanager
    def transaction(self):
        self.log.append("BEGIN")
        try:
            yield
        except BaseException:
            self.log.append("ROLLBACK")
            raise
        self.log.append("COMMIT")

    def execute(self, query, params=None):
        text = query.as_string(None) if isinstance(query, sql.Composable) else query
        self.log.append(text)
        self.params.append(params)
        if self.fail_on and text.startswith(self.fail_on):
            raise self.error
        return self

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0]


class FakePool:
    def __init__(self, conn: FakeConnection | None = None, error: Exception | None = None) -> None:
        self.conn = conn or FakeConnection()
        self.error = error
        self.taken = 0
        self.name = "fake"
        self.closing = threading.Event()

    @property
    def closed(self) -> bool:
        return self.closing.is_set()

    def close(self) -> None:
        self.closing.set()

    @contextlib.contextmanager
    def connection(self, timeout=None):
        self.taken += 1
        if self.error:
            raise self.error
        yield self.conn


def publish(directory: Path, entries: dict[str, object]) -> None:
    """Lay out a ConfigMap volume update as the kubelet does: a new hidden dir, `..data` swapped, links."""
    directory.mkdir(exist_ok=True)
    generation = len(list(directory.glob("..20*"))) + 1
    payload = directory / f"..2026_01_01_00_00_{generation:02d}.000000001"
    payload.mkdir()
    for name, content in entries.items():
        (payload / name).write_text(content if isinstance(content, str) else json.dumps(content))
    (directory / "..data_tmp").symlink_to(payload.name)
    os.rename(directory / "..data_tmp", directory / "..data")
    for name in entries:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    for link in directory.iterdir():
        if not link.name.startswith(".") and link.name not in entries:
            link.unlink()


def call(app, method: str, path: str, tenant: str | None = None, body: bytes = b""):
    """One request through the WSGI app: status, headers, decoded body."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    if tenant is not None:
        environ["HTTP_X_TENANT_ID"] = tenant
    setup_testing_defaults(environ)
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    data = b"".join(app(environ, start_response))
    is_json = answer["headers"].get("Content-Type") == "application/json"
    return answer["status"], answer["headers"], json.loads(data) if is_json else data.decode()


@pytest.fixture
def routes_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "routes"
    publish(directory, {"acme": ACME, "globex": GLOBEX})
    return directory


def shared_app(routes_dir: Path, pool: FakePool | None = None):
    return make_app(Routes(routes_dir), pool or FakePool())


# The tenant middleware, shared mode.

def test_notes_without_tenant_header_is_400_with_json_error(routes_dir):
    pool = FakePool()
    status, _, body = call(shared_app(routes_dir, pool), "GET", "/notes")
    assert status == 400
    assert "X-Tenant-ID" in body["error"]
    assert pool.taken == 0


@pytest.mark.parametrize("tenant", [
    "nobody",
    "ACME",
    " acme",
    "acme ",
    "acme'; DROP TABLE notes; --",
    '"tenant_acme"',
    "tenant_acme",
    "../acme",
    "../../etc/passwd",
    "..data",
    "..2026_01_01_00_00_01.000000001",
    "acme/..",
    "ácme",
    "acme\u202e",
    "a" * 10_000,
])
def test_unknown_and_hostile_tenants_are_404_and_reach_no_sql(routes_dir, tenant):
    pool = FakePool()
    status, _, body = call(shared_app(routes_dir, pool), "GET", "/notes", tenant)
    assert (status, body) == (404, {"error": "unknown tenant"})
    assert pool.taken == 0


def test_suspended_tenant_is_403(routes_dir):
    publish(routes_dir, {"acme": {**ACME, "state": "suspended"}})
    pool = FakePool()
    status, _, body = call(shared_app(routes_dir, pool), "GET", "/notes", "acme")
    assert status == 403
    assert "suspended" in body["error"]
    assert pool.taken == 0


def test_moving_tenant_is_503_with_retry_after(routes_dir):
    publish(routes_dir, {"acme": {**ACME, "state": "moving"}})
    pool = FakePool()
    status, headers, _ = call(shared_app(routes_dir, pool), "POST", "/notes", "acme", b'{"body": "hi"}')
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert pool.taken == 0


def test_active_tenant_runs_in_one_transaction_as_its_role_and_schema(routes_dir):
    conn = FakeConnection(rows=[(2, "second", CREATED), (1, "first", CREATED)])
    status, _, body = call(shared_app(routes_dir, FakePool(conn)), "GET", "/notes", "acme")
    assert status == 200
    assert body == {"tenant": "acme", "notes": [
        {"id": 2, "body": "second", "created_at": "2026-01-02T03:04:05+00:00"},
        {"id": 1, "body": "first", "created_at": "2026-01-02T03:04:05+00:00"},
    ]}
    assert conn.log[:3] == ["BEGIN", 'SET LOCAL ROLE "tenant_acme"', 'SET LOCAL search_path TO "tenant_acme"']
    assert conn.log[3].startswith("SELECT id, body, created_at FROM notes")
    assert conn.log[4:] == ["COMMIT"]


def test_odd_identifiers_from_the_routing_table_are_quoted_not_formatted(routes_dir):
    publish(routes_dir, {"acme": {**ACME, "role": 'r"; RESET ROLE; --', "schema": "Tenant Acme"}})
    conn = FakeConnection(rows=[(7, "hi")])
    status, _, _ = call(shared_app(routes_dir, FakePool(conn)), "POST", "/notes", "acme", b'{"body": "hi"}')
    assert status == 201
    assert conn.log[1:3] == ['SET LOCAL ROLE "r""; RESET ROLE; --"', 'SET LOCAL search_path TO "Tenant Acme"']


def test_new_note_is_inserted_with_its_body_as_a_parameter(routes_dir):
    conn = FakeConnection(rows=[(7, "it's <b>mine</b>")])
    status, _, body = call(shared_app(routes_dir, FakePool(conn)), "POST", "/notes", "acme",
                           json.dumps({"body": "it's <b>mine</b>"}).encode())
    assert (status, body) == (201, {"id": 7, "body": "it's <b>mine</b>"})
    assert conn.log[3] == "INSERT INTO notes (body) VALUES (%s) RETURNING id, body"
    assert conn.params[-1] == ("it's <b>mine</b>",)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[]", b'{"text": "hi"}', b'{"body": ""}', b'{"body": 5}'])
def test_bad_note_is_400_before_any_connection_is_taken(routes_dir, payload):
    pool = FakePool()
    status, _, body = call(shared_app(routes_dir, pool), "POST", "/notes", "acme", payload)
    assert status == 400
    assert "body" in body["error"]
    assert pool.taken == 0


@pytest.mark.parametrize("refused", [
    psycopg.errors.InsufficientPrivilege('permission denied to set role "tenant_acme"'),
    psycopg.errors.InvalidParameterValue('role "tenant_acme" does not exist'),
])
def test_set_role_refused_on_an_active_route_is_503_with_retry_after_and_rolls_back(routes_dir, refused):
    # The operator took the membership away (a freeze, a suspension) before the kubelet updated the file.
    conn = FakeConnection(fail_on="SET LOCAL ROLE", error=refused)
    status, headers, body = call(shared_app(routes_dir, FakePool(conn)), "GET", "/notes", "acme")
    assert (status, headers["Retry-After"]) == (503, "5")
    assert "retry" in body["error"]
    assert conn.log == ["BEGIN", 'SET LOCAL ROLE "tenant_acme"', "ROLLBACK"]


def test_connection_ended_by_the_server_is_503_with_retry_after(routes_dir):
    ended = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    conn = FakeConnection(fail_on="SELECT", error=ended)
    status, headers, _ = call(shared_app(routes_dir, FakePool(conn)), "GET", "/notes", "acme")
    assert (status, headers["Retry-After"]) == (503, "5")


def test_database_down_is_503_with_retry_after(routes_dir):
    pool = FakePool(error=PoolTimeout("couldn't get a connection after 5.00 sec"))
    status, headers, body = call(shared_app(routes_dir, pool), "GET", "/notes", "acme")
    assert (status, headers["Retry-After"]) == (503, "5")
    assert "database" in body["error"]


def test_failing_query_is_500_with_json_error(routes_dir):
    conn = FakeConnection(fail_on="SELECT", error=psycopg.errors.UndefinedTable('relation "notes" does not exist'))
    status, _, body = call(shared_app(routes_dir, FakePool(conn)), "GET", "/notes", "acme")
    assert (status, body) == (500, {"error": "internal error"})


# Several database servers and a login per tenant: one pool per (server address, login).

DEFAULT_ADDRESS = ("db.shared", 5432)
ON_DEFAULT = {"server": "default", "host": "db.shared", "port": 5432}
ON_PG_A = {"server": "pg-a", "host": "pg-a.db", "port": 6432}
PG_A = ("pg-a.db", 6432)


class PoolMaker:
    """Opens a FakePool per (address, login) it is asked for, and remembers them in order."""

    def __init__(self) -> None:
        self.opened: list[tuple[tuple, FakePool]] = []

    def __call__(self, address, login: str) -> FakePool:
        assert all(key != (address, login) or pool.closed for key, pool in self.opened), "one open pool per key"
        self.opened.append(((address, login), FakePool()))
        return self.opened[-1][1]

    def keys(self) -> list[tuple]:
        return [key for key, _ in self.opened]

    def pool(self, address, login: str) -> FakePool:
        return [pool for key, pool in self.opened if key == (address, login)][-1]


def servers_app(routes_dir: Path, limit: int = 16):
    maker = PoolMaker()
    return make_app(Routes(routes_dir), Pools(None, maker, address=DEFAULT_ADDRESS, limit=limit)), maker


def test_each_tenant_is_served_from_a_pool_of_its_own_login_on_its_server(routes_dir):
    publish(routes_dir, {"acme": {**ACME, **ON_PG_A}, "globex": {**GLOBEX, **ON_PG_A}})
    app, maker = servers_app(routes_dir)
    assert maker.opened == [], "no pool until a route needs it"
    assert call(app, "GET", "/notes", "acme")[0] == 200
    assert call(app, "GET", "/notes", "globex")[0] == 200
    assert call(app, "GET", "/notes", "acme")[0] == 200
    assert maker.keys() == [(PG_A, "tenancy_app_for_acme"), (PG_A, "tenancy_app_for_globex")]
    acme, globex = maker.pool(PG_A, "tenancy_app_for_acme"), maker.pool(PG_A, "tenancy_app_for_globex")
    assert (acme.taken, globex.taken) == (2, 1)
    # The login is NOINHERIT: the transaction still becomes the tenant's role.
    assert acme.conn.log[:3] == ["BEGIN", 'SET LOCAL ROLE "tenant_acme"', 'SET LOCAL search_path TO "tenant_acme"']
    assert globex.conn.log[1] == 'SET LOCAL ROLE "tenant_globex"'


@pytest.mark.parametrize("entry", [ACME, {**ACME, **ON_DEFAULT}, {**ACME, "server": "default"}],
                         ids=["no-server", "default-address", "name-only"])
def test_route_without_another_address_is_on_database_urls_server(routes_dir, entry):
    publish(routes_dir, {"acme": entry})
    app, maker = servers_app(routes_dir)
    assert call(app, "GET", "/notes", "acme")[0] == 200
    assert maker.keys() == [(DEFAULT_ADDRESS, "tenancy_app_for_acme")]


def test_routes_move_between_pools_as_their_entries_change(routes_dir):
    app, maker = servers_app(routes_dir)
    call(app, "GET", "/notes", "acme")
    publish(routes_dir, {"acme": {**ACME, **ON_PG_A}, "globex": GLOBEX})
    app.routes.refresh()
    call(app, "GET", "/notes", "acme")
    call(app, "GET", "/notes", "globex")
    assert maker.keys() == [(DEFAULT_ADDRESS, "tenancy_app_for_acme"), (PG_A, "tenancy_app_for_acme"),
                            (DEFAULT_ADDRESS, "tenancy_app_for_globex")]
    assert maker.pool(PG_A, "tenancy_app_for_acme").taken == 1


@pytest.mark.parametrize("server", [
    {"host": "pg-a.db", "port": "6432"},
    {"host": "pg-a.db", "port": 0},
    {"host": "pg-a.db", "port": 70000},
    {"host": "pg-a.db", "port": True},
    {"host": "pg-a.db", "port": 64.32},
    {"host": "pg-a.db"},
    {"port": 6432},
    {"host": "", "port": 6432},
    {"host": 7, "port": 6432},
    {**ON_PG_A, "server": ""},
])
def test_malformed_server_address_is_an_unknown_tenant_not_a_crash(routes_dir, server, caplog):
    publish(routes_dir, {"acme": ACME, "broken": {**GLOBEX, **server}})
    with caplog.at_level(logging.WARNING, logger="shared_app.routing"):
        app, maker = servers_app(routes_dir)
    assert call(app, "GET", "/notes", "broken")[::2] == (404, {"error": "unknown tenant"})
    assert call(app, "GET", "/notes", "acme")[0] == 200
    assert maker.keys() == [(DEFAULT_ADDRESS, "tenancy_app_for_acme")]
    assert "'broken'" in caplog.text


def test_past_the_cap_the_least_recently_used_pool_is_closed(routes_dir):
    publish(routes_dir, {"acme": ACME, "globex": GLOBEX, "initech": INITECH})
    app, maker = servers_app(routes_dir, limit=2)
    for tenant in ("acme", "globex", "acme", "initech"):
        assert call(app, "GET", "/notes", tenant)[0] == 200
    globex = maker.pool(DEFAULT_ADDRESS, "tenancy_app_for_globex")
    assert globex.closing.wait(5), "closed in the background"
    assert not maker.pool(DEFAULT_ADDRESS, "tenancy_app_for_acme").closed
    assert app.pools.keys() == [(DEFAULT_ADDRESS, "tenancy_app_for_acme"), (DEFAULT_ADDRESS, "tenancy_app_for_initech")]
    # The evicted tenant is served again, from a new pool; now acme's is the least recently used.
    assert call(app, "GET", "/notes", "globex")[0] == 200
    assert maker.pool(DEFAULT_ADDRESS, "tenancy_app_for_acme").closing.wait(5)
    assert len(maker.opened) == 4


def test_a_pool_closed_after_it_was_picked_is_503_with_retry_after(routes_dir):
    closed = FakePool(error=PoolClosed("the pool 'shared-app tenancy_app_for_acme@db.shared:5432' is closed"))
    app = make_app(Routes(routes_dir), Pools(None, lambda address, login: closed, address=DEFAULT_ADDRESS))
    status, headers, body = call(app, "GET", "/notes", "acme")
    assert (status, headers["Retry-After"]) == (503, "5")
    assert "database" in body["error"]


def test_every_pool_is_closed_at_shutdown(routes_dir):
    publish(routes_dir, {"acme": {**ACME, **ON_PG_A}, "globex": GLOBEX})
    app, maker = servers_app(routes_dir)
    call(app, "GET", "/notes", "acme")
    call(app, "GET", "/notes", "globex")
    app.pools.close()
    assert all(pool.closed for _, pool in maker.opened) and len(maker.opened) == 2
    assert app.pools.keys() == []


def test_a_tenant_pool_logs_in_as_the_routes_login_with_the_secrets_password():
    url = "postgresql://:s%40cret@db.shared:5432/tenants?sslmode=require&hostaddr=10.0.0.1"
    assert conninfo_to_dict(login_conninfo(url, "tenancy_app_for_acme", ("pg-a.db", 6432))) == {
        "user": "tenancy_app_for_acme", "password": "s@cret", "dbname": "tenants", "sslmode": "require",
        "host": "pg-a.db", "port": "6432"}
    assert conninfo_to_dict(login_conninfo(url, "tenancy_app_for_acme", None)) == {
        "user": "tenancy_app_for_acme", "password": "s@cret", "dbname": "tenants", "sslmode": "require",
        "host": "db.shared", "port": "5432", "hostaddr": "10.0.0.1"}
    assert url_address(url) == ("db.shared", 5432)
    assert url_address("postgresql://:pw@/tenants") == ("localhost", 5432)
    assert url_address("postgresql://:pw@a:1,b:2/tenants") is None


def test_shared_mode_opens_no_pool_at_start_and_small_lazy_pools_per_login():
    settings = settings_from_env({"DATABASE_URL": "postgresql://:s%40cret@127.0.0.1:1/tenants",
                                  "TENANT_ROUTES_DIR": "/etc/r", "POOL_SIZE": "3"})
    pools = open_pools(settings)
    assert pools.default is None and pools.keys() == []
    # A real pool, but min_size=0: it connects to nothing until a request asks.
    pool = pools.for_route(Route("acme", "tenant_acme", "tenant_acme", "tenancy_app_for_acme", host="pg-a.db",
                                 port=6432))
    try:
        assert conninfo_to_dict(pool.conninfo) == {"user": "tenancy_app_for_acme", "password": "s@cret",
                                                   "dbname": "tenants", "host": "pg-a.db", "port": "6432"}
        assert (pool.min_size, pool.max_size, pool.max_idle, pool.num_workers) == (0, 3, 60.0, 1)
        assert pool.get_stats()["pool_size"] == 0
    finally:
        pools.close()
    assert pool.closed


def test_isolated_mode_routes_have_no_login_and_use_the_one_pool():
    default = FakePool()
    pools = Pools(default)
    assert pools.for_route(SingleTenant("acme", "tenant_acme").lookup("acme")) is default


# Endpoints that touch no tenant, and the rest of the URL space.

def test_healthz_needs_no_header_and_no_database(routes_dir):
    pool = FakePool(error=PoolTimeout("down"))
    assert call(shared_app(routes_dir, pool), "GET", "/healthz")[::2] == (200, {"status": "ok"})
    assert pool.taken == 0


def test_unknown_path_is_404_and_wrong_method_is_405(routes_dir):
    app = shared_app(routes_dir)
    assert call(app, "GET", "/nope", "acme")[0] == 404
    status, headers, _ = call(app, "DELETE", "/notes", "acme")
    assert status == 405
    assert headers["Allow"] == "GET, POST"
    assert call(app, "POST", "/healthz")[0] == 405


# The routing table follows the mounted ConfigMap.

def test_routing_reload_picks_up_added_changed_and_removed_tenants(routes_dir):
    routes = Routes(routes_dir)
    assert routes.tenants() == {"acme", "globex"}
    assert routes.refresh() is False

    publish(routes_dir, {"acme": ACME, "globex": GLOBEX, "initech": INITECH})
    assert routes.refresh() is True
    assert routes.lookup("initech").schema == "tenant_initech"

    publish(routes_dir, {"acme": {**ACME, "state": "suspended"}, "initech": ACME})
    assert routes.refresh() is True
    assert routes.lookup("acme").state == "suspended"
    assert routes.lookup("globex") is None


def test_app_answers_from_the_reloaded_table(routes_dir):
    app = shared_app(routes_dir)
    assert call(app, "GET", "/notes", "acme")[0] == 200
    publish(routes_dir, {"acme": {**ACME, "state": "moving"}})
    app.routes.refresh()
    assert call(app, "GET", "/notes", "acme")[0] == 503
    assert call(app, "GET", "/notes", "globex")[0] == 404


def test_routing_is_checked_at_most_once_an_interval(routes_dir):
    now = [1000.0]
    routes = Routes(routes_dir, clock=lambda: now[0], interval=1.0)
    publish(routes_dir, {"acme": ACME})
    now[0] += 0.5
    assert routes.lookup("globex") is not None, "not looked at again within the interval"
    now[0] += 0.5
    assert routes.lookup("globex") is None


def test_routing_ignores_hidden_entries(routes_dir):
    (routes_dir / ".hidden").write_text(json.dumps(ACME))
    routes = Routes(routes_dir)
    assert routes.tenants() == {"acme", "globex"}
    assert all(routes.lookup(name) is None for name in os.listdir(routes_dir) if name.startswith("."))


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    json.dumps({**ACME, "role": ""}),
    json.dumps({key: value for key, value in ACME.items() if key != "schema"}),
    json.dumps({**ACME, "state": "paused"}),
    json.dumps({**ACME, "database": 7}),
    # No login: an older operator's entry (the new one rewrites them); there is no login to serve it with.
    json.dumps({key: value for key, value in ACME.items() if key != "login"}),
    json.dumps({**ACME, "login": ""}),
    json.dumps({**ACME, "login": 7}),
])
def test_malformed_entry_is_an_unknown_tenant_and_logged(routes_dir, content, caplog):
    publish(routes_dir, {"acme": ACME, "broken": content})
    with caplog.at_level(logging.WARNING, logger="shared_app.routing"):
        app = shared_app(routes_dir)
    assert call(app, "GET", "/notes", "broken")[0] == 404
    assert call(app, "GET", "/notes", "acme")[0] == 200
    assert "'broken'" in caplog.text


def test_missing_routing_directory_serves_no_tenant(tmp_path):
    routes = Routes(tmp_path / "not-mounted")
    assert routes.tenants() == frozenset()
    publish(tmp_path / "not-mounted", {"acme": ACME})
    assert routes.refresh() is True


def test_plain_directory_rewrite_is_noticed(tmp_path):
    (tmp_path / "acme").write_text(json.dumps(ACME))
    routes = Routes(tmp_path)
    (tmp_path / "acme").write_text(json.dumps({**ACME, "state": "suspended"}))
    assert routes.refresh() is True
    assert routes.lookup("acme").state == "suspended"


# Isolated mode: one tenant, logged in as itself.

def test_isolated_mode_serves_its_tenant_with_or_without_the_header():
    conn = FakeConnection(rows=[])
    app = make_app(SingleTenant("acme", "tenant_acme"), FakePool(conn))
    assert call(app, "GET", "/notes")[::2] == (200, {"tenant": "acme", "notes": []})
    assert call(app, "GET", "/notes", "acme")[0] == 200
    assert call(app, "GET", "/notes", "globex")[0] == 404


@pytest.mark.parametrize("schema, first", [("tenant_acme", 'SET LOCAL search_path TO "tenant_acme"'),
                                           (None, "SELECT")])
def test_isolated_mode_never_sets_a_role_and_sets_search_path_when_given(schema, first):
    conn = FakeConnection(rows=[])
    call(make_app(SingleTenant("acme", schema), FakePool(conn)), "GET", "/notes")
    assert conn.log[0] == "BEGIN"
    assert conn.log[1].startswith(first)
    assert not any("ROLE" in statement for statement in conn.log)


# Metrics.

def test_metrics_label_only_routed_tenants(routes_dir):
    app = shared_app(routes_dir)
    call(app, "GET", "/notes", "acme")
    publish(routes_dir, {"acme": {**ACME, "state": "suspended"}})
    app.routes.refresh()
    call(app, "GET", "/notes", "acme")
    for n in range(50):
        call(app, "GET", "/notes", f"attacker-{n}")
    call(app, "GET", "/notes")
    call(app, "GET", "/notes", 'x"} 1\nfake_metric{a="')

    assert app.metrics.tenants() == {"acme", UNKNOWN}
    assert app.metrics.requests("acme", 200) == 1
    assert app.metrics.requests("acme", 403) == 1
    assert app.metrics.requests(UNKNOWN, 404) == 51
    assert app.metrics.requests(UNKNOWN, 400) == 1


def test_metrics_endpoint_is_prometheus_text(routes_dir):
    app = shared_app(routes_dir)
    call(app, "GET", "/notes", "acme")
    call(app, "GET", "/notes", "nobody")
    call(app, "GET", "/healthz")
    status, headers, text = call(app, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = text.splitlines()
    assert 'shared_app_requests_total{tenant="acme",code="200"} 1' in lines
    assert 'shared_app_requests_total{tenant="unknown",code="404"} 1' in lines
    assert 'shared_app_request_seconds_count{tenant="acme"} 1' in lines
    assert any(line.startswith('shared_app_request_seconds_sum{tenant="acme"} ') for line in lines)
    assert "/healthz" not in text and len([line for line in lines if line.startswith("shared_app_requests")]) == 2


# Settings and serving.

def test_settings_choose_the_mode_and_default_the_rest():
    shared = settings_from_env({"DATABASE_URL": "postgresql://:secret@db/tenants", "TENANT_ROUTES_DIR": "/etc/r"})
    assert (shared.mode, shared.host, shared.port, shared.pool_size, shared.max_pools) == \
        ("shared", "0.0.0.0", 8080, 4, 64)
    isolated = settings_from_env({"DATABASE_URL": "postgresql://acme@db/acme", "TENANT_ID": "acme",
                                  "DATABASE_SCHEMA": "app", "PORT": "9000", "POOL_SIZE": "3", "MAX_POOLS": "8"})
    assert (isolated.mode, isolated.tenant_id, isolated.schema, isolated.port, isolated.pool_size,
            isolated.max_pools) == ("isolated", "acme", "app", 9000, 3, 8)


@pytest.mark.parametrize("environ", [
    {"TENANT_ID": "acme"},
    {"DATABASE_URL": "postgresql://db"},
    {"DATABASE_URL": "postgresql://db", "TENANT_ID": "acme", "TENANT_ROUTES_DIR": "/etc/r"},
    {"DATABASE_URL": "postgresql://db", "TENANT_ID": "acme", "PORT": "http"},
    {"DATABASE_URL": "postgresql://db", "TENANT_ROUTES_DIR": "/etc/r", "MAX_POOLS": "0"},
    {"DATABASE_URL": "not a url = at all", "TENANT_ROUTES_DIR": "/etc/r"},
])
def test_settings_refuse_an_environment_that_names_no_way_to_run(environ):
    with pytest.raises(SettingsError):
        settings_from_env(environ)


class BarrierConnection(FakeConnection):
    """Holds each query until two requests are inside one at once."""

    barrier = threading.Barrier(2, timeout=5)

    def execute(self, query, params=None):
        if isinstance(query, str):
            self.barrier.wait()
        return super().execute(query, params)


def test_server_runs_requests_in_parallel(routes_dir):
    server = make_server(shared_app(routes_dir, FakePool(BarrierConnection())), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/notes", headers={"X-Tenant-ID": "acme"})

    def get(_) -> int:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as clients:
            assert list(clients.map(get, range(2))) == [200, 200]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("headers", [[("X_Tenant_ID", "acme")], [("x_tenant_id", "acme")],
                                     [("X-Tenant-ID", "globex"), ("X_Tenant_ID", "acme")]])
def test_a_tenant_header_spelled_with_underscores_is_not_read(headers):
    # A proxy that sets or strips X-Tenant-ID must not be bypassed by X_Tenant_ID, which WSGI spells alike.
    seen = []

    def app(environ, start_response):
        seen.append(environ.get("HTTP_X_TENANT_ID"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as client:
            lines = ["GET /notes HTTP/1.0", *(f"{name}: {value}" for name, value in headers), "", ""]
            client.sendall("\r\n".join(lines).encode())
            assert client.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()
        server.server_close()
    dashed = [value for name, value in headers if "_" not in name]
    assert seen == [dashed[0] if dashed else None]
