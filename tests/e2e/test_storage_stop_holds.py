"""The maxSize stop on a real PostgreSQL, against the ways around it an audit found.

No control plane: stop() and lift() of infra/storage.py as enforce calls them, and
the tenant's own sessions doing what a user would check: the write fails, the
bytes did not grow, and after the lift everything is as it was (ACLs included).
The operator's side of the stop (conditions, events, the resync) is
test_storage_limit.py's.
"""

from __future__ import annotations

import secrets
import threading
import time

import psycopg
import pytest

from tenant_operator.infra import storage
from tenant_operator.infra.postgres import (
    ISOLATED,
    SHARED,
    DataPlacement,
    drop_tenant_data,
    ensure_tenant_data,
    new_password,
    placement,
)
from tenant_operator.infra.shared_database import ensure_shared_database

pytestmark = pytest.mark.e2e

DENIED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


@pytest.fixture(scope="module")
def shared_db(postgres) -> str:
    name = f"stop_{secrets.token_hex(4)}"
    ensure_shared_database(postgres.dsn(), name)
    return name


@pytest.fixture
def admin_dsn(postgres, shared_db) -> str:
    return postgres.dsn(dbname=shared_db)


@pytest.fixture
def tenant(postgres, admin_dsn, shared_db):
    """make(tier) -> (placement, connect()): a provisioned tenant and sessions of its own role."""
    made: list[DataPlacement] = []

    def make(tier: str = SHARED):
        where = placement(f"t-{secrets.token_hex(4)}", tier, shared_db)
        password = new_password()
        ensure_tenant_data(admin_dsn, where, password)
        made.append(where)
        return where, lambda: psycopg.connect(postgres.dsn(dbname=where.database, user=where.role,
                                                           password=password), autocommit=True)

    yield make
    for where in made:
        storage.lift(admin_dsn, where)
        drop_tenant_data(admin_dsn, where)


def refused(conn: psycopg.Connection, statement: str) -> bool:
    try:
        conn.execute(statement)
    except DENIED:
        return True
    return False


def acls(conn: psycopg.Connection, schema: str) -> dict[str, list]:
    """Every effective ACL in the schema (relations, functions, the schema) and its owner: what the lift
    must give back. Effective: a default ACL (NULL) and the same entries written out are one thing."""
    entries = ("array(SELECT (pg_get_userbyid(a.grantor), pg_get_userbyid(a.grantee), a.privilege_type,"
               " a.is_grantable)::text FROM aclexplode(coalesce({acl}, acldefault({kind}, {owner}))) a ORDER BY 1)")
    relation = entries.format(acl="relacl", kind="(CASE relkind WHEN 'S' THEN 's' ELSE 'r' END)::\"char\"",
                              owner="relowner")
    function = entries.format(acl="proacl", kind="'f'", owner="proowner")
    namespace = entries.format(acl="nspacl", kind="'n'", owner="nspowner")
    rows = conn.execute(
        f"SELECT 'rel ' || relname, pg_get_userbyid(relowner), {relation}"
        " FROM pg_class WHERE relnamespace = %(s)s::text::regnamespace AND relkind <> 'i'"
        f" UNION ALL SELECT 'fn ' || proname, pg_get_userbyid(proowner), {function}"
        " FROM pg_proc WHERE pronamespace = %(s)s::text::regnamespace"
        f" UNION ALL SELECT 'schema', pg_get_userbyid(nspowner), {namespace}"
        " FROM pg_namespace WHERE nspname = %(s)s::text", {"s": schema}).fetchall()
    return {name: [owner, acl] for name, owner, acl in rows}


