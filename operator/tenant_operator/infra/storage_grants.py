"""What a stopped tenant could still write through besides ownership, taken away and given back exactly.

Called by storage.py inside the stop's (and the lift's) one transaction, after
REASSIGN OWNED. Ownership is not the only way to write: privileges the tenant
granted before it went over survive REASSIGN (`GRANT INSERT ON t TO PUBLIC` is
then a grant by the stop owner, still there), and so do grants to other roles,
CREATE on its schema or (isolated tier) on its database, UPDATE on its large
objects, and EXECUTE on SECURITY DEFINER functions, which run as their owner.
So at each stop every grant that could write, held by anyone other than an
object's owner, is saved, then revoked; the lift grants the saved ones back.
What "could write" means, per kind of object (`_WRITING`):

- tables, views, sequences, large objects: every privilege but SELECT (reads go on);
- SECURITY DEFINER functions (owned by the stop owner, or in a covered schema): EXECUTE;
- the covered schemas: CREATE, and USAGE of a role that owns something in them. That
  is a co-operating tenant F whom the tenant E let create in its schema: F's tables
  there are F's, they are not reassigned (their owner would change for a stop of
  E's, and F's own stop and lift would then be tangled with E's), but without USAGE
  on E's schema F can neither reach them nor run anything that does. Roles that only
  read there keep USAGE, and so keep reading;
- isolated tier: the database's CREATE and TEMPORARY, and EXECUTE on the large
  object creators (the shared database never grants those, shared_database.py).
  Those functions belong to the bootstrap superuser: an admin that is no superuser
  cannot revoke them (PostgreSQL warns, revokes nothing), so they are left out then
  rather than have every stop refused as incomplete; docs/database-limits.md says so.

Saved where: `tenancy_admin.stopped_grants` in the same database, a schema the admin
owns and grants nobody anything in, keyed by the stopped schema. Same database, so
that saving and revoking commit together; not the tenant's schema, whose size is
what maxSize compares with (in the isolated tier the whole database counts, and
the table's few pages count with it: kilobytes, empty at rest).

A grant a grantee made onwards with its grant option comes back as the object
owner's grant (a superuser's GRANT is recorded as the owner's): the same rights
for the same roles, another grantor. Every statement here is a GRANT, REVOKE,
INSERT or DELETE on catalogs and the admin's own table: none runs the tenant's
code.
"""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import sql as q

from tenant_operator.infra import sql
from tenant_operator.infra.connection import first_row

ADMIN_SCHEMA = "tenancy_admin"
SAVED_TABLE = "stopped_grants"

KINDS = ("TABLE", "SEQUENCE", "FUNCTION", "SCHEMA", "DATABASE", "LARGE OBJECT")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
              "USAGE", "CREATE", "TEMPORARY", "CONNECT", "EXECUTE")


class StopIncomplete(Exception):
    """Grants that could write were still there after the stop revoked them: the stop is not committed."""


@dataclasses.dataclass(frozen=True)
class Grant:
    """One privilege on one object, as GRANT and REVOKE name them.

    `target`: (schema, name) of a table or sequence, (name,) of a schema or database,
    the regprocedure text of a function (the server's own quoting: the one form a
    signature can be named in), or a large object's oid. `grantee` None: PUBLIC.
    """

    kind: str
    target: tuple[str, ...] | str | int
    grantee: str | None
    privilege: str
    grantable: bool = False

    def _parts(self) -> tuple[q.SQL, q.Composable, q.Composable]:
        if self.kind not in KINDS or self.privilege not in PRIVILEGES:
            raise ValueError(f"not a privilege the stop handles: {self.privilege} on {self.kind}")
        if self.kind == "FUNCTION":
            if not isinstance(self.target, str):
                raise ValueError("a function is named by its regprocedure text")
            target: q.Composable = q.SQL(self.target)
        elif self.kind == "LARGE OBJECT":
            target = q.Literal(int(self.target))  # type: ignore[arg-type]
        else:
            if not isinstance(self.target, tuple):
                raise ValueError(f"a {self.kind.lower()} is named by identifiers")
            for part in self.target:
                sql.ident(part)  # checked: not empty, no NUL, not over 63 bytes
            target = q.Identifier(*self.target)
        grantee = q.SQL("PUBLIC") if self.grantee is None else sql.ident(self.grantee)
        return q.SQL(f"{self.privilege} ON {self.kind}"), target, grantee

    def grant(self) -> q.Composed:
        what, target, grantee = self._parts()
        option = " WITH GRANT OPTION" if self.grantable else ""
        return q.SQL("GRANT {} {} TO {}" + option).format(what, target, grantee)

    def revoke(self) -> q.Composed:
        """CASCADE: what the grantee granted onwards with its grant option goes too (and was saved too)."""
        what, target, grantee = self._parts()
        return q.SQL("REVOKE {} {} FROM {} CASCADE").format(what, target, grantee)


