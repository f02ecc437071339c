"""Hostile input against the pure code: rendering and SQL building, fuzzed with hypothesis.

Whatever text reaches the operator - quota keys and values, owner names and kinds, display
names, template names, identifiers - it either is refused by a declared error (the model's
ValidationError, the API server's twin; render.TemplateError and its SpecError; ValueError
from sql.ident) or becomes manifests and statements in which that text stays data: a quoted
identifier, a parameter, a string field. Nothing else is raised, nothing is injected.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import string

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from tenant_operator.api import fields, names
from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.settings import Settings
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import connection, postgres, sql, tierdata

SETTINGS = Settings(database_url="postgresql://postgres:secret@db.example:5432/postgres")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE_TEXT = ["a;drop", "x'); DROP TABLE t; --", 'a"b', "robert'); drop role postgres;--", "ünï©ødé",
                "\u200b", "..", "../../etc/passwd", "{{ 7 * 7 }}", "${HOME}", "a\nb", "\x00", "-1", "1e999",
                "99999999999999999999Ei", "system:authenticated", "system:anonymous", "CPU", "gpus", "a/b/c"]
any_text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=80))


@st.composite
def tenant_names(draw) -> str:
    """Names the CRD admits (names.TENANT_NAME_PATTERN, at most 40 characters)."""
    length = draw(st.integers(1, names.TENANT_NAME_MAX_LENGTH))
    first = draw(st.sampled_from(string.ascii_lowercase))
    if length == 1:
        return first
    middle = draw(st.text(string.ascii_lowercase + string.digits + "-", min_size=length - 2, max_size=length - 2))
    return first + middle + draw(st.sampled_from(string.ascii_lowercase + string.digits))


# What the CRD admits, in the model's words (test_api_validation proves the API server agrees).
crd_resource_keys = st.one_of(
    st.from_regex(fields.RESOURCE_NAME_PATTERN, fullmatch=True).filter(lambda k: len(k) <= 253),
    st.sampled_from(["cpu", "pods", "requests.memory", "count/deployments.apps", "example.com/gpu", "gpus",
                     "hugepages-2Mi", "requests.hugepages-1Gi", "storage", "limits.storage", "eXample.com/x",
                     "a/b/c", "requests.gpu", "example.com/" + "x" * 64]),
)
crd_quantities = st.one_of(st.integers(0, 10**30), st.from_regex(fields.QUANTITY_PATTERN, fullmatch=True).filter(
    lambda q: len(q) <= fields.QUANTITY_MAX_LENGTH))


def _quota_admitted(entry: tuple[str, object]) -> bool:
    try:
        fields._quota_entries({entry[0]: fields._number_as_text(entry[1])})
    except ValueError:
        return False
    return True


# A quota also names only what a ResourceQuota counts, and counts objects in whole numbers.
crd_quotas = st.dictionaries(crd_resource_keys, crd_quantities, max_size=4).map(
    lambda quota: dict(filter(_quota_admitted, quota.items())))
owner_names = st.one_of(st.sampled_from([t for t in HOSTILE_TEXT if t]), st.text(min_size=1, max_size=80))
crd_owners = st.lists(st.one_of(
    st.fixed_dictionaries({"kind": st.sampled_from(["User", "Group"]), "name": owner_names}),
    st.fixed_dictionaries({"kind": st.just("ServiceAccount"), "name": owner_names,
                           "namespace": st.from_regex(fields.DNS_LABEL_PATTERN, fullmatch=True).filter(
                               lambda n: len(n) <= 63)}),
), max_size=4)

# Anything at all, for the model to refuse or admit.
any_keys = st.one_of(any_text, crd_resource_keys)
any_quantities = st.one_of(any_text, st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.none(),
                           crd_quantities)
any_owners = st.lists(st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from(["User", "Group", "ServiceAccount"]), any_text), "name": any_text},
    optional={"namespace": any_text},
), max_size=3)


def plan_body(quota=None, template: str = "web") -> dict:
    return {"metadata": {"name": "fuzz"}, "spec": {
        "tiers": ["shared", "isolated"], "quota": quota or {"pods": "10"},
        "limits": {"max": {"cpu": "2"}}, "workloads": {"isolated": {"template": template}}}}


def admitted(parse, body):
    """The model's verdict, which is the API server's (test_api_validation proves they agree)."""
    try:
        return parse(body)
    except ValidationError:
        return None


def render_everything(tenant: Tenant, plan: TenantPlan, tier: str) -> list[dict] | None:
    """All the tenant's manifests, or None when rendering refused the spec with its declared error."""
    try:
        groups = render.tenant_objects(tenant, plan, SETTINGS, tier)
    except render.TemplateError as error:
        event(f"refused: {type(error).__name__} {getattr(error, 'reason', '')}")
        assert str(error), "a refusal says why"
        if isinstance(error, render.SpecError):
            assert error.condition_type in ("QuotaReady", "NamespaceReady")
            assert re.fullmatch(r"[A-Z][A-Za-z]+", error.reason)
        return None
    event("rendered")
    return [*groups["namespace"], *groups["quota"], *groups["access"], *groups["workloads"]]


