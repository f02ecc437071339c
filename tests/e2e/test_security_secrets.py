"""Tenant passwords live in the tenant's Secret and nowhere else; rotation changes role and Secret together.

The passwords of every tenant in the cluster (and the ones rotation replaced, and the
PostgreSQL admin's) are looked for,
as typed, base64-encoded (as Secret data holds them) and URL-encoded, in everything the
operator writes for people: its log, Events in every namespace, every Tenant's status,
the metrics, and the PostgreSQL server's log (the operator sends SCRAM verifiers, never a
password, so that a server logging DDL or failing statements logs no password either).
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote

import psycopg
import pytest

from tenant_operator.api import names
from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.dev.wait import wait_for

from .conftest import RESYNC_SECONDS, Tenants

SECRET = KINDS[("v1", "Secret")]


def secret_of(kube, tenant: str) -> dict:
    return kube.read(ObjectRef(SECRET, names.DB_SECRET_NAME, names.tenant_namespace(tenant)))


def decoded(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def rotate(kube, tenant: str, value: str) -> None:
    annotations = {names.ROTATE_PASSWORD_ANNOTATION: value}
    kube.merge_patch(ObjectRef(TENANT, tenant), {"metadata": {"annotations": annotations}})


def logs_in(values: dict[str, str], password: str | None = None) -> bool:
    dsn = psycopg.conninfo.make_conninfo(host=values["host"], port=values["port"], dbname=values["database"],
                                         user=values["user"], password=password or values["password"],
                                         connect_timeout=5)
    try:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT current_user").fetchone()[0] == values["user"]
    except psycopg.OperationalError as error:
        assert "password authentication failed" in str(error), error
        return False


def settle() -> None:
    """Let the operator reconcile every tenant a few more times (resync every RESYNC_SECONDS)."""
    time.sleep(RESYNC_SECONDS * 3 + 1)


@pytest.fixture(scope="module")
def rotated(kube, cluster, operator, plans):
    """A shared and an isolated tenant, each rotated once: {tenant: [old password, ...]}."""
    helper = Tenants(kube, cluster)
    shared, isolated = helper.unique("pw-shared"), helper.unique("pw-iso")
    helper.create(shared, plan="starter")
    helper.create(isolated, plan="professional", tier="isolated")
    try:
        for name in (shared, isolated):
            helper.wait_ready(name, timeout=120)
        replaced = {}
        for name in (shared, isolated):
            before = decoded(secret_of(kube, name))["password"]
            rotate(kube, name, "scan")
            wait_for(lambda: decoded(secret_of(kube, name))["password"] != before, timeout=30,
                     what=f"tenant {name}'s password to be rotated")
            replaced[name] = [before]
        yield replaced
    finally:
        for name in helper.created:
            helper.delete(name)
        for name in helper.created:
            helper.wait_gone(name, timeout=120)


def every_password(kube, rotated: dict[str, list[str]], postgres) -> list[str]:
    """The passwords in every tenant Secret of the cluster, the ones rotation replaced, and the admin's."""
    found = [postgres.password]
    for tenant in kube.list(TENANT):
        secret = secret_of(kube, tenant["metadata"]["name"])
        if secret and "password" in secret.get("data", {}):
            found.append(decoded(secret)["password"])
    found += [password for old in rotated.values() for password in old]
    assert len(found) >= 5
    return found


def forms(password: str) -> list[str]:
    """How a password could show up: as typed, as Secret data, in a URL, in a JSON string."""
    return sorted({password, base64.b64encode(password.encode()).decode(), quote(password, safe=""),
                   json.dumps(password)[1:-1]})


def assert_no_password(text: str, passwords: list[str], where: str) -> None:
    for password in passwords:
        for form in forms(password):
            assert form not in text, f"a tenant password appears in {where}"


def test_passwords_never_appear_in_the_operator_log(kube, operator, rotated, postgres):
    settle()
    text = operator.log_path.read_text(errors="replace")
    assert "tenant" in text  # the log is the operator's, and it talks about tenants

    assert_no_password(text, every_password(kube, rotated, postgres), "the operator log")


def test_passwords_never_appear_in_events(kube, operator, rotated, postgres):
    def all_events() -> list[dict]:
        return kube.request("GET", "/api/v1/events")["items"]

    # Events are posted in the background, a moment after the rotation they tell of.
    wait_for(lambda: any(event["reason"] == "PasswordRotated" and event["involvedObject"].get("kind") == "Tenant"
                         for event in all_events()), timeout=30, what="the PasswordRotated event")

    assert_no_password(json.dumps(all_events()), every_password(kube, rotated, postgres), "an Event")