# Objects the stop covers, with their owner and effective ACL (NULL means the kind's default).
_OBJECTS = """
WITH stop_owner AS (SELECT oid FROM pg_roles WHERE rolname = %(owner)s),
covered AS (SELECT oid FROM pg_namespace WHERE nspname = ANY (%(schemas)s::text[]))
SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, c.oid, c.relowner AS owner,
       coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner)) AS acl
  FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND (c.relnamespace IN (SELECT oid FROM covered) OR c.relowner = (SELECT oid FROM stop_owner))
UNION ALL
SELECT 'FUNCTION', p.oid, p.proowner, coalesce(p.proacl, acldefault('f', p.proowner))
  FROM pg_proc p WHERE (p.prosecdef AND (p.pronamespace IN (SELECT oid FROM covered)
                                          OR p.proowner = (SELECT oid FROM stop_owner)))
                    OR (%(isolated)s AND p.oid = ANY (%(creators)s::text[]::regprocedure[])
                        AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))
UNION ALL
SELECT 'SCHEMA', n.oid, n.nspowner, coalesce(n.nspacl, acldefault('n', n.nspowner))
  FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM covered)
UNION ALL
SELECT 'DATABASE', d.oid, d.datdba, coalesce(d.datacl, acldefault('d', d.datdba))
  FROM pg_database d WHERE %(isolated)s AND d.datname = current_database()
UNION ALL
SELECT 'LARGE OBJECT', m.oid, m.lomowner, coalesce(m.lomacl, acldefault('L', m.lomowner))
  FROM pg_largeobject_metadata m WHERE m.lomowner = (SELECT oid FROM stop_owner)
"""

# Of their ACL entries, those that could write (see the module docstring), held by someone other
# than the object's owner; less `ours`: the DELETE and TRUNCATE the stop itself gives the tenant to make
# room (never saved as the tenant's; revoked when it may not make room).
_WRITING = f"""
SELECT o.kind, o.oid, a.grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
  FROM ({_OBJECTS}) o, aclexplode(o.acl) a
 WHERE a.grantee <> o.owner
   AND CASE o.kind
         WHEN 'FUNCTION' THEN true
         WHEN 'DATABASE' THEN a.privilege_type <> 'CONNECT'
         WHEN 'SCHEMA' THEN a.privilege_type <> 'USAGE' OR a.grantee IN (
              SELECT relowner FROM pg_class WHERE relnamespace = o.oid
              UNION SELECT proowner FROM pg_proc WHERE pronamespace = o.oid)
         ELSE a.privilege_type <> 'SELECT' END
   AND NOT (o.kind = 'TABLE' AND a.privilege_type = ANY (%(ours)s::text[])
            AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
            AND a.grantor = (SELECT oid FROM pg_roles WHERE rolname = %(owner)s))
"""

