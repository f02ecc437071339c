"""A tenant's data tier on a real PostgreSQL 15: what a tenant role can and cannot reach."""

from __future__ import annotations

import dataclasses
import secrets

import psycopg
import pytest

from tenant_operator.dev.ports import free_port
from tenant_operator.infra import sql
from tenant_operator.infra.connection import DatabaseUnavailable
from tenant_operator.infra.postgres import (
    ISOLATED,
    SHARED,
    DataPlacement,
    RoleMissing,
    drop_tenant_data,
    ensure_tenant_data,
    new_password,
    placement,
    set_login,
    tenant_data_exists,
)
from tenant_operator.infra.shared_database import ensure_shared_database

pytestmark = pytest.mark.e2e


@dataclasses.dataclass(frozen=True)
class Provisioned:
    placement: DataPlacement
    password: str


@pytest.fixture(scope="module")
def shared_setup(postgres):
    """A fresh shared database per module, so tests here depend on no other module."""
    name = f"shared_{secrets.token_hex(4)}"
    result = ensure_shared_database(postgres.dsn(), name)
    return name, result


@pytest.fixture(scope="module")
def shared_db(shared_setup) -> str:
    return shared_setup[0]


@pytest.fixture(scope="module")
def admin_dsn(postgres, shared_db) -> str:
    return postgres.dsn(dbname=shared_db)


@pytest.fixture
def make_tenant(admin_dsn, shared_db):
    made: list[DataPlacement] = []

    def make(tier: str) -> Provisioned:
        where = placement(f"t-{secrets.token_hex(4)}", tier, shared_db)
        password = new_password()
        ensure_tenant_data(admin_dsn, where, password)
        made.append(where)
        return Provisioned(where, password)

    yield make
    for where in made:
        drop_tenant_data(admin_dsn, where)


@pytest.fixture
def connect_as(postgres, connect_dsn):
    def connect(tenant: Provisioned, dbname: str | None = None, password: str | None = None) -> psycopg.Connection:
        return connect_dsn(postgres.dsn(dbname=dbname or tenant.placement.database, user=tenant.placement.role,
                                        password=password or tenant.password))

    return connect


@pytest.fixture
def admin(admin_dsn):
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        yield conn


def role_row(admin, role):
    return admin.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, rolbypassrls, rolcanlogin"
        " FROM pg_roles WHERE rolname = %s",
        [role],
    ).fetchone()


# --- the shared database --------------------------------------------------------------

def test_shared_database_is_created_once(postgres, shared_setup):
    name, first = shared_setup
    assert "created shared database" in first.actions
    assert ensure_shared_database(postgres.dsn(), name).actions == ()


# --- shared tier ------------------------------------------------------------------------

def test_shared_tenant_logs_in_with_its_password(make_tenant, connect_as):
    tenant = make_tenant(SHARED)
    with connect_as(tenant) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == tenant.placement.role


def test_shared_tenant_role_has_no_powers(make_tenant, admin):
    tenant = make_tenant(SHARED)
    assert role_row(admin, tenant.placement.role) == (False, False, False, False, False, False, True)


def test_shared_tenant_creates_tables_in_its_own_schema_unqualified(make_tenant, connect_as):
    tenant = make_tenant(SHARED)
    conn = connect_as(tenant)
    conn.execute("CREATE TABLE orders (id int)")
    conn.execute("INSERT INTO orders VALUES (1)")
    where = conn.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'orders'").fetchone()
    assert where == (tenant.placement.schema,)


def test_shared_tenant_cannot_create_in_public(make_tenant, connect_as):
    conn = connect_as(make_tenant(SHARED))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE TABLE public.sneaky (id int)")


def test_shared_tenant_cannot_create_temp_tables(make_tenant, connect_as):
    conn = connect_as(make_tenant(SHARED))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE TEMP TABLE scratch (id int)")


def test_shared_tenant_cannot_reach_another_tenants_schema(make_tenant, connect_as):
    victim, intruder = make_tenant(SHARED), make_tenant(SHARED)
    connect_as(victim).execute("CREATE TABLE secrets (v text)")
    conn = connect_as(intruder)
    other = victim.placement.schema
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f'SELECT * FROM "{other}".secrets')
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f'CREATE TABLE "{other}".planted (id int)')


# --- isolated tier ----------------------------------------------------------------------

def test_isolated_tenant_gets_own_database(make_tenant, connect_as, admin):
    tenant = make_tenant(ISOLATED)
    conn = connect_as(tenant)
    conn.execute("CREATE TABLE orders (id int)")
    where = conn.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'orders'").fetchone()
    assert where == (tenant.placement.schema,)
    owner, public_privileges = admin.execute(
        "SELECT pg_get_userbyid(datdba), array(SELECT privilege_type FROM aclexplode(datacl) WHERE grantee = 0)"
        " FROM pg_database WHERE datname = %s",
        [tenant.placement.database],
    ).fetchone()
    assert (owner, public_privileges) == (tenant.placement.role, [])


