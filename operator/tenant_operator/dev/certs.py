"""Certificates and keys of the local control plane, made with the openssl CLI.

One CA signs the API server's serving certificate and a client certificate per
identity. The API server is run with RBAC, so each component gets the identity
the bootstrap RBAC policy expects (system:kube-controller-manager, ...) and the
admin gets system:masters, as kubeadm sets a cluster up.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclasses.dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class ClusterPKI:
    ca_cert: Path
    ca_key: Path
    serving: ClientCert
    service_account_key: Path
    service_account_pub: Path
    admin: ClientCert
    controller_manager: ClientCert
    scheduler: ClientCert


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)


def _signed(directory: Path, name: str, subject: str, ca_cert: Path, ca_key: Path, ext: str) -> ClientCert:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    extfile = directory / f"{name}.ext"
    extfile.write_text(ext)
    _openssl("req", *EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", subject)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "365", "-extfile", str(extfile))
    return ClientCert(cert, key)


def make_pki(directory: Path) -> ClusterPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", *EC_KEY, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "3650",
             "-subj", "/CN=tenant-operator-local-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    serving_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    )
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(sa_key))
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    return ClusterPKI(
        ca_cert=ca_cert,
        ca_key=ca_key,
        serving=_signed(directory, "apiserver", "/CN=kube-apiserver", ca_cert, ca_key, serving_ext),
        service_account_key=sa_key,
        service_account_pub=sa_pub,
        admin=_signed(directory, "admin", "/O=system:masters/CN=tenant-operator-admin", ca_cert, ca_key, client_ext),
        controller_manager=_signed(directory, "controller-manager", "/CN=system:kube-controller-manager",
                                   ca_cert, ca_key, client_ext),
        scheduler=_signed(directory, "scheduler", "/CN=system:kube-scheduler", ca_cert, ca_key, client_ext),
    )


def kubeconfig(server: str, ca_cert: Path, client: ClientCert, user: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
