"""Tenant code run by a move or a snapshot gains nothing: it only ever runs as the tenant.

The tenant plants functions that try to become the admin (RESET ROLE, SET SESSION
AUTHORIZATION DEFAULT) and then a superuser (ALTER ROLE ... SUPERUSER, CREATE ROLE
... SUPERUSER), behind a CHECK constraint, a trigger, an expression index and a
DEFAULT; the move evaluates the CHECK while it writes the rows and the index while
it builds it (pg_stat_user_functions proves they ran). The catalogs say afterwards
that no role gained an attribute and none appeared.
"""

from __future__ import annotations

import psycopg

from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from .migration_data import tenant_secret
from .test_migration import _move

PLANT = """
CREATE FUNCTION try_escape(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  BEGIN EXECUTE 'RESET ROLE'; EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE 'SET SESSION AUTHORIZATION DEFAULT'; EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER CREATEROLE', current_user); EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', session_user); EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE format('CREATE ROLE %I SUPERUSER LOGIN', 'escaped_' || what); EXCEPTION WHEN others THEN NULL; END;
  RETURN true;
END $$;
CREATE FUNCTION check_escape(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RETURN {schema}.try_escape('check'); END $$;
CREATE FUNCTION index_escape(v int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RETURN {schema}.try_escape('index'); END $$;
CREATE FUNCTION default_escape() RETURNS int LANGUAGE plpgsql AS $$
BEGIN PERFORM {schema}.try_escape('default'); RETURN 1; END $$;
CREATE FUNCTION trigger_escape() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM {schema}.try_escape('trigger'); RETURN NEW; END $$;
CREATE TABLE guarded (id int PRIMARY KEY, v int CHECK ({schema}.check_escape(v)), d int DEFAULT {schema}.default_escape());
CREATE INDEX guarded_expression ON guarded (({schema}.index_escape(v)));
CREATE TRIGGER guarded_trigger BEFORE INSERT OR UPDATE ON guarded FOR EACH ROW EXECUTE FUNCTION {schema}.trigger_escape();
INSERT INTO guarded (id, v) SELECT g, g FROM generate_series(1, 50) g;
"""

POWERS = "rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls"


def _roles(postgres) -> dict[str, bool]:
    """Every role and whether it holds a power a tenant must not have."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        return dict(conn.execute(f"SELECT rolname, {POWERS} FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%%'"
                                 ).fetchall())


def _calls(postgres, database: str, function: str) -> int:
    with psycopg.connect(postgres.dsn(dbname=database), autocommit=True) as conn:
        row = conn.execute("SELECT calls FROM pg_stat_user_functions WHERE funcname = %s", [function]).fetchone()
    return row[0] if row else 0


def _assert_nothing_gained(postgres, before: dict[str, bool], role: str) -> None:
    now = _roles(postgres)
    assert [name for name in now if name.startswith("escaped_")] == []
    assert {name for name, powerful in now.items() if powerful} == {n for n, p in before.items() if p}
    assert now.get(role) in (False, None)


def test_tenant_code_in_checks_triggers_indexes_and_defaults_gains_nothing_from_moves_or_snapshot(
        tenants, kube, postgres):
    name = tenants.unique("plant")
    role = f"tenant_{name.replace('-', '_')}"
    tenants.create(name, plan="professional", tier="shared", database={"reclaimPolicy": "Snapshot"})
    tenants.wait_ready(name)
    with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(PLANT.replace("{schema}", role))
    before = _roles(postgres)
    assert before[role] is False

    _move(tenants, kube, name, "isolated")
    # The move wrote the rows through the CHECK and built the index: the tenant's code ran, in the target.
    wait_for(lambda: _calls(postgres, role, "check_escape") >= 50 and _calls(postgres, role, "index_escape") >= 50,
             timeout=30, what="the tenant's functions to have run during the move")
    _assert_nothing_gained(postgres, before, role)

    _move(tenants, kube, name, "shared")
    _assert_nothing_gained(postgres, before, role)
    with psycopg.connect(tenant_secret(kube, name)["DATABASE_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM guarded").fetchone()[0] == 50

    tenants.delete(name)
    tenants.wait_gone(name, timeout=120)
    _assert_nothing_gained(postgres, before, role)
    assert role not in _roles(postgres)  # dropped after the snapshot
    assert kube.read(ObjectRef(TENANT, name)) is None
