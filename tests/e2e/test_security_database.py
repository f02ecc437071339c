"""Database isolation: each tenant's own credentials, from its Secret, against everyone else's data.

Three tenants provisioned by the running operator: two in the shared tier (a schema each in
the shared database) and one isolated (a database of its own, with a name of the longest
length the API admits). Every attempt to reach another tenant's data, or anything outside the
tenant's own schema or database, is refused; the same credentials do all a tenant needs in its
own place. Each test asserts both sides.

What stays visible on purpose (the README documents it): PostgreSQL's catalogs are readable by
every role, so a shared-tier tenant sees the names of the other schemas and of their tables, and
the text of their definitions (function bodies, view queries), never a row of their data. The
isolated tier is the answer for tenants who mind.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import time

import psycopg
import pytest
from psycopg import sql as q
from psycopg.conninfo import make_conninfo

from tenant_operator.api import names
from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.postgres import DEFAULT_CONNECTION_LIMIT

from .conftest import RESYNC_SECONDS, Tenants, namespaced

DENIED = psycopg.errors.InsufficientPrivilege


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a tenant's workloads get: the tenant-db Secret."""

    tenant: str
    host: str
    port: int
    database: str
    user: str
    password: str
    schema: str
    url: str

    def dsn(self, database: str | None = None, password: str | None = None) -> str:
        return make_conninfo(host=self.host, port=self.port, dbname=database or self.database, user=self.user,
                             password=password or self.password, connect_timeout=5)


def credentials(kube, tenant: str) -> Credentials:
    secret = namespaced(kube, "v1", "Secret", names.DB_SECRET_NAME, names.tenant_namespace(tenant))
    values = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    return Credentials(tenant, values["host"], int(values["port"]), values["database"], values["user"],
                       values["password"], values["schema"], values["DATABASE_URL"])


@dataclasses.dataclass(frozen=True)
class Fleet:
    shared_a: Credentials
    shared_b: Credentials
    isolated: Credentials
    shared_database: str

    def __getitem__(self, key: str) -> Credentials:
        return getattr(self, key)


@pytest.fixture(scope="module")
def fleet(kube, cluster, operator, plans, shared_database):
    """Two shared tenants and one isolated, each with a table holding a secret row and a function."""
    helper = Tenants(kube, cluster)
    shared_a, shared_b = helper.unique("sec-a"), helper.unique("sec-b")
    isolated = f"sec-iso-{secrets.token_hex(3)}-" + "x" * 25
    assert len(isolated) == names.TENANT_NAME_MAX_LENGTH
    delete = {"database": {"reclaimPolicy": "Delete"}}
    helper.create(shared_a, plan="starter", **delete)
    helper.create(shared_b, plan="starter", **delete)
    helper.create(isolated, plan="professional", tier="isolated", **delete)
    try:
        for name in (shared_a, shared_b, isolated):
            helper.wait_ready(name, timeout=120)
        fleet = Fleet(credentials(kube, shared_a), credentials(kube, shared_b), credentials(kube, isolated),
                      shared_database)
        for creds in (fleet.shared_a, fleet.shared_b, fleet.isolated):
            with psycopg.connect(creds.url, autocommit=True) as conn:
                conn.execute("CREATE TABLE ledger (entry text)")
                conn.execute("INSERT INTO ledger VALUES (%s)", [f"secret of {creds.tenant}"])
                conn.execute("CREATE SEQUENCE invoice_numbers")
                conn.execute("CREATE FUNCTION whoami() RETURNS text LANGUAGE sql AS $$ SELECT current_user::text $$")
        yield fleet
    finally:
        for name in helper.created:
            helper.delete(name)
        for name in helper.created:
            helper.wait_gone(name, timeout=120)


@pytest.fixture
def connect(connect_dsn):
    def connect(creds: Credentials, database: str | None = None, password: str | None = None) -> psycopg.Connection:
        return connect_dsn(creds.dsn(database, password))

    return connect


@pytest.fixture
def admin(postgres):
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        yield conn


def refused(conn: psycopg.Connection, statement, *errors: type[Exception]) -> Exception:
    """Run a statement that must fail with one of `errors` (InsufficientPrivilege by default)."""
    with pytest.raises(errors or (DENIED,)) as caught:
        conn.execute(statement)
    return caught.value


def table(schema: str, name: str = "ledger") -> q.Composed:
    return q.SQL("{}.{}").format(q.Identifier(schema), q.Identifier(name))