# --- rendering ------------------------------------------------------------------------------------------


@FUZZ
@given(name=tenant_names(), display_name=any_text, overrides=st.dictionaries(any_keys, any_quantities, max_size=4),
       owner_list=any_owners)
def test_the_model_refuses_any_spec_only_with_its_validation_error(name, display_name, overrides, owner_list):
    spec = {"plan": "fuzz", "displayName": display_name, "quotaOverrides": overrides, "owners": owner_list}
    tenant = admitted(Tenant.from_body, {"metadata": {"name": name}, "spec": spec})
    if tenant is not None:
        assert len(tenant.spec.owners) == len(owner_list)
        assert all(isinstance(value, str) for value in tenant.spec.quota_overrides.values())


@FUZZ
@given(name=tenant_names(), tier=st.sampled_from(["shared", "isolated"]), display_name=st.one_of(st.none(), any_text),
       overrides=crd_quotas, plan_quota=crd_quotas, owner_list=crd_owners)
@example(name="a", tier="shared", display_name=None, overrides={}, plan_quota={},
         owner_list=[{"kind": "Group", "name": "system:authenticated"}])
@example(name="a", tier="shared", display_name="x'); DROP TABLE t; --", overrides={"cpu": "99999999999999999999Ei"},
         plan_quota={}, owner_list=[{"kind": "User", "name": "robert'); drop role postgres;--"}])
def test_rendering_any_admitted_spec_refuses_it_cleanly_or_keeps_every_value_as_data(
        name, tier, display_name, overrides, plan_quota, owner_list):
    spec = {"plan": "fuzz", "tier": tier, "quotaOverrides": overrides, "owners": owner_list}
    if display_name is not None:
        spec["displayName"] = display_name
    tenant = admitted(Tenant.from_body, {"metadata": {"name": name}, "spec": spec})
    plan = admitted(TenantPlan.from_body, plan_body(plan_quota))
    assert tenant is not None and plan is not None, "the strategies draw only what the CRD admits"

    documents = render_everything(tenant, plan, tier)
    if documents is None:
        return

    json.dumps(documents)  # plain data, nothing a serializer could choke on
    namespace = names.tenant_namespace(name)
    assert {doc["metadata"].get("namespace", namespace) for doc in documents} == {namespace}
    hard = next(doc for doc in documents if doc["kind"] == "ResourceQuota")["spec"]["hard"]
    assert hard == {**plan.spec.quota, **tenant.spec.quota_overrides}
    for key in hard:
        assert render._quota_key_problem(key) is None
    bindings = [doc for doc in documents if doc["kind"] == "RoleBinding"]
    subjects = bindings[0]["subjects"] if bindings else []
    assert [subject["name"] for subject in subjects] == [owner.name for owner in tenant.spec.owners]
    for subject in subjects:
        assert subject["name"] not in render.EVERYONE.get(subject["kind"], ())
    for doc in documents:  # labels stay label values whatever the spec held
        assert doc["metadata"]["labels"][names.LABEL_TENANT] == name
        for value in doc["metadata"]["labels"].values():
            assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value) and len(value) <= 63


@FUZZ
@given(template=any_text, name=tenant_names())
@example(template="../../etc/passwd", name="a")
@example(template="does-not-exist", name="a")
def test_any_template_name_renders_the_builtin_template_or_is_refused(template, name):
    plan = admitted(TenantPlan.from_body, plan_body(template=template))
    tenant = Tenant.from_body({"metadata": {"name": name}, "spec": {"plan": "fuzz", "tier": "isolated"}})
    if plan is None:
        assert not re.fullmatch(r"[a-z0-9][a-z0-9-]*", template) or len(template) > 63
        return

    try:
        documents = render.isolated_workloads(tenant, plan, SETTINGS)
    except render.TemplateError as error:
        assert repr(template) in str(error)
        assert template != "web"
        return
    assert template == "web"
    assert {doc["metadata"]["namespace"] for doc in documents} == {names.tenant_namespace(name)}


@FUZZ
@given(name=tenant_names(), host=st.sampled_from(["db.example", "10.0.0.5", "::1"]),
       port=st.integers(1, 65535), password=st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                                                     min_size=1, max_size=64))
def test_database_secret_holds_any_password_exactly_and_nowhere_but_its_fields(name, host, port, password):
    tenant = Tenant.from_body({"metadata": {"name": name}, "spec": {"plan": "fuzz"}})
    secret = render.database_secret(tenant, host, port, names.database_name(name), names.schema_name(name), password)

    values = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert values["password"] == password
    parsed = conninfo_to_dict(values["DATABASE_URL"])
    assert (parsed["password"], parsed["user"], parsed["dbname"], parsed["host"]) == (
        password, names.role_name(name), names.database_name(name), host)
    # Only the data depends on the password: metadata (labels, annotations) never carries it.
    other = render.database_secret(tenant, host, port, names.database_name(name), names.schema_name(name), "other")
    assert secret["metadata"] == other["metadata"]


