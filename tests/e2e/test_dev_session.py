"""`tenant-operator dev` stops everything it started, and removes its temp dirs, however it is stopped.

It runs as a user runs it, a process of its own with a control plane and a PostgreSQL of its
own, in a TMPDIR of the test's: every process it started either is its child or runs from
there (etcd's data, the API server's certificates, PostgreSQL's data directory).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tenant_operator.dev.processes import processes
from tenant_operator.dev.wait import wait_for

PLAN = """apiVersion: tenancy.dev/v1alpha1
kind: TenantPlan
metadata:
  name: free
spec:
  tiers: [shared]
"""
TENANT = """apiVersion: tenancy.dev/v1alpha1
kind: Tenant
metadata:
  name: acme
spec:
  plan: free
"""
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@pytest.fixture
def tmpdir_for_dev():
    """A TMPDIR that PostgreSQL's unprivileged user may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tenant-operator-dev-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def started_by(dev: subprocess.Popen, tmpdir: Path) -> dict[int, str]:
    """The live processes `dev` started: its children, and whatever runs from its TMPDIR."""
    return {pid: command for pid, (ppid, command) in processes().items()
            if ppid == dev.pid or str(tmpdir) in command}


def start_dev(tmp_path: Path, tmpdir: Path) -> tuple[subprocess.Popen, Path]:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "plans.yaml").write_text(PLAN)
    (samples / "tenant-acme.yaml").write_text(TENANT)
    output = tmp_path / "dev.out"
    env = {key: value for key, value in os.environ.items()
           if key not in ("KUBECONFIG", "TENANT_OPERATOR_DATABASE_URL")}
    env["TMPDIR"] = str(tmpdir)
    with open(output, "wb") as out:
        dev = subprocess.Popen([sys.executable, "-m", "tenant_operator", "dev", "--samples", str(samples)],
                               env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return dev, output


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_while_serving_stops_every_child_and_removes_the_temp_dirs(tmp_path, tmpdir_for_dev, stop):
    dev, output = start_dev(tmp_path, tmpdir_for_dev)
    try:
        wait_for(lambda: "stops everything" in output.read_text() or dev.poll() is not None, timeout=240,
                 what="dev to have its sample tenant Ready")
        assert dev.poll() is None, output.read_text()
        running = started_by(dev, tmpdir_for_dev)
        commands = " ".join(running.values())
        assert all(name in commands for name in (*CONTROL_PLANE, "postgres", "tenant_operator run")), commands
        assert sorted(p.name.split("-")[2] for p in tmpdir_for_dev.iterdir() if p.name.startswith("tenant-operator-")
                      ) == ["cluster", "pg"]

        dev.send_signal(getattr(signal, stop))
        code = dev.wait(timeout=120)
    finally:
        if dev.poll() is None:
            dev.kill()

    assert code == 0, output.read_text()  # stopping it was its normal end
    assert f"{stop}: stopping everything" in output.read_text()
    wait_for(lambda: not set(running) & set(processes()), timeout=15, what="every process dev started to be gone")
    assert list(tmpdir_for_dev.iterdir()) == []


def test_sighup_while_the_control_plane_starts_leaves_nothing_behind(tmp_path, tmpdir_for_dev):
    dev, output = start_dev(tmp_path, tmpdir_for_dev)
    try:
        wait_for(lambda: "kube-apiserver" in " ".join(started_by(dev, tmpdir_for_dev).values()) or dev.poll(),
                 timeout=120, what="dev to be starting the API server")
        assert dev.poll() is None, output.read_text()
        running = started_by(dev, tmpdir_for_dev)

        dev.send_signal(signal.SIGHUP)
        code = dev.wait(timeout=120)
    finally:
        if dev.poll() is None:
            dev.kill()

    assert code == 128 + signal.SIGHUP, output.read_text()  # stopped before it got where it was going
    wait_for(lambda: not set(running) & set(processes()) and not [
        command for command in started_by(dev, tmpdir_for_dev).values() if str(tmpdir_for_dev) in command],
        timeout=15, what="every process dev started to be gone")
    assert list(tmpdir_for_dev.iterdir()) == []