def own_rows(creds: Credentials) -> list[str]:
    with psycopg.connect(creds.url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT entry FROM ledger ORDER BY 1")]


# Who attacks whom where the victim's data lives in the shared database: the intruder
# connects there with its own credentials. Only shared tenants may: PUBLIC has no CONNECT
# there, so an isolated tenant is refused at the door (test_isolated_tenant_cannot_connect_...).
SHARED_VICTIMS = [("shared_a", "shared_b"), ("shared_b", "shared_a")]
ALL_TENANTS = ["shared_a", "shared_b", "isolated"]


# --- what a tenant may do in its own place -----------------------------------------------------------


@pytest.mark.parametrize("who", ALL_TENANTS)
def test_tenant_works_in_its_own_schema_with_unqualified_names(fleet, connect, who):
    creds = fleet[who]
    conn = connect(creds)

    assert conn.execute("SELECT current_user, current_schema()").fetchone() == (creds.user, creds.schema)
    conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
    conn.execute("INSERT INTO orders (note) VALUES ('mine')")
    conn.execute("UPDATE orders SET note = 'still mine'")
    assert conn.execute("SELECT note FROM orders").fetchall() == [("still mine",)]
    conn.execute("CREATE VIEW recent AS SELECT * FROM orders")
    conn.execute("CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS $$ SELECT 2 * x $$")
    assert conn.execute("SELECT twice(21), whoami(), nextval('invoice_numbers')").fetchone() == (42, creds.user, 1)
    where = conn.execute("SELECT DISTINCT table_schema FROM information_schema.tables"
                         " WHERE table_name IN ('orders', 'recent')").fetchall()
    assert where == [(creds.schema,)]
    conn.execute("DROP VIEW recent")
    conn.execute("DROP TABLE orders")
    conn.execute("DROP FUNCTION twice(int)")


def test_temporary_tables_only_in_an_isolated_tenants_own_database(fleet, connect):
    connect(fleet.isolated).execute("CREATE TEMP TABLE scratch (id int)")

    refused(connect(fleet.shared_a), "CREATE TEMP TABLE scratch (id int)")


def test_large_objects_only_in_an_isolated_tenants_own_database(fleet, connect):
    # pg_largeobject belongs to no schema: in the shared database a tenant could keep data
    # there that a tier migration would not carry and that would keep its role from being dropped.
    oid = connect(fleet.isolated).execute("SELECT lo_from_bytea(0, 'mine')").fetchone()[0]
    assert connect(fleet.isolated).execute("SELECT lo_get(%s)", [oid]).fetchone() == (b"mine",)

    for statement in ("SELECT lo_create(0)", "SELECT lo_creat(-1)", "SELECT lo_from_bytea(0, 'x')"):
        refused(connect(fleet.shared_a), statement)


# --- another tenant's schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(("intruder", "victim"), SHARED_VICTIMS)
def test_tenant_cannot_read_write_or_create_in_another_tenants_schema(fleet, connect, intruder, victim):
    them = fleet[victim]
    conn = connect(fleet[intruder], fleet.shared_database)
    ledger, schema = table(them.schema), q.Identifier(them.schema)

    for statement in (
        q.SQL("SELECT * FROM {}").format(ledger),
        q.SQL("INSERT INTO {} VALUES ('planted')").format(ledger),
        q.SQL("UPDATE {} SET entry = 'changed'").format(ledger),
        q.SQL("DELETE FROM {}").format(ledger),
        q.SQL("TRUNCATE {}").format(ledger),
        q.SQL("COPY {} TO STDOUT").format(ledger),
        q.SQL("ALTER TABLE {} ADD COLUMN planted int").format(ledger),
        q.SQL("DROP TABLE {}").format(ledger),
        q.SQL("CREATE TABLE {} (id int)").format(table(them.schema, "planted")),
        q.SQL("CREATE VIEW {} AS SELECT 1").format(table(them.schema, "planted")),
        q.SQL("CREATE FUNCTION {}() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$").format(
            table(them.schema, "planted")),
        q.SQL("SELECT {}()").format(table(them.schema, "whoami")),
        q.SQL("SELECT nextval({})").format(q.Literal(f'"{them.schema}".invoice_numbers')),
        q.SQL("ALTER SCHEMA {} RENAME TO planted").format(schema),
        q.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(schema),
        q.SQL("DROP SCHEMA {} CASCADE").format(schema),
        q.SQL("GRANT USAGE ON SCHEMA {} TO CURRENT_USER").format(schema),
        q.SQL("COMMENT ON SCHEMA {} IS 'planted'").format(schema),
    ):
        refused(conn, statement)
    with pytest.raises(DENIED), conn.transaction():
        conn.execute(q.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(ledger))

    # Their data is untouched, and they still reach it.
    assert own_rows(them) == [f"secret of {them.tenant}"]


@pytest.mark.parametrize(("intruder", "victim"), SHARED_VICTIMS)
def test_search_path_to_another_schema_finds_nothing_and_creates_nothing(fleet, connect, intruder, victim):
    conn = connect(fleet[intruder], fleet.shared_database)
    conn.execute(q.SQL("SET search_path = {}").format(q.Identifier(fleet[victim].schema)))

    # Without USAGE the schema is skipped: nothing is found in it and nothing can be created.
    refused(conn, "SELECT * FROM ledger", psycopg.errors.UndefinedTable)
    refused(conn, "CREATE TABLE planted (id int)", psycopg.errors.InvalidSchemaName)
    refused(conn, "SELECT whoami()", psycopg.errors.UndefinedFunction)

    # The intruder's own schema works again as soon as the path points home.
    if intruder != "isolated":
        conn.execute("RESET search_path")
        assert conn.execute("SELECT entry FROM ledger").fetchall() == [(f"secret of {fleet[intruder].tenant}",)]


@pytest.mark.parametrize(("intruder", "victim"), SHARED_VICTIMS)
def test_tenant_cannot_become_or_gift_to_another_tenant(fleet, connect, intruder, victim):
    them = q.Identifier(fleet[victim].user)
    conn = connect(fleet[intruder], fleet.shared_database)

    refused(conn, q.SQL("SET ROLE {}").format(them))
    refused(conn, q.SQL("SET SESSION AUTHORIZATION {}").format(them))
    refused(conn, q.SQL("GRANT {} TO CURRENT_USER").format(them))
    refused(conn, q.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON TABLES TO PUBLIC").format(them))
    refused(conn, q.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(them))
    if intruder != "isolated":
        # Handing one's objects to another role would charge them to it, and survive our drop.
        refused(conn, q.SQL("ALTER TABLE ledger OWNER TO {}").format(them))
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'"
                            " AND schemaname = current_schema()").fetchone() == (fleet[intruder].user,)


@pytest.mark.parametrize(("intruder", "victim"), SHARED_VICTIMS)
def test_tenant_cannot_end_another_tenants_sessions(fleet, connect, intruder, victim):
    theirs = connect(fleet[victim])
    pid = theirs.info.backend_pid
    conn = connect(fleet[intruder], fleet.shared_database)

    for function in ("pg_terminate_backend", "pg_cancel_backend"):
        try:
            ended = conn.execute(q.SQL("SELECT {}(%s)").format(q.Identifier(function)), [pid]).fetchone()[0]
        except DENIED:
            ended = False
        assert ended is False
    assert theirs.execute("SELECT 1").fetchone() == (1,)


# --- what the catalogs show ------------------------------------------------------------------------------


@pytest.mark.parametrize(("intruder", "victim"), SHARED_VICTIMS)
def test_catalogs_show_other_tenants_names_but_no_privileges_or_rows(fleet, connect, intruder, victim):
    them = fleet[victim]
    conn = connect(fleet[intruder], fleet.shared_database)

    # The information schema shows only what the role may use: nothing of theirs. (Functions are
    # EXECUTE for PUBLIC by default, so `routines` names them, without their definition; calling
    # one needs USAGE on the schema, which is refused above.)
    for view, column in (("tables", "table_schema"), ("columns", "table_schema"), ("sequences", "sequence_schema"),
                         ("schemata", "schema_name"), ("views", "table_schema")):
        found = conn.execute(q.SQL("SELECT count(*) FROM information_schema.{} WHERE {} = %s").format(
            q.Identifier(view), q.Identifier(column)), [them.schema]).fetchone()[0]
        assert found == 0, view
    assert conn.execute("SELECT routine_definition FROM information_schema.routines WHERE routine_schema = %s",
                        [them.schema]).fetchall() == [(None,)]
    # pg_catalog is readable by every role (documented): names, and the text of definitions
    # (function bodies, view queries, column defaults), are there; rows and rights are not.
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [them.schema]).fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [them.schema]).fetchone() == (1,)
    assert conn.execute("SELECT p.prosrc LIKE '%%current_user%%' FROM pg_proc p JOIN pg_namespace n"
                        " ON n.oid = p.pronamespace WHERE n.nspname = %s", [them.schema]).fetchone() == (True,)
    rights = conn.execute(
        "SELECT has_schema_privilege(n.oid, 'USAGE'), has_schema_privilege(n.oid, 'CREATE'),"
        " has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'ledger'", [them.schema]).fetchone()
    assert rights == (False, False, False, False)
    # Statistics are filtered by privilege, and another role's query text is hidden.
    assert conn.execute("SELECT count(*) FROM pg_stats WHERE schemaname = %s", [them.schema]).fetchone() == (0,)
    watched = connect(them)
    watched.execute("SELECT 'a query of theirs'")
    text = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [watched.info.backend_pid]).fetchone()
    assert text is not None and "a query of theirs" not in (text[0] or "")
    # Their own view of it is whole.
    assert own_rows(them) == [f"secret of {them.tenant}"]