# --- names ------------------------------------------------------------------------------------------------


@FUZZ
@given(tenant_names())
def test_sql_name_of_any_valid_tenant_fits_postgres_with_room_for_quarantine(name):
    sql_name = names.sql_name(name)
    assert len(sql_name.encode()) <= sql.MAX_IDENTIFIER_BYTES
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", sql_name)
    sql.ident(sql_name)
    for tier in postgres.TIERS:
        quarantined = tierdata.quarantine_name(postgres.placement(name, tier, "tenants"), at=4102444800)
        sql.ident(quarantined)  # 2100-01-01: still no silent truncation


# --- SQL --------------------------------------------------------------------------------------------------

identifiers = st.one_of(st.sampled_from([t for t in HOSTILE_TEXT if t and "\x00" not in t]),
                        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)).filter(
    lambda s: len(s.encode()) <= sql.MAX_IDENTIFIER_BYTES)
FIXED_ARGUMENTS = {"password": "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2lnbg==", "connection_limit": 20, "enabled": True,
                   "value": "30s"}  # a limit's value: checked by the CRD, sent as a literal


def builders() -> dict[str, tuple]:
    """Every statement builder sql.py defines: name -> (function, kind) with kind Composed or Query."""
    found = {}
    for attribute, function in vars(sql).items():
        if not inspect.isfunction(function) or function.__module__ != sql.__name__ or attribute.startswith("_"):
            continue
        returns = str(inspect.signature(function).return_annotation)
        if returns.endswith("Composed") or returns == "Query":
            found[attribute] = (function, "Query" if returns == "Query" else "Composed")
    return found


BUILDERS = builders()


def call(function, name: str):
    arguments = {}
    for parameter in inspect.signature(function).parameters.values():
        arguments[parameter.name] = FIXED_ARGUMENTS.get(parameter.name, name)
    return function(**arguments)


def test_every_builder_in_sql_py_is_fuzzed():
    assert {"create_login_role", "create_schema", "create_database", "drop_owned_by", "role_dependencies",
            "revoke_database_from_role", "databases_granted_to", "public_large_object_creators"} <= set(BUILDERS)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@settings(max_examples=150, deadline=None)
@given(name=identifiers)
def test_any_identifier_text_only_ever_fills_an_identifier_slot_or_a_parameter(builder, name):
    function, kind = BUILDERS[builder]
    built, plain = call(function, name), call(function, "n")
    if kind == "Query":
        # Names are bound parameters: the statement text is the same whatever the name.
        assert built.statement.as_string() == plain.statement.as_string()
        if any(p not in FIXED_ARGUMENTS for p in inspect.signature(function).parameters):
            assert name in built.params.values()
        return
    quoted = sql.ident(name).as_string()
    assert built.as_string().replace(quoted, '"n"') == plain.as_string()


@pytest.mark.parametrize("builder", sorted(name for name, (_, kind) in BUILDERS.items() if kind == "Composed"))
@settings(max_examples=60, deadline=None)
@given(name=st.one_of(st.text(min_size=64, max_size=80), st.text(min_size=1).map(lambda s: s + "\x00"),
                      st.just(""), st.just("é" * 32)))
def test_names_postgres_would_truncate_or_refuse_are_refused_before_any_sql(builder, name):
    function, _ = BUILDERS[builder]
    if not [p for p in inspect.signature(function).parameters if p not in FIXED_ARGUMENTS]:
        return
    assume(not name or "\x00" in name or len(name.encode()) > sql.MAX_IDENTIFIER_BYTES)
    with pytest.raises(ValueError):
        call(function, name)


@FUZZ
@given(theirs=st.one_of(st.none(), st.sampled_from(["-c search_path=evil", "-c role=tenant_x",
                                                     "-c statement_timeout=5s"])),
       tenant_database=st.booleans())
def test_admin_sessions_pin_their_settings_last_whatever_the_dsn_says(theirs, tenant_database):
    dsn = "host=db.example port=5432 dbname=tenant_x user=postgres password='p w'"
    if theirs:
        dsn += f" options='{theirs}'"

    pinned = conninfo_to_dict(connection.admin_session_dsn(dsn, tenant_database))

    settings_ = connection.TENANT_DATABASE_SESSION_SETTINGS if tenant_database else connection.ADMIN_SESSION_SETTINGS
    assert pinned["options"].endswith(" ".join(f"-c {k}={v}" for k, v in settings_.items()))
    assert pinned["options"].startswith(theirs or "-c search_path=pg_catalog")
    assert (pinned["password"], pinned["dbname"], pinned["user"]) == ("p w", "tenant_x", "postgres")
    if tenant_database:
        assert {"search_path", "role", "default_transaction_read_only"} <= set(settings_)