def test_passwords_never_appear_in_tenants_or_their_status(kube, operator, rotated, postgres):
    tenants = kube.list(TENANT)
    for name in rotated:
        status = next(t for t in tenants if t["metadata"]["name"] == name)["status"]
        # Where the credentials are, never what they are.
        assert set(status["database"]) == {"server", "host", "port", "database", "schema", "secretName"}

    assert_no_password(json.dumps(tenants), every_password(kube, rotated, postgres), "a Tenant")


def test_passwords_never_appear_in_the_metrics(kube, operator, rotated, postgres):
    text = operator.metrics()
    assert "tenant_operator_reconciles_total" in text

    assert_no_password(text, every_password(kube, rotated, postgres), "the metrics")


def test_passwords_never_reach_the_postgresql_server_log(kube, postgres, operator, rotated):
    log = (postgres.data_dir.parent / "server.log").read_text(errors="replace")

    assert_no_password(log, every_password(kube, rotated, postgres), "the PostgreSQL server log")


def test_the_secret_is_where_the_password_is_and_it_logs_in(kube, operator, rotated):
    # The allowed side: the Secret itself holds the password, in `password` and in the URL.
    for tenant in rotated:
        values = decoded(secret_of(kube, tenant))
        assert values["password"] in values["DATABASE_URL"]
        assert logs_in(values)


@pytest.mark.parametrize("tier", ["shared", "isolated"])
def test_rotation_changes_role_and_secret_together_once_per_request(tenants, kube, operator, tier):
    name = tenants.unique(f"rotate-{tier[:3]}")
    tenants.create(name, plan="professional", tier=tier)
    tenants.wait_ready(name, timeout=120)
    first = decoded(secret_of(kube, name))
    assert logs_in(first)

    rotate(kube, name, "1")
    wait_for(lambda: decoded(secret_of(kube, name))["password"] != first["password"], timeout=30,
             what="the Secret to get a new password")
    second_secret = secret_of(kube, name)
    second = decoded(second_secret)
    assert second_secret["metadata"]["annotations"][names.ROTATE_PASSWORD_ANNOTATION] == "1"
    assert logs_in(second)
    assert second["password"] in second["DATABASE_URL"]
    with psycopg.connect(second["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (second["user"],)
    assert not logs_in(first, first["password"])
    # Nothing else in the Secret changed.
    assert {k: v for k, v in first.items() if k not in ("password", "DATABASE_URL")} == \
           {k: v for k, v in second.items() if k not in ("password", "DATABASE_URL")}

    # The same request again (the annotation written anew) is already answered: nothing changes.
    rotate(kube, name, "1")
    kube.merge_patch(ObjectRef(TENANT, name), {"metadata": {"labels": {"touched": "yes"}}})  # a fresh event
    settle()
    again = secret_of(kube, name)
    assert again["metadata"]["resourceVersion"] == second_secret["metadata"]["resourceVersion"]
    assert logs_in(second)

    # A new value is a new request.
    rotate(kube, name, "2")
    wait_for(lambda: decoded(secret_of(kube, name))["password"] != second["password"], timeout=30,
             what="the Secret to get a second new password")
    third = decoded(secret_of(kube, name))
    assert logs_in(third)
    assert not logs_in(second, second["password"])
    assert not logs_in(first, first["password"])
    assert tenants.condition(name, "Ready")["status"] == "True"


def test_rotation_requested_before_the_first_reconcile_makes_one_password(tenants, kube, operator):
    # Annotated before its first reconcile: the tenant is provisioned once, with one password,
    # and the Secret records the request it already answers (no second rotation follows).
    name = tenants.unique("rotate-new")
    body = {"apiVersion": names.API_VERSION, "kind": "Tenant",
            "metadata": {"name": name, "annotations": {names.ROTATE_PASSWORD_ANNOTATION: "1"}},
            "spec": {"plan": "starter"}}
    tenants.created.append(name)
    kube.create(TENANT.collection_path(), body)
    tenants.wait_ready(name)
    secret = secret_of(kube, name)
    settle()

    assert secret_of(kube, name)["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert logs_in(decoded(secret))
