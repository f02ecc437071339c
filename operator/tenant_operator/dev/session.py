"""`tenant-operator dev`: the embedded default, from nothing to `kubectl get tenants`.

Starts the local control plane (or uses KUBECONFIG) and a throwaway PostgreSQL
(or uses TENANT_OPERATOR_DATABASE_URL), installs the CRDs, runs the operator as
a child process, applies the samples and waits until every sample tenant is
Ready. The tests use the same pieces.

However it ends (the samples Ready with --once, Ctrl-C, SIGTERM, SIGHUP, an
error), it stops every process it started and removes its temp dirs: the
control plane's processes run in sessions of their own (a Ctrl-C in the
terminal reaches only `dev`, which stops them in order) and PostgreSQL detaches
from it, so nothing else would stop them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tenant_operator.api.settings import ENV_PREFIX
from tenant_operator.dev.cluster import (
    REPO_ROOT,
    LocalCluster,
    existing_cluster,
    kubectl,
    start_cluster,
)
from tenant_operator.dev.ports import free_port
from tenant_operator.dev.postgres import start_postgres, stop_postgres_in
from tenant_operator.dev.processes import end_processes

CRDS_DIR = REPO_ROOT / "crds"
OWNER_ROLE = REPO_ROOT / "rbac" / "tenant-owner-clusterrole.yaml"


def run_kubectl(cluster: LocalCluster, *args: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run([*kubectl(cluster), *args], capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def install_crds(cluster: LocalCluster) -> None:
    run_kubectl(cluster, "apply", "--server-side", "--field-manager=tenant-operator-install", "-f", str(CRDS_DIR))
    run_kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS_DIR))
    run_kubectl(cluster, "apply", "--server-side", "--field-manager=tenant-operator-install", "-f", str(OWNER_ROLE))


class OperatorProcess:
    """The operator as a child process, exactly as `tenant-operator run` runs in a cluster."""

    def __init__(self, cluster: LocalCluster, database_url: str, log_path: Path, kubeconfig: Path | None = None,
                 run_args: tuple[str, ...] = ("--standalone",), fault: str | None = None,
                 fault_dir: Path | None = None, extra_env: dict[str, str] | None = None, **settings: str):
        """`fault` (see tenant_operator.dev.faults) runs the operator through the test harness's entry point."""
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = log_path
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or cluster.kubeconfig),
            ENV_PREFIX + "DATABASE_URL": database_url,
            ENV_PREFIX + "METRICS_PORT": str(self.metrics_port),
            **{ENV_PREFIX + key.upper(): str(value) for key, value in settings.items()},
            **(extra_env or {}),
            # Always the port this object reports: a chart's value (8081) would collide between processes.
            ENV_PREFIX + "HEALTH_PORT": str(self.health_port),
        }
        module = "tenant_operator"
        self.fault_dir = Path(fault_dir or log_path.parent)
        if fault:
            module = "tenant_operator.dev.faults"
            self.fault_dir.mkdir(parents=True, exist_ok=True)
            env["TENANT_OPERATOR_TEST_FAULT"] = fault
            env["TENANT_OPERATOR_TEST_FAULT_DIR"] = str(self.fault_dir)
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "run", *run_args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def paused_in(self) -> str | None:
        """The step a `pause:<step>` fault holds the operator in, once it got there."""
        marker = self.fault_dir / "paused"
        return marker.read_text() if marker.exists() else None

    def resume(self) -> None:
        """Let a `pause:<step>` fault go on (once the process runs)."""
        (self.fault_dir / "resume").write_text("go")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._log.close()

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def health(self, path: str) -> tuple[int, str]:
        """The status and body of a health endpoint (/healthz, /readyz)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def _wait_tenants_ready(cluster: LocalCluster, operator: OperatorProcess, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if operator.process.poll() is not None:
            return False
        result = subprocess.run([*kubectl(cluster), "wait", "--for=condition=Ready", "tenants", "--all",
                                 "--timeout=10s"], capture_output=True, text=True)
        if result.returncode == 0:
            return True
    return False


class Stopped(Exception):
    """SIGTERM or SIGHUP: `dev` stops as it does on Ctrl-C (KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclasses.dataclass
class DevSession:
    """Everything `dev` starts, recorded before it starts, so that all of it goes however `dev` ends.

    The temp dirs are made here and handed to the starters: a signal that arrives while the control
    plane or PostgreSQL starts finds them already known.
    """

    cluster_dir: Path | None = None
    postgres_dir: Path | None = None
    cluster: LocalCluster | None = None
    operator: OperatorProcess | None = None
    serving: bool = False
    """Every sample Ready and `dev` waiting to be stopped: being stopped now is its normal end."""

    def stop(self) -> None:
        """Stop the operator, the control plane and PostgreSQL; remove their temp dirs (signals ignored)."""
        if self.operator:
            self.operator.stop()
        if self.cluster and self.cluster.owned:
            self.cluster.stop()
        if self.postgres_dir:
            stop_postgres_in(self.postgres_dir)
        # A process started in the instant the signal came, before it was recorded, is still ours.
        own = [str(path) for path in (self.cluster_dir, self.postgres_dir) if path]
        end_processes(lambda pid, ppid, command: ppid == os.getpid() or any(path in command for path in own))
        for path in (self.cluster_dir, self.postgres_dir):
            if path:
                shutil.rmtree(path, ignore_errors=True)


def run_dev(once: bool, samples: Path) -> int:
    """`tenant-operator dev`. Ctrl-C, SIGTERM and SIGHUP stop everything it started and remove its temp dirs."""
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in (signal.SIGTERM, signal.SIGHUP)}
    session = DevSession()
    try:
        return _run_dev(session, once, samples)
    except (KeyboardInterrupt, Stopped) as stop:
        signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
        print(f"\n{signal.Signals(signum).name}: stopping everything `dev` started", file=sys.stderr, flush=True)
        return 0 if session.serving else 128 + signum
    finally:
        for signum in STOP_SIGNALS:  # a second Ctrl-C must not leave half of it running
            signal.signal(signum, signal.SIG_IGN)
        session.stop()
        for signum in STOP_SIGNALS:
            signal.signal(signum, previous.get(signum, signal.default_int_handler))