def test_an_idle_transaction_of_the_tenant_does_not_hang_the_stop(admin_dsn, tenant):
    where, connect = tenant()
    idle = connect()
    idle.execute("CREATE TABLE t (id int)")
    idle.autocommit = False
    idle.execute("SELECT count(*) FROM t")  # ACCESS SHARE held, the transaction left open
    started = time.monotonic()
    done = storage.stop(admin_dsn, where)
    assert time.monotonic() - started < 30
    assert any("ended 1 session" in action for action in done), done
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    with connect() as conn:
        assert refused(conn, "INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # reads go on


def test_a_stop_the_tenant_keeps_locked_is_refused_with_busy_not_a_hung_worker(admin_dsn, tenant, monkeypatch):
    where, connect = tenant()
    with connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    monkeypatch.setattr(storage, "_end_lock_holders", lambda conn, role: 0)  # as if ending them did not work
    holder = connect()
    holder.autocommit = False
    holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    started = time.monotonic()
    with pytest.raises(storage.StorageBusy):
        storage.stop(admin_dsn, where)
    assert time.monotonic() - started < 30
    holder.rollback()
    with connect() as conn:
        conn.execute("INSERT INTO t VALUES (1)")  # nothing half-done: the failed stop left the tenant as it was
    holder.close()


def test_a_half_done_stop_is_completed_at_the_next_look(admin_dsn, tenant):
    where, connect = tenant()
    with connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    storage.stop(admin_dsn, where)
    owner = storage.stop_owner(where)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:  # what an interrupted older stop left
        admin.execute(f"REVOKE ALL ON {where.schema}.t FROM {where.role}")
        admin.execute(f"GRANT INSERT ON {where.schema}.t TO {where.role}")
        assert admin.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
                             [f"{where.schema}.t"]).fetchone()[0] == owner
    assert storage.stop(admin_dsn, where)  # repaired
    with connect() as conn:
        assert refused(conn, "INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    assert storage.stop(admin_dsn, where) == []  # and a whole stop is left alone


def test_grants_made_before_the_stop_do_not_write_and_come_back_exactly(admin_dsn, tenant):
    where, connect = tenant()
    with connect() as conn:
        conn.execute("CREATE TABLE t (id bigserial, payload text)")
        conn.execute("GRANT INSERT, UPDATE ON t TO PUBLIC")
        conn.execute("GRANT USAGE ON SEQUENCE t_id_seq TO PUBLIC")
        conn.execute("CREATE FUNCTION open_door() RETURNS void SECURITY DEFINER LANGUAGE sql"
                     " AS $$ INSERT INTO t (payload) VALUES ('x') $$")
        conn.execute("CREATE FUNCTION closed_door() RETURNS void SECURITY DEFINER LANGUAGE sql"
                     " AS $$ INSERT INTO t (payload) VALUES ('x') $$")
        conn.execute("REVOKE EXECUTE ON FUNCTION closed_door() FROM PUBLIC")
        before = acls(conn, where.schema)
        size = storage.size(admin_dsn, where)
    storage.stop(admin_dsn, where)
    with connect() as conn:
        for statement in ("INSERT INTO t (payload) VALUES ('x')", "UPDATE t SET payload = 'y'",
                          "SELECT open_door()", "SELECT nextval('t_id_seq')"):
            assert refused(conn, statement), statement
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    assert storage.size(admin_dsn, where) == size
    storage.lift(admin_dsn, where)
    with connect() as conn:
        assert acls(conn, where.schema) == before


def test_a_delete_cannot_write_through_a_cascade_and_its_trigger(admin_dsn, tenant):
    where, connect = tenant()
    with connect() as conn:
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent int REFERENCES parent ON DELETE CASCADE)")
        conn.execute("CREATE TABLE ballast (payload text)")
        conn.execute("CREATE FUNCTION grow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " INSERT INTO ballast SELECT repeat(md5(random()::text), 1000) FROM generate_series(1, 100);"
                     " RETURN OLD; END $$")
        conn.execute("CREATE TRIGGER grow BEFORE DELETE ON child FOR EACH ROW EXECUTE FUNCTION grow()")
        conn.execute("INSERT INTO parent SELECT generate_series(1, 10)")
        conn.execute("INSERT INTO child SELECT generate_series(1, 10)")
    size = storage.size(admin_dsn, where)
    storage.stop(admin_dsn, where)
    with connect() as conn:
        assert refused(conn, "DELETE FROM parent")
        assert refused(conn, "TRUNCATE parent CASCADE")
        assert conn.execute("SELECT count(*) FROM ballast").fetchone()[0] == 0
    assert storage.size(admin_dsn, where) == size


def test_a_tenant_without_triggers_still_makes_room(admin_dsn, tenant):
    where, connect = tenant()
    with connect() as conn:
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent int REFERENCES parent ON DELETE SET NULL)")
        conn.execute("INSERT INTO parent SELECT generate_series(1, 10)")
        conn.execute("INSERT INTO child SELECT generate_series(1, 10)")
    storage.stop(admin_dsn, where)
    with connect() as conn:
        conn.execute("DELETE FROM parent")
        conn.execute("TRUNCATE child")


