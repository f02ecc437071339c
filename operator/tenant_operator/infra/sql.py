"""The operator's SQL, as `psycopg.sql` objects: no connections, no I/O.

Identifiers always go through `ident()` (a checked `sql.Identifier`), values
through query parameters. Utility statements (CREATE/ALTER ROLE, CREATE
DATABASE...) are not planned by PostgreSQL, so they cannot take bind parameters:
there, and only there, values are `sql.Literal` (a connection limit, a password
verifier). Statements that carry a password must never be logged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from psycopg import sql

# PostgreSQL silently truncates longer identifiers to NAMEDATALEN-1 bytes, so two
# long names could collide into one object: refuse them instead.
MAX_IDENTIFIER_BYTES = 63

# The safety attributes of a tenant role. LOGIN is not here: it is switched by
# suspension (`alter_role_login`), not reset by a reconcile.
ROLE_ATTRIBUTES = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"


class Query(NamedTuple):
    """A statement with its parameters: `cursor.execute(*query)`."""

    statement: sql.SQL | sql.Composed
    params: dict[str, Any]


def ident(name: str) -> sql.Identifier:
    if not name:
        raise ValueError("an SQL identifier cannot be empty")
    if "\x00" in name:
        raise ValueError("an SQL identifier cannot contain a NUL character")
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"SQL identifier longer than {MAX_IDENTIFIER_BYTES} bytes: {name[:20]}...")
    return sql.Identifier(name)


def _statement(template: str, *names: str) -> sql.Composed:
    return sql.SQL(template).format(*(ident(n) for n in names))


# --- roles ---------------------------------------------------------------------

def create_login_role(role: str, password: str, connection_limit: int) -> sql.Composed:
    """CREATE ROLE ... LOGIN with a password (pass a SCRAM verifier, not the plain text)."""
    return sql.SQL("CREATE ROLE {} WITH LOGIN " + ROLE_ATTRIBUTES + " CONNECTION LIMIT {} PASSWORD {}").format(
        ident(role), sql.Literal(int(connection_limit)), sql.Literal(password)
    )


def alter_role_attributes(role: str, connection_limit: int) -> sql.Composed:
    """Put back the safety attributes someone may have granted a tenant role since."""
    return sql.SQL("ALTER ROLE {} WITH " + ROLE_ATTRIBUTES + " CONNECTION LIMIT {}").format(
        ident(role), sql.Literal(int(connection_limit))
    )


def alter_role_password(role: str, password: str) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(ident(role), sql.Literal(password))


def alter_role_login(role: str, enabled: bool) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} WITH " + ("LOGIN" if enabled else "NOLOGIN")).format(ident(role))


def alter_role_set(role: str, parameter: str, value: str) -> sql.Composed:
    """A default every session of the role starts with (a limit of its plan)."""
    return sql.SQL("ALTER ROLE {} SET {} = {}").format(ident(role), ident(parameter), sql.Literal(value))


def alter_role_reset(role: str, parameter: str) -> sql.Composed:
    return _statement("ALTER ROLE {} RESET {}", role, parameter)


def alter_role_search_path(role: str, schema: str) -> sql.Composed:
    """Set per role, not per database, so it follows the role across a tier migration."""
    return _statement("ALTER ROLE {} SET search_path = {}", role, schema)


def members_of(role: str) -> Query:
    """Roles that were granted membership in `role`: each could SET ROLE to it.

    A PostgreSQL 15 role may grant membership in itself from a session logged in as
    itself, so a tenant can hand its role to another login; a move locks them out too.
    """
    return Query(
        sql.SQL(
            "SELECT m.rolname AS member FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member"
            " WHERE a.roleid = (SELECT oid FROM pg_roles WHERE rolname = %(role)s) ORDER BY 1"
        ),
        {"role": role},
    )


def grant_membership(role: str, member: str) -> sql.Composed:
    return _statement("GRANT {} TO {}", role, member)


def revoke_membership(role: str, member: str) -> sql.Composed:
    return _statement("REVOKE {} FROM {} CASCADE", role, member)


def sessions_of(roles: list[str]) -> Query:
    """How many sessions the roles have open (other than ours)."""
    return Query(
        sql.SQL("SELECT count(*) AS sessions FROM pg_stat_activity"
                " WHERE usename = ANY(%(roles)s) AND pid <> pg_backend_pid()"),
        {"roles": roles},
    )


def drop_role(role: str) -> sql.Composed:
    return _statement("DROP ROLE IF EXISTS {}", role)


def drop_owned_by(role: str) -> sql.Composed:
    """In the current database: drop what the role owns and revoke what was granted to it.

    Run only where the role owns nothing (`role_dependencies`), so that it only revokes:
    privileges another tenant granted it would otherwise make DROP ROLE fail.
    """
    return _statement("DROP OWNED BY {}", role)


def revoke_database_from_role(database: str, role: str) -> sql.Composed:
    return _statement("REVOKE ALL ON DATABASE {} FROM {}", database, role)


def role_dependencies(role: str) -> Query:
    """Per database, whether the role owns something there or only holds privileges.

    pg_shdepend is cluster-wide; database '' stands for shared objects (databases).
    """
    return Query(
        sql.SQL(
            "SELECT coalesce(d.datname, '') AS database, bool_or(s.deptype = 'o') AS owns"
            " FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid"
            " WHERE s.refclassid = 'pg_authid'::regclass"
            " AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)"
            " AND s.deptype <> 'p'"
            " GROUP BY 1 ORDER BY 1"
        ),
        {"role": role},
    )


def databases_granted_to(role: str) -> Query:
    """Databases on which the role was granted a privilege (by their owner, another tenant)."""
    return Query(
        sql.SQL(
            "SELECT d.datname FROM pg_database d, aclexplode(d.datacl) a"
            " WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)"
            " AND d.datdba <> a.grantee GROUP BY 1 ORDER BY 1"
        ),
        {"role": role},
    )


def terminate_sessions(role: str) -> Query:
    """End the role's open sessions: NOLOGIN only stops new ones.

    Waits (up to 5 s each, PG14+) for them to be gone, so that what follows,
    a DROP or a test, does not race the dying sessions.
    """
    return Query(
        sql.SQL(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE usename = %(role)s AND pid <> pg_backend_pid()"
        ),
        {"role": role},
    )


# --- schemas -------------------------------------------------------------------

def create_schema(schema: str, owner: str) -> sql.Composed:
    return _statement("CREATE SCHEMA {} AUTHORIZATION {}", schema, owner)


def alter_schema_owner(schema: str, owner: str) -> sql.Composed:
    return _statement("ALTER SCHEMA {} OWNER TO {}", schema, owner)


def revoke_schema_from_public(schema: str) -> sql.Composed:
    return _statement("REVOKE ALL ON SCHEMA {} FROM PUBLIC", schema)


def own_public_schema() -> sql.Composed:
    """Give `public` to the admin: in PG15 it belongs to pg_database_owner, the tenant."""
    return sql.SQL("ALTER SCHEMA public OWNER TO CURRENT_USER").format()


def revoke_create_on_public_schema() -> sql.Composed:
    return sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC").format()


def rename_schema(schema: str, new_name: str) -> sql.Composed:
    return _statement("ALTER SCHEMA {} RENAME TO {}", schema, new_name)


def drop_schema(schema: str) -> sql.Composed:
    return _statement("DROP SCHEMA IF EXISTS {} CASCADE", schema)


# --- databases -----------------------------------------------------------------

def create_database(database: str, owner: str | None = None) -> sql.Composed:
    """From template0: template1 may hold an admin's objects, and copying it fails
    while anyone is connected to it."""
    if owner is None:
        return _statement("CREATE DATABASE {} TEMPLATE template0", database)
    return _statement("CREATE DATABASE {} OWNER {} TEMPLATE template0", database, owner)


def alter_database_owner(database: str, owner: str) -> sql.Composed:
    return _statement("ALTER DATABASE {} OWNER TO {}", database, owner)


def revoke_database_from_public(database: str) -> sql.Composed:
    return _statement("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC", database)


def revoke_temporary_from_public(database: str) -> sql.Composed:
    return _statement("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC", database)


# Large objects live in pg_largeobject, outside every schema, and creating one needs no
# privilege but EXECUTE on these functions (granted to PUBLIC). In a database tenants
# share, a tenant could store data outside its schema (lost by a tier migration, and
# blocking DROP ROLE) or fill the database: PUBLIC loses them there.
LARGE_OBJECT_CREATORS = (
    "pg_catalog.lo_creat(integer)",
    "pg_catalog.lo_create(oid)",
    "pg_catalog.lo_from_bytea(oid, bytea)",
    "pg_catalog.lo_import(text)",
    "pg_catalog.lo_import(text, oid)",
)


def public_large_object_creators() -> Query:
    """Which of LARGE_OBJECT_CREATORS PUBLIC may execute in the current database."""
    return Query(
        sql.SQL(
            "SELECT p.oid::regprocedure::text AS function FROM pg_proc p"
            " WHERE p.oid = ANY (%(functions)s::text[]::regprocedure[])"
            " AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
            "  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')"
            " ORDER BY 1"
        ),
        {"functions": list(LARGE_OBJECT_CREATORS)},
    )


def revoke_large_object_creators_from_public() -> sql.Composed:
    return sql.SQL("REVOKE EXECUTE ON FUNCTION " + ", ".join(LARGE_OBJECT_CREATORS) + " FROM PUBLIC").format()


def grant_connect(database: str, role: str) -> sql.Composed:
    return _statement("GRANT CONNECT ON DATABASE {} TO {}", database, role)


def revoke_connect(database: str, role: str) -> sql.Composed:
    return _statement("REVOKE CONNECT ON DATABASE {} FROM {}", database, role)


def revoke_connect_from_public(database: str) -> sql.Composed:
    return _statement("REVOKE CONNECT ON DATABASE {} FROM PUBLIC", database)


def shared_schema_owners(prefix: str) -> Query:
    """Login roles owning a schema of the current database whose name starts with `prefix`:
    the shared tenants, who must keep CONNECT when PUBLIC loses it."""
    return Query(
        sql.SQL(
            "SELECT DISTINCT r.rolname AS role FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner"
            " WHERE starts_with(n.nspname, %(prefix)s) AND NOT r.rolsuper ORDER BY 1"
        ),
        {"prefix": prefix},
    )


def rename_database(database: str, new_name: str) -> sql.Composed:
    return _statement("ALTER DATABASE {} RENAME TO {}", database, new_name)


def drop_database(database: str) -> sql.Composed:
    """WITH (FORCE) ends the tenant's sessions, which would otherwise block the drop."""
    return _statement("DROP DATABASE IF EXISTS {} WITH (FORCE)", database)


