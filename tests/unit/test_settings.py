"""Settings from TENANT_OPERATOR_* variables, command-line overrides on top, the password kept out of logs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tenant_operator.api.settings import ENV_PREFIX, Settings, from_environment

PASSWORD = "hunter2-Very-Secret"
URL = f"postgresql://postgres:{PASSWORD}@db.example:6543/postgres"


def environment(**variables: str) -> dict[str, str]:
    """TENANT_OPERATOR_<NAME> variables, with the admin URL unless given."""
    values = {"DATABASE_URL": URL, **variables}
    return {ENV_PREFIX + name: value for name, value in values.items() if value is not None}


def test_defaults_need_only_the_database_url():
    settings = from_environment(environment())

    assert settings.database_url == URL
    assert settings == Settings(database_url=URL)
    assert settings.shared_database == "tenants"
    assert settings.shared_namespace == "tenancy-shared"
    assert settings.template_dir is None
    assert settings.leader_election is False


def test_numbers_are_parsed_from_text():
    settings = from_environment(environment(WORKERS="8", SHARED_REPLICAS="3", DATABASE_PORT="5433",
                                            RESYNC_SECONDS="2.5", BACKOFF_BASE_SECONDS="0.25",
                                            LEASE_DURATION_SECONDS="30"))

    assert settings.workers == 8 and isinstance(settings.workers, int)
    assert settings.shared_replicas == 3
    assert settings.database_port == 5433
    assert settings.resync_seconds == 2.5
    assert settings.backoff_base_seconds == 0.25
    assert settings.lease_duration_seconds == 30.0 and isinstance(settings.lease_duration_seconds, float)


def test_paths_are_parsed_from_text():
    settings = from_environment(environment(TEMPLATE_DIR="/etc/tenant-templates", SNAPSHOT_DIR="/var/snapshots",
                                            PG_BIN_DIR="/usr/lib/postgresql/16/bin"))

    assert settings.template_dir == Path("/etc/tenant-templates")
    assert settings.snapshot_dir == Path("/var/snapshots")
    assert settings.pg_bin_dir == Path("/usr/lib/postgresql/16/bin")


def test_text_settings_are_taken_as_they_are():
    settings = from_environment(environment(SHARED_NAMESPACE="shared-apps", SHARED_IMAGE="registry.example/web:2",
                                            DATABASE_HOST="pg.db.svc"))

    assert (settings.shared_namespace, settings.shared_image, settings.database_host) == (
        "shared-apps", "registry.example/web:2", "pg.db.svc")


def test_no_setting_injects_faults():
    """Fault injection is the test harness's (tenant_operator.dev.faults), never a production setting."""
    settings = from_environment(environment(FAULT="corrupt:copy", TEST_FAULT="corrupt:copy"))

    assert not any("fault" in field.name for field in dataclasses.fields(settings))
    assert "fault" not in repr(settings)


@pytest.mark.parametrize("raw, expected", [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                           (" on ", True), ("false", False), ("0", False), ("No", False),
                                           ("off", False)])
def test_flags_accept_the_usual_spellings(raw, expected):
    assert from_environment(environment(LEADER_ELECTION=raw)).leader_election is expected


def test_a_flag_that_is_neither_true_nor_false_exits():
    with pytest.raises(SystemExit, match="maybe"):
        from_environment(environment(LEADER_ELECTION="maybe"))


@pytest.mark.parametrize("name, raw", [("WORKERS", "four"), ("RESYNC_SECONDS", "5m"), ("LEADER_ELECTION", "maybe")])
def test_a_bad_value_exits_naming_the_variable(name, raw):
    with pytest.raises(SystemExit, match=ENV_PREFIX + name):
        from_environment(environment(**{name: raw}))


def test_empty_variables_count_as_unset():
    settings = from_environment(environment(WORKERS="", TEMPLATE_DIR="", DATABASE_PORT=""))

    assert settings.workers == 4
    assert settings.template_dir is None
    assert settings.database_port is None


def test_unrelated_variables_are_ignored():
    settings = from_environment({**environment(), "TENANT_OPERATOR_NO_SUCH_SETTING": "x", "WORKERS": "99",
                                 "DATABASE_URL": "postgresql://other/db"})

    assert settings == Settings(database_url=URL)


def test_command_line_overrides_win_over_the_environment():
    settings = from_environment(environment(WORKERS="8", SHARED_NAMESPACE="from-env"),
                                workers=2, shared_namespace="from-flag", database_url="postgresql://flag/db")

    assert settings.workers == 2
    assert settings.shared_namespace == "from-flag"
    assert settings.database_url == "postgresql://flag/db"


def test_unset_command_line_flags_leave_the_environment_alone():
    settings = from_environment(environment(WORKERS="8"), workers=None, template_dir=None)

    assert settings.workers == 8


def test_database_url_from_the_command_line_alone_is_enough():
    assert from_environment({}, database_url=URL).database_url == URL


def test_missing_database_url_exits_naming_the_variable():
    with pytest.raises(SystemExit) as exit_info:
        from_environment({ENV_PREFIX + "WORKERS": "2"})

    assert "TENANT_OPERATOR_DATABASE_URL" in str(exit_info.value)


def test_process_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv(ENV_PREFIX + "DATABASE_URL", URL)
    monkeypatch.setenv(ENV_PREFIX + "WORKERS", "7")

    assert from_environment().workers == 7


@pytest.mark.parametrize("url", [URL, f"host=db.example port=6543 user=postgres password={PASSWORD} dbname=postgres"],
                         ids=["url", "key-value"])
def test_repr_never_shows_the_password(url):
    settings = from_environment(environment(DATABASE_URL=url))

    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert "database_url" not in repr(settings)


def test_settings_cannot_be_changed_once_made():
    settings = Settings(database_url=URL)

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 1  # type: ignore[misc]


# --- derived connection details ----------------------------------------------------------------------


def test_admin_dsn_points_at_the_shared_database_by_default():
    settings = Settings(database_url=URL, shared_database="tenants")

    assert conninfo_to_dict(settings.admin_dsn()) == {"host": "db.example", "port": "6543", "user": "postgres",
                                                      "password": PASSWORD, "dbname": "tenants"}
    assert conninfo_to_dict(settings.admin_dsn("tenant_acme"))["dbname"] == "tenant_acme"


def test_maintenance_dsn_keeps_the_database_named_in_the_url():
    assert conninfo_to_dict(Settings(database_url=URL).maintenance_dsn())["dbname"] == "postgres"


def test_tenant_endpoint_comes_from_the_admin_url():
    assert Settings(database_url=URL).tenant_endpoint() == ("db.example", 6543)


def test_tenant_endpoint_defaults_to_localhost_and_5432():
    assert Settings(database_url="dbname=postgres").tenant_endpoint() == ("localhost", 5432)


def test_tenant_endpoint_can_be_set_for_workloads_that_see_another_name():
    settings = from_environment(environment(DATABASE_HOST="postgres.databases.svc", DATABASE_PORT="5432"))

    assert settings.tenant_endpoint() == ("postgres.databases.svc", 5432)