def test_isolated_tenants_tables_are_not_even_named_in_the_shared_database(fleet, connect):
    iso = fleet.isolated
    for intruder in ("shared_a", "shared_b"):
        conn = connect(fleet[intruder])
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [iso.schema]).fetchone() == (0,)
    # The isolated tenant sees its own tables, and nothing of the shared tenants from its database.
    conn = connect(iso)
    assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [iso.schema]).fetchone() == (1,)
    for other in (fleet.shared_a, fleet.shared_b):
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [other.schema]).fetchone() == (0,)


# --- public, other databases, the server ---------------------------------------------------------------


def test_tenant_cannot_create_in_public_anywhere(fleet, connect):
    places = [(fleet.shared_a, None), (fleet.shared_b, None), (fleet.isolated, None)]
    for creds, database in places:
        conn = connect(creds, database)
        for statement in ("CREATE TABLE public.planted (id int)",
                          "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
                          "CREATE FUNCTION pg_catalog.planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
                          "ALTER SCHEMA public OWNER TO CURRENT_USER"):
            refused(conn, statement)
    # No new schemas in the shared database; an isolated tenant owns its database, and may.
    refused(connect(fleet.shared_a), "CREATE SCHEMA planted")
    conn = connect(fleet.isolated)
    conn.execute("CREATE SCHEMA reports")
    conn.execute("CREATE TABLE reports.monthly (id int)")
    conn.execute("DROP SCHEMA reports CASCADE")