# --- observation ---------------------------------------------------------------
# ACLs are read through acldefault() when NULL: a NULL acl means "the defaults",
# which for a database include CONNECT and TEMPORARY for PUBLIC (grantee 0).

def role_state(role: str, schema: str | None = None, member: str | None = None) -> Query:
    """One row if the role exists: its attributes, whether search_path is the schema,
    whether the role itself (not PUBLIC) was granted CONNECT on the current database,
    and whether `member` exists and is a direct member of it.

    rolconfig holds `search_path=<value>` with the value quoted as quote_ident
    would, so the comparison is done by the server rather than re-implemented.
    """
    return Query(
        sql.SQL(
            "SELECT rolcanlogin, rolconfig, rolsuper, rolinherit, rolcreaterole, rolcreatedb,"
            " rolreplication, rolbypassrls, rolconnlimit,"
            " coalesce(('search_path=' || quote_ident(%(schema)s)) = ANY (rolconfig), false)"
            " AS search_path_ok,"
            " EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()"
            "  AND a.grantee = r.oid AND a.privilege_type = 'CONNECT') AS connect_granted,"
            " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(member)s) AS member_exists,"
            " EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles x ON x.oid = m.member"
            "  WHERE m.roleid = r.oid AND x.rolname = %(member)s) AS is_member"
            " FROM pg_roles r WHERE rolname = %(role)s"
        ),
        {"role": role, "schema": schema, "member": member},
    )