@pytest.mark.parametrize("intruder_tier", [SHARED, ISOLATED])
def test_other_tenant_cannot_connect_to_isolated_database(make_tenant, connect_as, intruder_tier):
    victim, intruder = make_tenant(ISOLATED), make_tenant(intruder_tier)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect_as(intruder, dbname=victim.placement.database)


def test_isolated_tenant_cannot_create_in_its_public_schema(make_tenant, connect_as):
    conn = connect_as(make_tenant(ISOLATED))
    assert conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'").fetchone() != (
        "pg_database_owner",
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE TABLE public.sneaky (id int)")


def test_isolated_tenant_cannot_reach_shared_tenant_schema(make_tenant, connect_as):
    victim, intruder = make_tenant(SHARED), make_tenant(ISOLATED)
    connect_as(victim).execute("CREATE TABLE secrets (v text)")
    # Not even a session there: only shared tenants are granted CONNECT on the shared database.
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect_as(intruder, dbname=victim.placement.database)


# --- reconcile: observe, then write only what is missing ---------------------------------

@pytest.fixture
def executed(monkeypatch):
    """Every statement the module under test sends, rendered."""
    seen: list[str] = []
    original = psycopg.Cursor.execute

    def execute(self, query, params=None, **kwargs):
        seen.append(query.as_string(self) if isinstance(query, psycopg.sql.Composable) else str(query))
        return original(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return seen


@pytest.mark.parametrize("tier", [SHARED, ISOLATED])
def test_second_ensure_only_reads(make_tenant, admin_dsn, executed, tier):
    tenant = make_tenant(tier)
    executed.clear()
    assert ensure_tenant_data(admin_dsn, tenant.placement, None).actions == ()
    assert executed and all(s.lstrip().upper().startswith("SELECT") for s in executed), executed


@pytest.mark.parametrize("tier", [SHARED, ISOLATED])
def test_first_ensure_reports_what_it_created(admin_dsn, shared_db, tier):
    where = placement(f"t-{secrets.token_hex(4)}", tier, shared_db)
    try:
        actions = ensure_tenant_data(admin_dsn, where, new_password()).actions
        assert {"created role", "set search_path", "created schema"} <= set(actions)
        assert ("created database" in actions) == (tier == ISOLATED)
    finally:
        drop_tenant_data(admin_dsn, where)


def test_missing_role_without_password_is_refused(admin_dsn, shared_db):
    where = placement(f"t-{secrets.token_hex(4)}", SHARED, shared_db)
    with pytest.raises(ValueError, match="no password"):
        ensure_tenant_data(admin_dsn, where, None)
    assert not tenant_data_exists(admin_dsn, where)


def test_lost_password_is_replaced(make_tenant, admin_dsn, connect_as):
    tenant = make_tenant(SHARED)
    replacement = new_password()
    assert ensure_tenant_data(admin_dsn, tenant.placement, replacement).actions == ("set password",)
    connect_as(tenant, password=replacement).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect_as(tenant)


def test_isolated_role_takes_a_new_password(make_tenant, admin_dsn, connect_as):
    tenant = make_tenant(ISOLATED)
    replacement = new_password()
    assert ensure_tenant_data(admin_dsn, tenant.placement, replacement).actions == ("set password",)
    connect_as(tenant, password=replacement).close()
    with pytest.raises(psycopg.OperationalError):
        connect_as(tenant)


def test_shared_tenant_drift_is_repaired(make_tenant, admin_dsn, admin, connect_as):
    tenant = make_tenant(SHARED)
    role, schema = tenant.placement.role, tenant.placement.schema
    admin.execute(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO PUBLIC')
    admin.execute(f'ALTER ROLE "{role}" CREATEDB INHERIT')
    admin.execute(f'ALTER ROLE "{role}" RESET search_path')
    actions = ensure_tenant_data(admin_dsn, tenant.placement, None).actions
    assert set(actions) == {"reset role attributes", "set search_path", "revoked schema privileges from PUBLIC"}
    assert role_row(admin, role) == (False, False, False, False, False, False, True)
    assert ensure_tenant_data(admin_dsn, tenant.placement, None).actions == ()
    connect_as(tenant).execute("CREATE TABLE again (id int)")


def test_isolated_tenant_drift_is_repaired(make_tenant, admin_dsn, postgres):
    tenant = make_tenant(ISOLATED)
    role, database = tenant.placement.role, tenant.placement.database
    with psycopg.connect(postgres.dsn(dbname=database), autocommit=True) as conn:
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO PUBLIC')
        conn.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    actions = ensure_tenant_data(admin_dsn, tenant.placement, None).actions
    assert set(actions) == {
        "revoked CONNECT, TEMPORARY on database from PUBLIC",
        "took ownership of schema public",
        "revoked CREATE on schema public from PUBLIC",
    }
    assert ensure_tenant_data(admin_dsn, tenant.placement, None).actions == ()


# --- suspension and deletion ------------------------------------------------------------

def test_suspended_tenant_cannot_log_in(make_tenant, admin_dsn, connect_as):
    tenant = make_tenant(SHARED)
    session = connect_as(tenant)
    assert set_login(admin_dsn, tenant.placement.role, False) is True
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        connect_as(tenant)
    assert set_login(admin_dsn, tenant.placement.role, False) is False
    # A reconcile keeps the data tier but leaves suspension alone.
    assert ensure_tenant_data(admin_dsn, tenant.placement, None).actions == ()
    assert set_login(admin_dsn, tenant.placement.role, True) is True
    connect_as(tenant).close()


def test_login_of_a_missing_role_is_an_error(admin_dsn):
    with pytest.raises(RoleMissing):
        set_login(admin_dsn, "tenant_never_was", False)


@pytest.mark.parametrize("tier", [SHARED, ISOLATED])
def test_drop_removes_everything_and_is_idempotent(admin_dsn, shared_db, admin, connect_as, tier):
    where = placement(f"t-{secrets.token_hex(4)}", tier, shared_db)
    tenant = Provisioned(where, new_password())
    ensure_tenant_data(admin_dsn, where, tenant.password)
    session = connect_as(tenant)
    session.execute("CREATE TABLE orders (id int)")
    assert tenant_data_exists(admin_dsn, where)

    actions = drop_tenant_data(admin_dsn, where).actions
    expected = ("dropped schema", f"revoked privileges on database {shared_db}", "dropped role") \
        if tier == SHARED else ("dropped database", "dropped role")
    assert actions == expected
    assert not tenant_data_exists(admin_dsn, where)
    assert role_row(admin, where.role) is None
    assert drop_tenant_data(admin_dsn, where).actions == ()


# --- failures -------------------------------------------------------------------------------

def test_unreachable_server_is_database_unavailable(postgres, shared_db):
    password = "hunter2-" + secrets.token_hex(8)
    dsn = f"host=127.0.0.1 port={free_port()} dbname={shared_db} user=postgres password={password} connect_timeout=2"
    where = placement("acme", SHARED, shared_db)
    with pytest.raises(DatabaseUnavailable) as caught:
        ensure_tenant_data(dsn, where, password)
    assert password not in str(caught.value) and password not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "127.0.0.1" in str(caught.value)


def test_wrong_admin_password_is_database_unavailable_without_the_password(postgres, shared_db):
    password = "wrong-" + secrets.token_hex(8)
    dsn = postgres.dsn(dbname=shared_db, password=password)
    with pytest.raises(DatabaseUnavailable, match="password authentication failed") as caught:
        set_login(dsn, "tenant_x", False)
    assert password not in str(caught.value)


def test_hostile_identifier_is_one_object_on_the_server(admin):
    hostile = 'a"; DROP TABLE x; --'
    admin.execute("CREATE TABLE IF NOT EXISTS public.x (id int)")
    try:
        admin.execute(sql.create_schema(hostile, "postgres"))
        assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [hostile]).fetchone() == (1,)
        assert admin.execute("SELECT to_regclass('public.x')").fetchone() != (None,)
    finally:
        admin.execute(sql.drop_schema(hostile))
        admin.execute("DROP TABLE public.x")


def test_quarantined_copies_past_their_retention_are_found_on_the_whole_server(postgres, shared_db):
    """What the server sweep drops: every tenant's expired copies, never a live schema or a young copy."""
    from tenant_operator.infra.tierdata import drop_quarantine, expired_quarantines

    shared = shared_db
    admin = postgres.dsn(dbname=shared)
    old, young, lookalike = "tenant_sweep_a$1000", "tenant_sweep_b$4000000000", "tenantxsweep$1000"
    with psycopg.connect(admin, autocommit=True) as conn:
        for schema in (old, young, lookalike, "tenant_sweep_live"):
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
    try:
        found = expired_quarantines(postgres.dsn(), shared, None, retention=60)
        assert ("schema", old) in found
        assert all(name not in (young, lookalike, "tenant_sweep_live") for _, name in found)
        assert expired_quarantines(postgres.dsn(), shared, "tenant_sweep_b", retention=0, now=4_000_000_001) == [
            ("schema", young)]
        drop_quarantine(postgres.dsn(), shared, "schema", old)
        assert ("schema", old) not in expired_quarantines(postgres.dsn(), shared, None, retention=60)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for schema in (old, young, lookalike, "tenant_sweep_live"):
                conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {}").format(psycopg.sql.Identifier(schema)))