def test_a_co_operating_tenant_cannot_write_in_a_stopped_tenants_schema(admin_dsn, tenant):
    e, connect_e = tenant()
    f, connect_f = tenant()
    with connect_e() as conn:
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {e.schema} TO {f.role}")
    with connect_f() as conn:
        conn.execute(f"CREATE TABLE {e.schema}.planted (payload text)")
    before = acls(psycopg.connect(admin_dsn, autocommit=True), e.schema)
    storage.stop(admin_dsn, e)
    with connect_f() as conn:
        assert refused(conn, f"INSERT INTO {e.schema}.planted VALUES ('x')")
        assert refused(conn, f"CREATE TABLE {e.schema}.more (id int)")
    storage.lift(admin_dsn, e)
    with connect_f() as conn:
        conn.execute(f"INSERT INTO {e.schema}.planted VALUES ('x')")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert acls(admin, e.schema) == before
        admin.execute(f"DROP TABLE {e.schema}.planted")


def test_an_isolated_tenant_has_no_way_around_the_stop(postgres, admin_dsn, tenant):
    where, connect = tenant(ISOLATED)
    with connect() as conn:
        conn.execute("CREATE TABLE t (payload text)")
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TABLE other.more (payload text)")
        conn.execute("CREATE FUNCTION other.door() RETURNS void SECURITY DEFINER LANGUAGE sql"
                     f" AS $$ INSERT INTO {where.schema}.t VALUES ('x') $$")
        conn.execute(f"GRANT CREATE ON DATABASE {where.database} TO PUBLIC")
    with psycopg.connect(postgres.dsn(dbname=where.database), autocommit=True) as admin:
        before = admin.execute("SELECT datacl::text FROM pg_database WHERE datname = current_database()").fetchone()
    storage.stop(admin_dsn, where)
    size = storage.size(admin_dsn, where)
    with connect() as conn:
        for statement in ("SELECT lo_from_bytea(0, repeat('x', 100000)::bytea)", "CREATE SCHEMA elsewhere",
                          "SELECT other.door()", "INSERT INTO other.more VALUES ('x')",
                          "CREATE TEMPORARY TABLE scratch (id int)"):
            assert refused(conn, statement), statement
        assert conn.execute("SELECT count(*) FROM other.more").fetchone()[0] == 0
    assert storage.size(admin_dsn, where) <= size
    storage.lift(admin_dsn, where)
    with connect() as conn:
        conn.execute("SELECT other.door()")
        conn.execute("CREATE SCHEMA elsewhere")
    with psycopg.connect(postgres.dsn(dbname=where.database), autocommit=True) as admin:
        assert admin.execute("SELECT datacl::text FROM pg_database WHERE datname = current_database()"
                             ).fetchone() == before


def test_the_stop_waits_for_no_reader_of_the_tenant(admin_dsn, tenant):
    """While a stop waits for the lock, the tenant's reads queue behind it: for seconds at most."""
    where, connect = tenant()
    idle = connect()
    idle.execute("CREATE TABLE t (id int)")
    idle.autocommit = False
    idle.execute("SELECT count(*) FROM t")
    stopping = threading.Thread(target=storage.stop, args=(admin_dsn, where))
    stopping.start()
    time.sleep(0.5)
    with connect() as reader:
        started = time.monotonic()
        reader.execute("SELECT count(*) FROM t")
        assert time.monotonic() - started < 15
    stopping.join(timeout=60)
    assert not stopping.is_alive()
    idle.close()


def test_rows_deleted_while_stopped_give_their_space_back_at_the_next_vacuum(admin_dsn, tenant):
    where, connect = tenant()
    with connect() as conn:
        conn.execute("CREATE TABLE big (id bigserial PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO big (payload) SELECT md5(g::text) FROM generate_series(1, 20000) g")
    storage.stop(admin_dsn, where)
    full = storage.size(admin_dsn, where)
    assert storage.vacuum(admin_dsn, where) == 0  # nothing deleted: nothing to vacuum
    with connect() as conn:
        conn.execute("DELETE FROM big")

    def vacuumed() -> bool:
        storage.vacuum(admin_dsn, where)
        return storage.size(admin_dsn, where) < full / 2

    deadline = time.monotonic() + 30
    while not vacuumed():
        assert time.monotonic() < deadline, "the deleted rows' space never came back"
        time.sleep(0.5)
