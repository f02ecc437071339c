"""What a tenant's things are called: namespace and PostgreSQL names fit wherever they go."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tenant_operator.api import names
from tenant_operator.infra import postgres, tierdata

LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
UNQUOTED_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
RESERVED_DATABASE_NAMES = {"postgres", "template0", "template1", "public"}


@st.composite
def tenant_names(draw) -> str:
    """Names the CRD admits: a DNS label of 1 to 40 characters starting with a letter."""
    length = draw(st.integers(1, names.TENANT_NAME_MAX_LENGTH))
    first = draw(st.sampled_from(LOWER))
    if length == 1:
        return first
    middle = draw(st.text(LOWER + DIGITS + "-", min_size=length - 2, max_size=length - 2))
    return first + middle + draw(st.sampled_from(LOWER + DIGITS))


def test_tenant_namespace_is_prefixed():
    assert names.tenant_namespace("acme") == "tenant-acme"


def test_sql_name_turns_hyphens_into_underscores():
    assert names.sql_name("acme-corp-2") == "tenant_acme_corp_2"


def test_role_schema_and_database_share_the_one_sql_name():
    assert names.role_name("acme-corp") == names.schema_name("acme-corp") == names.database_name("acme-corp")
    assert names.role_name("acme-corp") == names.sql_name("acme-corp")


def test_labels_live_under_the_api_group():
    assert names.GROUP == "tenancy.dev"
    assert names.API_VERSION == "tenancy.dev/v1alpha1"
    assert names.LABEL_TENANT == "tenancy.dev/tenant"
    assert names.LABEL_TIER == "tenancy.dev/tier"
    assert names.LABEL_PLAN == "tenancy.dev/plan"
    assert names.FINALIZER == "tenancy.dev/finalizer"
    assert (names.LABEL_MANAGED_BY, names.MANAGED_BY) == ("app.kubernetes.io/managed-by", "tenant-operator")


def test_longest_tenant_name_still_fits_with_room_for_a_suffix():
    longest = "a" * names.TENANT_NAME_MAX_LENGTH

    assert len(names.tenant_namespace(longest)) <= 63
    # After a migration the source is renamed with a timestamp suffix; it must still fit in 63 bytes,
    # or PostgreSQL would silently truncate it. 4102444800 is the year 2100.
    for tier in ("shared", "isolated"):
        source = postgres.placement(longest, tier, "tenants")
        assert len(tierdata.quarantine_name(source, at=4102444800).encode()) <= 63


@settings(max_examples=50)
@given(tenant_names())
def test_tenant_namespace_is_a_valid_dns_label(name):
    assert re.fullmatch(names.TENANT_NAME_PATTERN, name)
    namespace = names.tenant_namespace(name)

    assert DNS_LABEL.fullmatch(namespace)
    assert len(namespace) <= 63
    assert namespace != "default" and not namespace.startswith("kube-")


@settings(max_examples=50)
@given(tenant_names())
def test_sql_name_is_a_valid_unquoted_identifier_of_at_most_63_bytes(name):
    identifier = names.sql_name(name)

    assert UNQUOTED_IDENTIFIER.fullmatch(identifier)
    assert len(identifier.encode()) <= 63
    assert identifier not in RESERVED_DATABASE_NAMES and not identifier.startswith("pg_")


@settings(max_examples=50)
@given(st.lists(tenant_names(), min_size=2, max_size=2, unique=True))
def test_distinct_tenants_never_share_a_namespace_or_sql_name(pair):
    first, second = pair

    assert names.tenant_namespace(first) != names.tenant_namespace(second)
    assert names.sql_name(first) != names.sql_name(second)


def test_shared_app_login_is_one_per_tenant_and_never_a_tenants_role():
    from tenant_operator.api.names import TENANT_NAME_MAX_LENGTH, role_name, shared_app_login, shared_app_login_of_role

    assert shared_app_login("acme-corp") == "tenancy_app_for_acme_corp"
    assert shared_app_login_of_role(role_name("acme-corp")) == shared_app_login("acme-corp")
    assert shared_app_login("a") != shared_app_login("b")
    assert len(shared_app_login("x" * TENANT_NAME_MAX_LENGTH).encode()) <= 63
    assert not shared_app_login("x").startswith("tenant_")


def test_shared_app_role_is_one_per_shared_database_and_never_a_tenants():
    from tenant_operator.api.names import shared_app_role

    assert shared_app_role("tenants") == "tenancy_app_tenants"
    assert shared_app_role("tenants") != shared_app_role("tenants_eu")
    long = shared_app_role("d" * 63)
    assert len(long.encode()) <= 63 and long != shared_app_role("d" * 62 + "e")
    assert not shared_app_role("x").startswith("tenant_")