def test_isolated_tenant_cannot_connect_to_the_shared_database(fleet, connect):
    """Not even to list the shared tenants' schema names: PUBLIC has no CONNECT there."""
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(fleet.isolated, fleet.shared_database)
    assert connect(fleet.shared_a, fleet.shared_database).execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("intruder", ["shared_a", "shared_b"])
def test_tenant_cannot_connect_to_another_tenants_database(fleet, connect, intruder):
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(fleet[intruder], fleet.isolated.database)
    # The owner connects, with the very same kind of credentials.
    assert connect(fleet.isolated).execute("SELECT current_database()").fetchone() == (fleet.isolated.database,)


@pytest.mark.parametrize("who", ALL_TENANTS)
def test_tenant_cannot_use_the_servers_own_databases(fleet, connect, postgres, who):
    creds = fleet[who]
    with pytest.raises(psycopg.OperationalError, match="permission denied for database|not currently accepting"):
        connect(creds, "template1")
    with pytest.raises(psycopg.OperationalError, match="not currently accepting"):
        connect(creds, "template0")

    # The maintenance database admits a connection (PUBLIC keeps CONNECT) and nothing more.
    conn = connect(creds, "postgres")
    for statement in ("CREATE TABLE public.planted (id int)", "CREATE TEMP TABLE planted (id int)",
                      "CREATE SCHEMA planted", "SELECT lo_create(0)", "SELECT lo_from_bytea(0, 'x')"):
        refused(conn, statement)


