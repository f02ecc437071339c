"""The command line agrees with the settings and the docs: a flag per setting, help on every flag, CRDs on stdout."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tenant_operator import cli
from tenant_operator.api.crds import crd_documents
from tenant_operator.api.settings import ENV_PREFIX, FIELDS, Settings, from_environment

ROOT = Path(__file__).resolve().parents[2]
URL = "postgresql://admin:secret@db.example:5432/postgres"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def flags(command: str) -> dict[str, argparse.Action]:
    return {option: action for action in subcommands()[command]._actions for option in action.option_strings}


def settings_from_flags(*argv: str) -> Settings:
    """What `tenant-operator run ARGV` runs with, given only the database URL in its environment."""
    environ = {ENV_PREFIX + "DATABASE_URL": URL}
    cli.export_settings(cli.parser().parse_args(["run", *argv]), environ)
    return from_environment(environ)


def test_every_setting_is_a_run_flag_of_the_same_name():
    run = flags("run")

    missing = [name for name in FIELDS if "--" + name.replace("_", "-") not in run]
    assert missing == []
    assert {"--database-host", "--database-port", "--quarantine-retention-seconds"} <= set(run)


def test_every_run_flag_is_a_setting_or_a_kopf_option():
    settings = {"--" + name.replace("_", "-") for name in FIELDS}
    own = set(flags("run")) - settings - {"-h", "--help", "--no-leader-election"}

    assert own == {"--standalone", "--peering", "--priority", "--verbose"}


def test_every_flag_has_help_text():
    commands = {"": cli.parser(), **subcommands()}
    bare = [f"{name} {action.option_strings or action.dest}" for name, command in commands.items()
            for action in command._actions if not action.help or action.help == argparse.SUPPRESS]

    assert bare == []


def test_a_flags_help_is_its_settings_and_names_its_variable():
    help_text = subprocess.run([sys.executable, "-m", "tenant_operator", "run", "--help"], capture_output=True,
                               text=True, check=True, env={"COLUMNS": "1000", "PATH": ""}).stdout

    entry = " ".join(help_text.split("\nsettings:")[1].split("--quarantine-retention-seconds")[1].split("--backoff-base-seconds")[0].split())
    assert "source schema or database of a tier migration" in entry
    assert f"{ENV_PREFIX}QUARANTINE_RETENTION_SECONDS" in entry and "default 604800.0" in entry


def test_flags_become_the_settings_the_operator_runs_with():
    settings = settings_from_flags("--database-host", "pg.internal", "--database-port", "6432",
                                   "--quarantine-retention-seconds", "60", "--workers", "8",
                                   "--template-dir", "/etc/templates", "--leader-election")

    assert settings.tenant_endpoint() == ("pg.internal", 6432)
    assert settings.quarantine_retention_seconds == 60.0
    assert settings.workers == 8
    assert settings.template_dir == Path("/etc/templates")
    assert settings.leader_election is True
    assert settings_from_flags("--no-leader-election").leader_election is False


def test_a_flag_not_given_leaves_the_environment_alone():
    environ = {ENV_PREFIX + "DATABASE_URL": URL, ENV_PREFIX + "WORKERS": "16", ENV_PREFIX + "LEADER_ELECTION": "true"}
    cli.export_settings(cli.parser().parse_args(["run"]), environ)

    assert from_environment(environ).workers == 16
    assert from_environment(environ).leader_election is True


def test_a_bad_flag_value_is_refused_with_its_name(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.parser().parse_args(["run", "--database-port", "five"])

    assert exit.value.code == 2
    assert "--database-port" in capsys.readouterr().err


def test_every_setting_the_readme_lists_is_a_flag():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("Settings (environment `TENANT_OPERATOR_<NAME>`")[1].split("\n\n")[1]
    listed = {name for row in table.splitlines()[2:] for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}
    run = flags("run")

    assert {"DATABASE_HOST", "DATABASE_PORT", "QUARANTINE_RETENTION_SECONDS"} <= listed
    assert [name for name in sorted(listed) if "--" + name.lower().replace("_", "-") not in run] == []


def test_crds_are_printed_to_stdout_and_nothing_is_written(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tenant_operator", "crds"], cwd=tmp_path, capture_output=True,
                            text=True, check=True)

    printed = [document for document in yaml.safe_load_all(result.stdout) if document]
    assert printed == list(crd_documents().values())
    assert list(tmp_path.iterdir()) == []


def test_crds_with_output_writes_the_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tenant_operator", "crds", "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, check=True)

    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(crd_documents())
    assert result.stdout.split() == [str(tmp_path / "out" / name) for name in crd_documents()]
