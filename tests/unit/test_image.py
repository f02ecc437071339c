"""The image's supply chain: a hashed lock equal to the tested versions, OCI labels, a base image pinnable by digest."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tenant_operator import __version__

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` requirement, names normalised as pip does."""
    return {re.sub(r"[-_.]+", "-", name).lower(): version
            for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)}


def lock_entries() -> list[str]:
    """requirements-image.txt, one requirement per entry with its hash options."""
    text = (ROOT / "requirements-image.txt").read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_lock_pins_exactly_the_versions_the_tests_run():
    locked = pins((ROOT / "requirements-image.txt").read_text())
    tested = pins((ROOT / "constraints.txt").read_text())

    assert {name: version for name, version in locked.items() if tested.get(name) != version} == {}


def test_the_lock_holds_every_runtime_dependency_and_the_build_backend():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    locked = pins((ROOT / "requirements-image.txt").read_text())

    for requirement in [*project["project"]["dependencies"], *project["build-system"]["requires"]]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", requirement).groups()
        assert locked.get(re.sub(r"[-_.]+", "-", name).lower()) == version, requirement


def test_every_locked_requirement_carries_hashes():
    entries = lock_entries()

    assert entries
    assert [entry.split()[0] for entry in entries if not re.search(r"--hash=sha256:[0-9a-f]{64}", entry)] == []


def test_the_image_installs_from_the_lock_alone():
    assert "COPY requirements-image.txt" in DOCKERFILE
    assert "pip install --require-hashes --no-deps -r requirements-image.txt" in DOCKERFILE
    # The package itself: the lock's setuptools, nothing fetched.
    assert "pip install --no-deps --no-build-isolation --no-index ." in DOCKERFILE
    assert "!requirements-image.txt" in (ROOT / ".dockerignore").read_text()


def test_the_image_carries_oci_labels_for_source_version_revision_and_licence():
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', DOCKERFILE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert labels["org.opencontainers.image.source"] == project["urls"]["Source"]
    assert labels["org.opencontainers.image.licenses"] == project["license"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert re.search(r"^ARG VERSION=(\S+)$", DOCKERFILE, re.M)[1] == __version__


def test_the_base_image_is_a_tag_optionally_pinned_by_digest():
    base = re.search(r"^ARG BASE=(\S+)$", DOCKERFILE, re.M)[1]

    assert re.fullmatch(r"python:3\.11-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base)


FAKE_CRANE = """#!/bin/sh
[ "$1" = digest ] && [ "$2" = "python:3.11-slim-bookworm" ] && echo "sha256:$(printf 'a%.0s' $(seq 1 64))"
"""


@pytest.mark.parametrize("already", ["python:3.11-slim-bookworm", "python:3.11-slim-bookworm@sha256:" + "b" * 64])
def test_pinning_the_base_writes_tag_and_the_registrys_digest(tmp_path, already):
    (tmp_path / "crane").write_text(FAKE_CRANE)
    (tmp_path / "crane").chmod(0o755)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.replace("ARG BASE=python:3.11-slim-bookworm", f"ARG BASE={already}"))

    subprocess.run(["bash", str(ROOT / "hack" / "pin-base-image.sh")], check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "DOCKERFILE": str(dockerfile)})

    assert re.search(r"^ARG BASE=(\S+)$", dockerfile.read_text(), re.M)[1] == \
        "python:3.11-slim-bookworm@sha256:" + "a" * 64
    assert dockerfile.read_text().count("\n") == DOCKERFILE.count("\n")


def test_pinning_refuses_an_answer_that_is_no_digest(tmp_path):
    (tmp_path / "crane").write_text("#!/bin/sh\necho 'MANIFEST_UNKNOWN'\n")
    (tmp_path / "crane").chmod(0o755)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)

    result = subprocess.run(["bash", str(ROOT / "hack" / "pin-base-image.sh")], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
                                 "DOCKERFILE": str(dockerfile)})

    assert result.returncode != 0 and "not a digest" in result.stderr
    assert dockerfile.read_text() == DOCKERFILE