@pytest.mark.parametrize("who", ALL_TENANTS)
def test_tenant_cannot_create_roles_or_databases_or_read_passwords(fleet, connect, who):
    conn = connect(fleet[who])

    refused(conn, "CREATE ROLE planted LOGIN PASSWORD 'x'")
    refused(conn, "CREATE DATABASE planted")
    for catalog in ("pg_authid", "pg_shadow", "pg_user_mapping", "pg_statistic"):
        refused(conn, q.SQL("SELECT * FROM pg_catalog.{}").format(q.Identifier(catalog)))
    assert conn.execute("SELECT rolpassword FROM pg_roles WHERE rolname = current_user").fetchone() == ("********",)
    for function in ("pg_read_file('postgresql.conf')", "pg_ls_dir('.')", "pg_read_binary_file('PG_VERSION')"):
        refused(conn, f"SELECT {function}")
    refused(conn, "COPY (SELECT 1) TO PROGRAM 'true'")


@pytest.mark.parametrize("who", ALL_TENANTS)
def test_tenant_cannot_raise_its_own_role(fleet, connect, admin, who):
    creds = fleet[who]
    conn = connect(creds)
    me = q.Identifier(creds.user)

    for attribute in ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS", "INHERIT",
                      "CONNECTION LIMIT -1", "VALID UNTIL 'infinity'"):
        refused(conn, q.SQL("ALTER ROLE {} WITH " + attribute).format(me))
    refused(conn, q.SQL("ALTER ROLE {} RENAME TO planted").format(me), DENIED, psycopg.errors.FeatureNotSupported)
    refused(conn, q.SQL("ALTER ROLE {} SET session_preload_libraries = 'x'").format(me))

    row = admin.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit,"
                        " rolconnlimit FROM pg_roles WHERE rolname = %s", [creds.user]).fetchone()
    assert row == (False, False, False, False, False, False, DEFAULT_CONNECTION_LIMIT)


def test_tenant_cannot_alter_the_shared_database_or_another_tenants(fleet, connect):
    shared, other = q.Identifier(fleet.shared_database), q.Identifier(fleet.isolated.database)
    for who in ("shared_a", "shared_b"):
        conn = connect(fleet[who], fleet.shared_database)
        for statement in (
            q.SQL("ALTER DATABASE {} SET search_path = public").format(shared),
            q.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(shared),
            q.SQL("ALTER DATABASE {} CONNECTION LIMIT 1").format(shared),
            q.SQL("COMMENT ON DATABASE {} IS 'planted'").format(shared),
        ):
            refused(conn, statement)
        # The tenant's own CONNECT makes this a warning ("no privileges were granted"), not an error.
        conn.execute(q.SQL("GRANT CREATE, TEMPORARY ON DATABASE {} TO CURRENT_USER").format(shared))
        assert conn.execute("SELECT has_database_privilege(current_database(), 'CREATE'),"
                            " has_database_privilege(current_database(), 'TEMPORARY')").fetchone() == (False, False)
    conn = connect(fleet.shared_a)
    refused(conn, q.SQL("ALTER DATABASE {} SET search_path = public").format(other))
    refused(conn, q.SQL("GRANT CONNECT ON DATABASE {} TO CURRENT_USER").format(other))
    refused(conn, q.SQL("DROP DATABASE {}").format(other))


def test_tenant_cannot_open_more_sessions_than_its_limit(fleet, connect, admin):
    creds = fleet.shared_b
    wait_for(lambda: admin.execute("SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = %s",
                                   [creds.user]).fetchone()[0], timeout=10, what="earlier sessions to end")
    sessions = [connect(creds) for _ in range(DEFAULT_CONNECTION_LIMIT)]
    assert all(conn.execute("SELECT 1").fetchone() == (1,) for conn in sessions)

    with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
        connect(creds)
    # Another tenant is not affected by this one's sessions.
    assert connect(fleet.shared_a).execute("SELECT 1").fetchone() == (1,)
    for conn in sessions:
        conn.close()


# --- a tenant's database settings cannot reach the operator ----------------------------------------------


def _reconciled(count: int = 3) -> None:
    """Give the operator time to reconcile every tenant a few more times (it resyncs each RESYNC_SECONDS)."""
    time.sleep(RESYNC_SECONDS * count + 1)


def _as_admin_in(postgres, database: str) -> psycopg.Connection:
    """A superuser session in a tenant's database that the tenant's database settings cannot steer."""
    pinned = "-c search_path=pg_catalog -c role=none -c statement_timeout=0 -c default_transaction_read_only=off"
    return psycopg.connect(make_conninfo(postgres.dsn(dbname=database), options=pinned), autocommit=True)