# Saved grants (or grants found now) with the names GRANT and REVOKE need; gone objects and roles drop out.
_NAMED = """
SELECT g.kind, g.privilege, g.grantable,
       CASE WHEN g.grantee = 0 THEN NULL ELSE r.rolname END AS grantee,
       coalesce(cn.nspname, sn.nspname, d.datname) AS first, c.relname AS second,
       CASE WHEN g.kind = 'FUNCTION' THEN g.oid::regprocedure::text END AS function,
       CASE WHEN g.kind = 'LARGE OBJECT' THEN g.oid::bigint END AS large_object
  FROM ({grants}) g
  LEFT JOIN pg_roles r ON r.oid = g.grantee
  LEFT JOIN pg_class c ON g.kind IN ('TABLE', 'SEQUENCE') AND c.oid = g.oid
  LEFT JOIN pg_namespace cn ON cn.oid = c.relnamespace
  LEFT JOIN pg_namespace sn ON g.kind = 'SCHEMA' AND sn.oid = g.oid
  LEFT JOIN pg_database d ON g.kind = 'DATABASE' AND d.oid = g.oid
 WHERE (g.grantee = 0 OR r.oid IS NOT NULL)
   AND CASE g.kind WHEN 'FUNCTION' THEN EXISTS (SELECT 1 FROM pg_proc WHERE oid = g.oid)
                   WHEN 'LARGE OBJECT' THEN EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = g.oid)
                   ELSE coalesce(cn.nspname, sn.nspname, d.datname) IS NOT NULL END
"""


def ensure_saved_table(conn: psycopg.Connection) -> None:
    """The admin's schema and table for saved grants, ours alone (a schema squatted under that name is moved aside)."""
    row = conn.execute("SELECT pg_get_userbyid(nspowner) = current_user FROM pg_namespace WHERE nspname = %s",
                       [ADMIN_SCHEMA]).fetchone()
    if row is not None and not row[0]:
        # An isolated tenant owns its database and may have made a schema of that name first: the
        # admin writes only into a table it made itself, so that one is renamed out of the way.
        aside = first_row(conn.execute("SELECT %s || '_' || oid FROM pg_namespace WHERE nspname = %s",
                                       [ADMIN_SCHEMA, ADMIN_SCHEMA]))
        conn.execute(q.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.ident(ADMIN_SCHEMA), sql.ident(aside[0])))
        row = None
    if row is None:
        conn.execute(q.SQL("CREATE SCHEMA {} AUTHORIZATION CURRENT_USER").format(sql.ident(ADMIN_SCHEMA)))
        conn.execute(q.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.ident(ADMIN_SCHEMA)))
    conn.execute(q.SQL("CREATE TABLE IF NOT EXISTS {} (stop text NOT NULL, kind text NOT NULL, object oid NOT NULL,"
                       " grantee oid NOT NULL, privilege text NOT NULL, grantable boolean NOT NULL,"
                       " PRIMARY KEY (stop, kind, object, grantee, privilege))").format(_saved()))


def take_away(conn: psycopg.Connection, stop: str, role: str, owner: str, schemas: list[str], isolated: bool,
              making_room: bool) -> int:
    """Save, then revoke, every grant that could write (module docstring); how many were revoked.

    A grant saved at an earlier stop is kept as it was (ON CONFLICT DO NOTHING): a repeated stop
    finds only what it granted itself, or what someone granted since, and must not take that for the
    tenant's own.
    """
    params = _params(stop, role, owner, schemas, isolated, ours=["DELETE", "TRUNCATE"])
    conn.execute(q.SQL("INSERT INTO {} (stop, kind, object, grantee, privilege, grantable)"
                       " SELECT %(stop)s, kind, oid, grantee, privilege, grantable FROM ({}) w"
                       " ON CONFLICT DO NOTHING").format(_saved(), q.SQL(_WRITING)), params)
    params = _params(stop, role, owner, schemas, isolated, ours=["DELETE", "TRUNCATE"] if making_room else [])
    found = _named(conn, q.SQL(_WRITING), params)
    for grant in found:
        conn.execute(grant.revoke())
    left = _named(conn, q.SQL(_WRITING), params)
    if left:
        raise StopIncomplete(f"{len(left)} grant(s) that could write survived the stop, such as "
                             f"{left[0].privilege} on {left[0].kind.lower()} {left[0].target} to "
                             f"{left[0].grantee or 'PUBLIC'}")
    return len(found)


