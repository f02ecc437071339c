"""The grants a maxSize stop takes away and gives back render as GRANT and REVOKE with quoted names."""

from __future__ import annotations

import pytest

from tenant_operator.infra.storage_grants import _WRITING, Grant

HOSTILE = 'a"; DROP TABLE x; --'


def test_a_grant_to_public_comes_back_as_it_was_made():
    grant = Grant("TABLE", ("tenant_acme", "orders"), None, "INSERT")
    assert grant.grant().as_string() == 'GRANT INSERT ON TABLE "tenant_acme"."orders" TO PUBLIC'
    assert grant.revoke().as_string() == 'REVOKE INSERT ON TABLE "tenant_acme"."orders" FROM PUBLIC CASCADE'


def test_a_grant_option_is_given_back_and_what_was_granted_onwards_goes_with_the_revoke():
    grant = Grant("SEQUENCE", ("tenant_acme", "orders_id_seq"), "tenant_other", "USAGE", grantable=True)
    assert grant.grant().as_string().endswith('TO "tenant_other" WITH GRANT OPTION')
    assert grant.revoke().as_string().endswith('FROM "tenant_other" CASCADE')


def test_names_are_identifiers_whatever_the_tenant_called_them():
    grant = Grant("SCHEMA", (HOSTILE,), HOSTILE, "CREATE")
    assert grant.grant().as_string() == 'GRANT CREATE ON SCHEMA "a""; DROP TABLE x; --" TO "a""; DROP TABLE x; --"'


def test_functions_are_named_by_the_servers_own_signature_and_large_objects_by_number():
    assert Grant("FUNCTION", '"tenant_acme".door(integer)', None, "EXECUTE").grant().as_string() == (
        'GRANT EXECUTE ON FUNCTION "tenant_acme".door(integer) TO PUBLIC')
    assert Grant("LARGE OBJECT", 16402, "tenant_other", "UPDATE").revoke().as_string() == (
        'REVOKE UPDATE ON LARGE OBJECT 16402 FROM "tenant_other" CASCADE')


@pytest.mark.parametrize("grant", [
    Grant("TABLE", ("s", "t"), None, "ALL; DROP TABLE x"),
    Grant("TABLESPACE", ("s",), None, "CREATE"),
    Grant("FUNCTION", ("s", "f"), None, "EXECUTE"),
    Grant("TABLE", '"s"."t"', None, "INSERT"),
])
def test_only_privileges_and_kinds_the_stop_knows_render(grant):
    with pytest.raises(ValueError):
        grant.grant()


def test_what_could_write_is_everything_but_reading_and_is_never_the_owners_own():
    # Reads go on: SELECT on tables, sequences and large objects, CONNECT to the database, and USAGE on
    # the schema for roles that own nothing in it; an owner's own entries are not grants to take.
    assert "a.grantee <> o.owner" in _WRITING
    assert "ELSE a.privilege_type <> 'SELECT' END" in _WRITING
    assert "WHEN 'DATABASE' THEN a.privilege_type <> 'CONNECT'" in _WRITING
    assert "WHEN 'SCHEMA' THEN a.privilege_type <> 'USAGE' OR a.grantee IN (" in _WRITING
