"""The operator's SQL renders names as quoted identifiers and values as parameters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenant_operator.infra import sql
from tenant_operator.infra.postgres import ISOLATED, SHARED, placement

HOSTILE = 'a"; DROP TABLE x; --'
QUOTED_HOSTILE = '"a""; DROP TABLE x; --"'

# PostgreSQL identifiers hold no NUL and at most 63 bytes.
identifiers = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1).filter(
    lambda s: len(s.encode()) <= sql.MAX_IDENTIFIER_BYTES
)

# Every statement builder that takes names, as (name -> statement).
BUILDERS = {
    "create_login_role": lambda n: sql.create_login_role(n, "secret", 5),
    "alter_role_attributes": lambda n: sql.alter_role_attributes(n, 5),
    "alter_role_password": lambda n: sql.alter_role_password(n, "secret"),
    "alter_role_login": lambda n: sql.alter_role_login(n, False),
    "alter_role_search_path": lambda n: sql.alter_role_search_path(n, n),
    "drop_role": sql.drop_role,
    "create_schema": lambda n: sql.create_schema(n, n),
    "alter_schema_owner": lambda n: sql.alter_schema_owner(n, n),
    "revoke_schema_from_public": sql.revoke_schema_from_public,
    "rename_schema": lambda n: sql.rename_schema(n, n),
    "drop_schema": sql.drop_schema,
    "create_database": lambda n: sql.create_database(n, n),
    "alter_database_owner": lambda n: sql.alter_database_owner(n, n),
    "revoke_database_from_public": sql.revoke_database_from_public,
    "revoke_temporary_from_public": sql.revoke_temporary_from_public,
    "grant_connect": lambda n: sql.grant_connect(n, n),
    "rename_database": lambda n: sql.rename_database(n, n),
    "drop_database": sql.drop_database,
}


def unquote(rendered: str) -> str:
    assert re.fullmatch(r'"(?:[^"]|"")*"', rendered, re.DOTALL), rendered
    return rendered[1:-1].replace('""', '"')


def test_create_login_role_has_no_powers_and_a_connection_limit():
    stmt = sql.create_login_role("tenant_acme", "SCRAM-SHA-256$4096:abc", 20).as_string()
    assert stmt == (
        'CREATE ROLE "tenant_acme" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT'
        " NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD 'SCRAM-SHA-256$4096:abc'"
    )


def test_connection_limit_must_be_an_integer():
    with pytest.raises(ValueError):
        sql.create_login_role("tenant_acme", "pw", "1; DROP ROLE postgres")


def test_password_literal_is_quoted():
    stmt = sql.alter_role_password("tenant_acme", "it's'; DROP ROLE x; --").as_string()
    assert stmt.endswith("'it''s''; DROP ROLE x; --'")


@pytest.mark.parametrize(
    ("stmt", "expected"),
    [
        (sql.alter_role_search_path("tenant_a", "tenant_a"), 'ALTER ROLE "tenant_a" SET search_path = "tenant_a"'),
        (sql.alter_role_login("tenant_a", True), 'ALTER ROLE "tenant_a" WITH LOGIN'),
        (sql.alter_role_login("tenant_a", False), 'ALTER ROLE "tenant_a" WITH NOLOGIN'),
        (sql.create_schema("tenant_a", "tenant_a"), 'CREATE SCHEMA "tenant_a" AUTHORIZATION "tenant_a"'),
        (sql.revoke_schema_from_public("tenant_a"), 'REVOKE ALL ON SCHEMA "tenant_a" FROM PUBLIC'),
        (sql.create_database("tenant_a", "tenant_a"), 'CREATE DATABASE "tenant_a" OWNER "tenant_a" TEMPLATE template0'),
        (sql.create_database("shared"), 'CREATE DATABASE "shared" TEMPLATE template0'),
        (sql.revoke_database_from_public("tenant_a"), 'REVOKE CONNECT, TEMPORARY ON DATABASE "tenant_a" FROM PUBLIC'),
        (sql.grant_connect("tenant_a", "tenant_a"), 'GRANT CONNECT ON DATABASE "tenant_a" TO "tenant_a"'),
        (sql.own_public_schema(), "ALTER SCHEMA public OWNER TO CURRENT_USER"),
        (sql.revoke_create_on_public_schema(), "REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        (sql.drop_schema("tenant_a"), 'DROP SCHEMA IF EXISTS "tenant_a" CASCADE'),
        (sql.drop_database("tenant_a"), 'DROP DATABASE IF EXISTS "tenant_a" WITH (FORCE)'),
        (sql.drop_role("tenant_a"), 'DROP ROLE IF EXISTS "tenant_a"'),
        (sql.rename_schema("tenant_a", "tenant_a_old"), 'ALTER SCHEMA "tenant_a" RENAME TO "tenant_a_old"'),
        (sql.rename_database("tenant_a", "tenant_a_old"), 'ALTER DATABASE "tenant_a" RENAME TO "tenant_a_old"'),
    ],
)
def test_statements_render_with_quoted_identifiers(stmt, expected):
    assert stmt.as_string() == expected


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_hostile_name_is_quoted_not_injected(builder):
    rendered = builder(HOSTILE).as_string()
    assert QUOTED_HOSTILE in rendered
    assert rendered.replace(QUOTED_HOSTILE, '"n"') == builder("n").as_string()


@pytest.mark.parametrize(
    "query",
    [sql.role_state(HOSTILE, HOSTILE), sql.schema_state(HOSTILE), sql.database_state(HOSTILE, HOSTILE),
     sql.terminate_sessions(HOSTILE)],
)
def test_observation_queries_take_names_as_parameters(query):
    assert HOSTILE not in query.statement.as_string()
    assert "DROP" not in query.statement.as_string()
    assert HOSTILE in query.params.values()


@given(identifiers)
def test_any_identifier_round_trips(name):
    assert unquote(sql.ident(name).as_string()) == name


@given(identifiers)
def test_any_name_only_ever_fills_an_identifier_slot(name):
    quoted = sql.ident(name).as_string()
    for builder in BUILDERS.values():
        rendered = builder(name).as_string()
        assert rendered.replace(quoted, '"n"') == builder("n").as_string()


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 64, "é" * 32])
def test_names_postgres_would_mangle_are_refused(name):
    with pytest.raises(ValueError):
        sql.ident(name)


def test_longest_name_is_accepted():
    assert sql.ident("x" * 63).as_string() == '"' + "x" * 63 + '"'


def test_shared_placement_lives_in_a_schema_of_the_shared_database():
    p = placement("acme-corp", SHARED, "tenants")
    assert (p.tier, p.database, p.schema, p.role) == (SHARED, "tenants", "tenant_acme_corp", "tenant_acme_corp")


def test_isolated_placement_has_its_own_database_and_the_same_schema():
    p = placement("acme-corp", ISOLATED, "tenants")
    assert (p.tier, p.database, p.schema, p.role) == (ISOLATED, "tenant_acme_corp", "tenant_acme_corp", "tenant_acme_corp")


def test_unknown_tier_is_refused():
    with pytest.raises(ValueError, match="unknown tier"):
        placement("acme", "dedicated", "tenants")
