"""One version, reported everywhere a user or a tool looks for it, and equal in all of them."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, generate_latest

from tenant_operator import __version__
from tenant_operator.infra import metrics  # noqa: F401 - registers tenant_operator_build_info

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_a_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_version_flag_prints_it_and_exits_zero():
    result = subprocess.run([sys.executable, "-m", "tenant_operator", "--version"], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tenant-operator {__version__}"


def test_the_installed_package_has_it():
    assert importlib.metadata.version("tenant-operator") == __version__


def test_the_charts_app_version_is_it():
    chart = yaml.safe_load((ROOT / "charts" / "tenant-operator" / "Chart.yaml").read_text())

    assert chart["appVersion"] == __version__


def test_the_image_label_is_it():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert re.search(r"^ARG VERSION=(\S+)$", dockerfile, re.M)[1] == __version__
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile


def test_the_changelogs_top_entry_is_it():
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)

    assert headings and headings[0] == __version__


def test_the_build_info_metric_carries_it():
    exposition = generate_latest(REGISTRY).decode()

    (line,) = [line for line in exposition.splitlines() if line.startswith("tenant_operator_build_info{")]
    assert f'version="{__version__}"' in line and line.endswith(" 1.0")