def give_back(conn: psycopg.Connection, stop: str) -> int:
    """Grant back what take_away() saved for `stop` (objects and roles gone since are skipped); how many."""
    saved = q.SQL("SELECT kind, object AS oid, grantee, privilege, grantable FROM {} WHERE stop = %(stop)s").format(
        _saved())
    grants = _named(conn, saved, {"stop": stop})
    for grant in grants:
        conn.execute(grant.grant())
    forget(conn, stop)
    return len(grants)


def forget(conn: psycopg.Connection, stop: str) -> None:
    """Drop what was saved for `stop`: a fresh stop saves anew."""
    conn.execute(q.SQL("DELETE FROM {} WHERE stop = %s").format(_saved()), [stop])


def has_saved(conn: psycopg.Connection) -> bool:
    """Whether the admin's table is there (a database never stopped has none)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE n.nspname = %s AND c.relname = %s)", [ADMIN_SCHEMA, SAVED_TABLE]).fetchone()
    return bool(row and row[0])


def writes_as_owner_on_delete(conn: psycopg.Connection, owner: str, schemas: list[str]) -> bool:
    """Whether a DELETE or TRUNCATE by the tenant could make anything write as the stop owner.

    Triggers (any: a plain one fired by a foreign key's cascade runs as the child table's owner,
    the stop owner) and rules on the covered tables, and foreign keys into them whose ON DELETE
    cascades into a table with triggers, wherever that table is. ON DELETE SET NULL / SET DEFAULT
    without triggers is let through: it writes one new version of each child row, once (the tenant
    can insert no new parent to repeat it), which the operator's VACUUM takes back.
    """
    row = conn.execute(
        "WITH covered AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = ANY (%(schemas)s::text[]) OR c.relowner = (SELECT oid FROM pg_roles"
        "   WHERE rolname = %(owner)s))"
        " SELECT EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM covered)"
        "   AND r.ev_type <> '1')"
        " OR EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM covered) AND NOT t.tgisinternal)"
        " OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND k.confrelid IN (SELECT oid FROM covered)"
        "   AND k.confdeltype NOT IN ('a', 'r') AND EXISTS (SELECT 1 FROM pg_trigger t"
        "    WHERE t.tgrelid = k.conrelid AND NOT t.tgisinternal))",
        {"schemas": schemas, "owner": owner}).fetchone()
    return bool(row and row[0])


def _params(stop: str, role: str, owner: str, schemas: list[str], isolated: bool, ours: list[str]) -> dict:
    return {"stop": stop, "role": role, "owner": owner, "schemas": schemas, "isolated": isolated,
            "ours": ours, "creators": list(sql.LARGE_OBJECT_CREATORS)}


def _named(conn: psycopg.Connection, grants: q.Composable, params: dict) -> list[Grant]:
    rows = conn.execute(q.SQL(_NAMED).format(grants=grants), params).fetchall()
    return [_grant(*row) for row in rows]


def _grant(kind: str, privilege: str, grantable: bool, grantee: str | None, first: str | None,
           second: str | None, function: str | None, large_object: int | None) -> Grant:
    target: tuple[str, ...] | str | int
    if kind == "FUNCTION":
        target = str(function)
    elif kind == "LARGE OBJECT":
        target = int(large_object or 0)
    else:
        target = (str(first), str(second)) if second is not None else (str(first),)
    return Grant(kind, target, grantee, privilege, grantable)


def _saved() -> q.Identifier:
    return q.Identifier(ADMIN_SCHEMA, SAVED_TABLE)