def schema_state(schema: str) -> Query:
    """One row if the schema exists: its owner (is it us?) and what PUBLIC may do in it."""
    return Query(
        sql.SQL(
            "SELECT pg_get_userbyid(n.nspowner) AS owner,"
            " pg_get_userbyid(n.nspowner) = current_user AS owned_by_current_user,"
            " array(SELECT a.privilege_type FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
            "  WHERE a.grantee = 0 ORDER BY 1)::text[] AS public_privileges"
            " FROM pg_namespace n WHERE n.nspname = %(schema)s"
        ),
        {"schema": schema},
    )


def database_state(database: str, role: str | None = None) -> Query:
    """One row if the database exists: owner, PUBLIC's privileges, `role`'s own grants."""
    return Query(
        sql.SQL(
            "SELECT pg_get_userbyid(d.datdba) AS owner, d.datacl::text[] AS datacl,"
            " array(SELECT a.privilege_type FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
            "  WHERE a.grantee = 0 ORDER BY 1)::text[] AS public_privileges,"
            " array(SELECT a.privilege_type FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
            "  JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname = %(role)s ORDER BY 1)::text[]"
            " AS role_privileges"
            " FROM pg_database d WHERE d.datname = %(database)s"
        ),
        {"database": database, "role": role},
    )



# --- snapshots -------------------------------------------------------------------

def snapshot_tables(schema: str | None) -> Query:
    """The tables a snapshot must hold: those of `schema`, or of every user schema when None
    (an isolated tenant's whole database). Tables of extensions are left out, as pg_dump does;
    `has_data` is False for a partitioned parent, whose rows live in its partitions."""
    where = "n.nspname = %(schema)s" if schema is not None else (
        "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'")
    return Query(
        sql.SQL(
            "SELECT n.nspname AS schema, c.relname AS name, c.relkind = 'r' AS has_data"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND " + where +
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
            " AND d.objid = c.oid AND d.deptype = 'e')"
            " ORDER BY 1, 2"
        ),
        {"schema": schema} if schema is not None else {},
    )
