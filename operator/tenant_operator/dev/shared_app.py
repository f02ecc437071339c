"""The reference shared-tier app (examples/shared-app) as a local process, fed as a pod would be (tests, bench).

kwok runs no containers, so the app runs here: its routing files are the real
`tenant-routes` ConfigMap written out the way the kubelet writes a ConfigMap
volume (timestamped folder, `..data` link swapped at once, a link per key), and
its environment comes from the real Secrets, as the Deployments' env says.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.dev.cluster import REPO_ROOT
from tenant_operator.dev.ports import free_port
from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

APP_DIR = REPO_ROOT / "examples" / "shared-app"
NOTES_SQL = (APP_DIR / "migrations" / "001_notes.sql").read_text()


class RoutesVolume:
    """The ConfigMap as the kubelet mounts it; `sync()` is the kubelet noticing a change."""

    def __init__(self, kube: Kube, namespace: str, directory: Path):
        self.kube, self.directory = kube, directory
        self.ref = ObjectRef(KINDS[("v1", "ConfigMap")], "tenant-routes", namespace)
        directory.mkdir(parents=True, exist_ok=True)

    def sync(self) -> dict[str, str]:
        data = (self.kube.read(self.ref) or {}).get("data") or {}
        stamp = "..{}.{}".format(datetime.datetime.now().strftime("%Y_%m_%d_%H_%M_%S"), uuid.uuid4().hex[:6])
        folder = self.directory / stamp
        folder.mkdir()
        for key, value in data.items():
            (folder / key).write_text(value)
        link = self.directory / "..data_tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(stamp)
        os.replace(link, self.directory / "..data")
        for entry in self.directory.iterdir():
            if not entry.name.startswith("..") and entry.name not in data:
                entry.unlink()
        for key in data:
            if not (self.directory / key).is_symlink():
                (self.directory / key).symlink_to(f"..data/{key}")
        return data


class AppProcess:
    """`python -m shared_app` with the given environment, on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.log = open(log_path, "ab")
        full_env = {**os.environ, "PYTHONPATH": str(APP_DIR), "HOST": "127.0.0.1", "PORT": str(self.port),
                    "POOL_SIZE": "4", "POOL_TIMEOUT": "3", **env}
        for key in ("TENANT_ROUTES_DIR", "TENANT_ID", "DATABASE_SCHEMA"):
            if key not in env:
                full_env.pop(key, None)
        self.process = subprocess.Popen([sys.executable, "-m", "shared_app"], env=full_env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        wait_for(self._healthy, timeout=30, what="the reference app to answer /healthz")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the reference app exited with {self.process.returncode}")
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, tenant: str | None = None, body: dict | None = None,
                ) -> tuple[int, dict[str, str], dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            headers = {"Content-Type": "application/json"}
            if tenant is not None:
                headers["X-Tenant-ID"] = tenant
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"raw": raw.decode(errors="replace")}
            return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
        finally:
            conn.close()

    def answers(self, tenant: str | None, status: int, timeout: float = 15) -> None:
        """Until GET /notes for the tenant answers `status`: the app re-reads its routing files by itself."""
        wait_for(lambda: self.request("GET", "/notes", tenant)[0] == status, timeout=timeout, interval=0.1,
                 what=f"the app to answer {status} for tenant {tenant}")

    def notes(self, tenant: str | None) -> list[str]:
        status, _, body = self.request("GET", "/notes", tenant)
        assert status == 200, (status, body)
        return [note["body"] for note in body["notes"]]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