def test_isolated_tenants_search_path_cannot_make_the_operator_run_its_functions(fleet, connect, admin, postgres,
                                                                                operator, tenants):
    """An isolated tenant owns its database and may `ALTER DATABASE ... SET` what every session
    there starts with. Were the operator's superuser sessions to take the tenant's search_path,
    they would call the tenant's look-alikes of pg_catalog functions on every reconcile, as superuser."""
    iso = fleet.isolated
    conn = connect(iso)
    schema, database = q.Identifier(iso.schema), q.Identifier(iso.database)
    conn.execute("CREATE TABLE caught (session_user_name text, current_user_name text)")
    # Look-alikes of functions the operator's observation queries call, which note who ran them.
    for signature, returns, body in (
        ("pg_get_userbyid(oid)", "name", "RETURN pg_catalog.pg_get_userbyid($1);"),
        ('acldefault("char", oid)', "aclitem[]", "RETURN pg_catalog.acldefault($1, $2);"),
        ("quote_ident(text)", "text", "RETURN pg_catalog.quote_ident($1);"),
    ):
        conn.execute(q.SQL(
            "CREATE FUNCTION {}." + signature + " RETURNS " + returns + " LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO {}.caught VALUES (session_user, current_user); " + body + " END $$").format(schema, schema))
    try:
        conn.execute(q.SQL("ALTER DATABASE {} SET search_path = {}, pg_catalog").format(database, schema))
        # The trap is armed: a superuser session that does not pin its search_path falls in.
        with psycopg.connect(postgres.dsn(dbname=iso.database), autocommit=True) as unpinned:
            unpinned.execute("SELECT pg_get_userbyid(0)")
        assert conn.execute("SELECT * FROM caught").fetchall() == [(postgres.user, postgres.user)]
        conn.execute("TRUNCATE caught")

        _reconciled()

        with _as_admin_in(postgres, iso.database) as inspect:
            assert inspect.execute(q.SQL("SELECT * FROM {}.caught").format(schema)).fetchall() == []
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [iso.user]).fetchone() == (False,)
        assert tenants.condition(iso.tenant, "Ready")["status"] == "True"
    finally:
        admin.execute(q.SQL("ALTER DATABASE {} RESET ALL").format(database))
    assert own_rows(iso) == [f"secret of {iso.tenant}"]


def test_isolated_tenants_database_settings_cannot_stop_the_operator_repairing_it(fleet, connect, admin, postgres,
                                                                                 operator, tenants):
    """Settings that would make the operator's sessions act as the tenant, read-only or time out at
    once: the operator still puts back what it keeps in the tenant's database."""
    iso = fleet.isolated
    conn = connect(iso)
    database = q.Identifier(iso.database)
    try:
        conn.execute(q.SQL("ALTER DATABASE {} SET role = {}").format(database, q.Identifier(iso.user)))
        conn.execute(q.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(database))
        conn.execute(q.SQL("ALTER DATABASE {} SET lock_timeout = 1").format(database))
        with _as_admin_in(postgres, iso.database) as drift:
            drift.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # drift the operator must undo, in there

        def public_locked() -> bool:
            with _as_admin_in(postgres, iso.database) as inspect:
                return inspect.execute(
                    "SELECT NOT has_schema_privilege('public', 'public', 'CREATE'),"
                    " pg_get_userbyid(nspowner) = %s FROM pg_namespace WHERE nspname = 'public'",
                    [postgres.user]).fetchone() == (True, True)

        wait_for(public_locked, timeout=RESYNC_SECONDS * 10, what="the operator to revoke CREATE on public again")
        assert tenants.condition(iso.tenant, "Ready")["status"] == "True"
        assert f"tenant {iso.tenant}: reconcile failed" not in operator.log_path.read_text()
    finally:
        admin.execute(q.SQL("ALTER DATABASE {} RESET ALL").format(database))
    assert own_rows(iso) == [f"secret of {iso.tenant}"]


# --- deletion cannot be blocked by another tenant ----------------------------------------------------------


