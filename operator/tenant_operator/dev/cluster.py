"""A real local control plane from real Kubernetes binaries, the way envtest does it.

etcd + kube-apiserver (secure serving, client-certificate auth, RBAC) +
kube-controller-manager (namespace deletion, GC, quota, deployments) +
kube-scheduler + kwok with one fake node, so a Deployment's pods are scheduled
and report Ready without a container runtime. Everything lives in one work
directory on free ports and stops with `stop()`.

KUBECONFIG pointing at an existing cluster (kind, a real one) skips all of it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tenant_operator.dev import certs
from tenant_operator.dev.ports import free_port
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

FAKE_NODE = "kwok-node-0"
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclasses.dataclass
class LocalCluster:
    kubeconfig: Path
    workdir: Path | None = None
    processes: list[tuple[str, subprocess.Popen]] = dataclasses.field(default_factory=list)
    assets: Path | None = None

    @property
    def owned(self) -> bool:
        """Whether we started it (and so must stop it)."""
        return bool(self.processes)

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def log(self, component: str) -> str:
        path = self.workdir / "logs" / f"{component}.log" if self.workdir else None
        return path.read_text(errors="replace") if path and path.exists() else ""


def find_assets() -> Path:
    """KUBE_ASSETS if set (envtest users), else our cached build (built on first use)."""
    if os.environ.get("KUBE_ASSETS"):
        return Path(os.environ["KUBE_ASSETS"])
    script = REPO_ROOT / "hack" / "build-assets.sh"
    if not script.exists():
        raise RuntimeError("no KUBE_ASSETS set and hack/build-assets.sh not found: run from a checkout")
    result = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def existing_cluster() -> LocalCluster | None:
    path = os.environ.get("KUBECONFIG")
    return LocalCluster(kubeconfig=Path(path)) if path else None


def start_cluster(workdir: Path | None = None, assets: Path | None = None) -> LocalCluster:
    """Start the control plane and wait until it serves, deletes namespaces and runs pods."""
    assets = assets or find_assets()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="tenant-operator-cluster-"))
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    pki = certs.make_pki(workdir / "pki")
    cluster = LocalCluster(kubeconfig=workdir / "admin.kubeconfig", workdir=workdir, assets=assets)
    try:
        etcd_url = _start_etcd(cluster, assets, workdir)
        server = _start_apiserver(cluster, assets, workdir, pki, etcd_url)
        for name, client in (("admin", pki.admin), ("controller-manager", pki.controller_manager),
                             ("scheduler", pki.scheduler)):
            _write_yaml(workdir / f"{name}.kubeconfig", certs.kubeconfig(server, pki.ca_cert, client, name))
        _wait_apiserver_ready(cluster)
        _start(cluster, "kube-controller-manager", [
            str(assets / "kube-controller-manager"),
            f"--kubeconfig={workdir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={workdir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={workdir / 'controller-manager.kubeconfig'}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--concurrent-namespace-syncs=5",
        ])
        _start(cluster, "kube-scheduler", [
            str(assets / "kube-scheduler"),
            f"--kubeconfig={workdir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={workdir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={workdir / 'scheduler.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
        ])
        _start(cluster, "kwok", [
            str(assets / "kwok"),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--config={assets / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{free_port()}",
            "--node-lease-duration-seconds=40",
        ])
        _wait_workloads_run(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start(cluster: LocalCluster, name: str, argv: list[str]) -> subprocess.Popen:
    assert cluster.workdir is not None, "a cluster this process starts has a working directory"
    log = open(cluster.workdir / "logs" / f"{name}.log", "wb")
    # A process group of its own: Ctrl-C on `make run` reaches us, and we stop them in order.
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    log.close()
    cluster.processes.append((name, process))
    return process


def _start_etcd(cluster: LocalCluster, assets: Path, workdir: Path) -> str:
    client_port, peer_port = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    process = _start(cluster, "etcd", [
        str(assets / "etcd"),
        "--name=local",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=local={peer_url}",
        "--unsafe-no-fsync=true",  # a throwaway cluster: speed over durability
        "--quota-backend-bytes=4294967296",
    ])
    import urllib.request

    def healthy() -> bool:
        _check_alive(cluster, "etcd", process)
        with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
            return b'"health":"true"' in response.read()

    wait_for(healthy, timeout=60, what="etcd to be healthy")
    return client_url


def _start_apiserver(cluster: LocalCluster, assets: Path, workdir: Path, pki: certs.ClusterPKI,
                     etcd_url: str) -> str:
    port = free_port()
    _start(cluster, "kube-apiserver", [
        str(assets / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving.cert}",
        f"--tls-private-key-file={pki.serving.key}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--endpoint-reconciler-type=none",
        f"--cert-dir={workdir / 'apiserver-certs'}",
    ])
    return f"https://127.0.0.1:{port}"


def _check_alive(cluster: LocalCluster, name: str, process: subprocess.Popen) -> None:
    if process.poll() is not None:
        tail = "\n".join(cluster.log(name).splitlines()[-20:])
        raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")


def _api(cluster: LocalCluster):
    from kubernetes import client, config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig)), client


def _wait_apiserver_ready(cluster: LocalCluster) -> None:
    api_client, client = _api(cluster)
    apiserver = dict(cluster.processes)["kube-apiserver"]

    def ready() -> bool:
        _check_alive(cluster, "kube-apiserver", apiserver)
        return Kube(api_client).raw_request("GET", "/readyz", timeout=5) == b"ok"

    wait_for(ready, timeout=120, what="kube-apiserver /readyz")
    api_client.close()


def _wait_workloads_run(cluster: LocalCluster) -> None:
    """Prove the controllers work: a namespace can be deleted, a Deployment becomes Available."""
    api_client, client = _api(cluster)
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    # As a real node, it has ephemeral storage to offer: pods that request some (the chart's) fit.
    room = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti"}
    core.create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=FAKE_NODE, annotations={"kwok.x-k8s.io/node": "fake"},
                                     labels={"type": "kwok", "kubernetes.io/hostname": FAKE_NODE}),
        status=client.V1NodeStatus(allocatable=room, capacity=room),
    ))
    probe = "readiness-probe"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=probe)))
    wait_for(lambda: core.read_namespaced_service_account("default", probe), timeout=60,
             what="the default ServiceAccount (controller-manager running)")
    labels = {"app": probe}
    apps.create_namespaced_deployment(probe, client.V1Deployment(
        metadata=client.V1ObjectMeta(name=probe),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="probe", image="probe:1")]),
            ),
        ),
    ))

    def available() -> bool:
        status = apps.read_namespaced_deployment(probe, probe).status
        return any(c.type == "Available" and c.status == "True" for c in status.conditions or [])

    wait_for(available, timeout=120, what="a Deployment to become Available (scheduler + kwok)")
    core.delete_namespace(probe)

    def gone() -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            core.read_namespace(probe)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=120, what="the probe namespace to be deleted (namespace controller)")
    api_client.close()


def _write_yaml(path: Path, document: dict) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def kubectl(cluster: LocalCluster) -> list[str]:
    """The kubectl to use against this cluster: ours (no version skew), else the machine's."""
    binary = cluster.assets / "kubectl" if cluster.assets else None
    if binary is None or not binary.exists():
        binary = Path(shutil.which("kubectl") or "kubectl")
    return [str(binary), f"--kubeconfig={cluster.kubeconfig}"]


def main() -> None:
    """`python -m tenant_operator.dev.cluster`: start, print the kubeconfig path, run until Ctrl-C."""
    started = time.monotonic()
    cluster = start_cluster()
    print(f"control plane ready in {time.monotonic() - started:.1f}s; export KUBECONFIG={cluster.kubeconfig}",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