def _run_dev(session: DevSession, once: bool, samples: Path) -> int:
    started = time.monotonic()
    cluster = existing_cluster()
    if cluster is None:
        print("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)...",
              flush=True)
        session.cluster_dir = Path(tempfile.mkdtemp(prefix="tenant-operator-cluster-"))
        cluster = session.cluster = start_cluster(workdir=session.cluster_dir)
    database_url = os.environ.get(ENV_PREFIX + "DATABASE_URL")
    if not database_url:
        print("starting a throwaway PostgreSQL...", flush=True)
        session.postgres_dir = Path(tempfile.mkdtemp(prefix="tenant-operator-pg-"))
        database_url = start_postgres(session.postgres_dir).url()
    workdir = cluster.workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    install_crds(cluster)
    operator = session.operator = OperatorProcess(cluster, database_url, workdir / "operator.log")
    plans = sorted(samples.glob("*plan*.yaml"))
    tenants = sorted(set(samples.glob("*.yaml")) - set(plans))
    for path in [*plans, *tenants]:
        run_kubectl(cluster, "apply", "-f", str(path))
    ready = _wait_tenants_ready(cluster, operator)
    print(run_kubectl(cluster, "get", "tenants"), flush=True)
    if not ready:
        print(f"not every tenant became Ready; operator log: {operator.log_path}", file=sys.stderr)
        return 1
    print(f"all sample tenants Ready in {time.monotonic() - started:.0f}s", flush=True)
    if once:
        return 0
    print(f"\nexport KUBECONFIG={cluster.kubeconfig}\noperator log: {operator.log_path}\n"
          "Ctrl-C (or SIGTERM, SIGHUP) stops everything.", flush=True)
    session.serving = True
    code = operator.process.wait()
    print(f"the operator exited with {code}; log: {operator.log_path}", file=sys.stderr)
    return 1