def test_grants_from_another_tenant_do_not_keep_a_deleted_tenant(tenants, kube, connect, admin):
    leaving, staying = tenants.unique("leaving"), tenants.unique("staying")
    for name in (leaving, staying):
        tenants.create(name, plan="starter", database={"reclaimPolicy": "Delete"})
    for name in (leaving, staying):
        tenants.wait_ready(name)
    gone, kept = credentials(kube, leaving), credentials(kube, staying)
    conn = connect(kept)
    conn.execute("CREATE TABLE shared_with_friend (entry text)")
    conn.execute("INSERT INTO shared_with_friend VALUES ('kept')")
    # The staying tenant shares with the leaving one, as a tenant may: these grants depend on
    # the leaving role, and DROP ROLE refuses to drop a role that still holds privileges.
    friend = q.Identifier(gone.user)
    conn.execute(q.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(q.Identifier(kept.schema), friend))
    conn.execute(q.SQL("GRANT SELECT ON shared_with_friend TO {}").format(friend))
    conn.execute(q.SQL("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {}").format(friend))
    with psycopg.connect(gone.url, autocommit=True) as theirs:
        assert theirs.execute(q.SQL("SELECT * FROM {}").format(table(kept.schema, "shared_with_friend"))
                              ).fetchall() == [("kept",)]

    tenants.delete(leaving)
    tenants.wait_gone(leaving, timeout=90)

    assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [gone.user]).fetchone() == (0,)
    assert conn.execute("SELECT entry FROM shared_with_friend").fetchall() == [("kept",)]
    assert tenants.condition(staying, "Ready")["status"] == "True"


# --- tier migration runs no tenant code as the admin ------------------------------------------------------


def _migrate(tenants, kube, name: str, tier: str) -> None:
    kube.merge_patch(ObjectRef(TENANT, name), {"spec": {"tier": tier}})

    def over():
        found = tenants.condition(name, "Migrating")
        return found if found and found["status"] == "False" else None

    wait_for(over, timeout=120, what=f"tenant {name}'s move to {tier} to end")


def _role_exists(admin, role: str) -> bool:
    return admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0] == 1


def test_leaving_the_isolated_tier_runs_no_tenant_function_as_admin(tenants, kube, connect, admin):
    name, witness = tenants.unique("mig-iso"), f"escalated_{secrets.token_hex(4)}"
    tenants.create(name, plan="professional", tier="isolated", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name, timeout=120)
    creds = credentials(kube, name)
    conn = connect(creds)
    schema, database = q.Identifier(creds.schema), q.Identifier(creds.database)
    conn.execute("CREATE TABLE ledger (entry text)")
    conn.execute("INSERT INTO ledger VALUES ('row')")
    # Baits for the functions an admin session could call unqualified (the checksum's among them).
    conn.execute(q.SQL(
        "CREATE FUNCTION {}.md5(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN"
        " BEGIN EXECUTE 'CREATE ROLE " + witness + "'; EXCEPTION WHEN OTHERS THEN NULL; END;"
        " RETURN pg_catalog.md5($1); END $$").format(schema))
    conn.execute(q.SQL(
        "CREATE FUNCTION {}.hashtextextended(text, bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN"
        " BEGIN EXECUTE 'CREATE ROLE " + witness + "'; EXCEPTION WHEN OTHERS THEN NULL; END;"
        " RETURN pg_catalog.hashtextextended($1, $2); END $$").format(schema))
    conn.execute(q.SQL("ALTER DATABASE {} SET search_path = {}, pg_catalog").format(database, schema))
    conn.close()
    try:
        _migrate(tenants, kube, name, "shared")
        assert not _role_exists(admin, witness)
    finally:
        if _role_exists(admin, witness):
            admin.execute(q.SQL("DROP ROLE {}").format(q.Identifier(witness)))


def test_entering_the_isolated_tier_runs_no_tenant_function_as_admin(tenants, kube, connect, admin):
    name, witness = tenants.unique("mig-sh"), f"escalated_{secrets.token_hex(4)}"
    tenants.create(name, plan="professional", tier="shared", database={"reclaimPolicy": "Delete"})
    tenants.wait_ready(name)
    conn = connect(credentials(kube, name))
    conn.execute(
        "CREATE FUNCTION looks_fine(entry text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN"
        " BEGIN EXECUTE 'CREATE ROLE " + witness + "'; EXCEPTION WHEN OTHERS THEN NULL; END;"
        " RETURN true; END $$")
    conn.execute("CREATE TABLE ledger (entry text CHECK (looks_fine(entry)))")
    conn.execute("INSERT INTO ledger VALUES ('row')")
    conn.close()
    assert not _role_exists(admin, witness)  # run as the tenant, the function could not create a role
    try:
        _migrate(tenants, kube, name, "isolated")
        assert not _role_exists(admin, witness)
    finally:
        if _role_exists(admin, witness):
            admin.execute(q.SQL("DROP ROLE {}").format(q.Identifier(witness)))
