"""Operator settings: environment variables, overridable on the command line.

Every setting has a default that works for `make run`, except the admin
connection to PostgreSQL, which has to come from somewhere real: a DSN in the
environment (the Helm chart fills it from an existing Secret).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

ENV_PREFIX = "TENANT_OPERATOR_"


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = dataclasses.field(repr=False)
    """Admin connection (libpq URL or key=value) to the server holding the tenants' data."""
    shared_database: str = "tenants"
    """The database holding the shared tier's schemas; created if missing."""
    database_host: str | None = None
    """Host written into tenants' Secrets when workloads reach the server by another name."""
    database_port: int | None = None
    shared_namespace: str = "tenancy-shared"
    """Namespace of the shared workload and its routing ConfigMap."""
    template_dir: Path | None = None
    """Extra jinja2 templates for tier workloads; looked up before the built-in ones."""
    shared_image: str = "nginxinc/nginx-unprivileged:1.27"
    shared_replicas: int = 1
    resync_seconds: float = 300.0
    """How often every tenant is compared with its desired state even without events (drift)."""
    workers: int = 4
    metrics_port: int = 0
    """Prometheus metrics port; 0 disables the endpoint."""
    quarantine_retention_seconds: float = 7 * 24 * 3600.0
    """How long a migrated-away source schema or database is kept before it is dropped."""
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    snapshot_dir: Path = Path(tempfile.gettempdir()) / "tenant-operator-snapshots"
    """Where reclaimPolicy Snapshot writes its pg_dump files. The default under the system temp
    directory is for development only: in production mount a PersistentVolumeClaim here."""
    snapshot_timeout_seconds: float = 3600.0
    """A pg_dump running longer than this is stopped, and the deletion retried later."""
    pg_bin_dir: Path | None = None
    """Directory of pg_dump and pg_restore; None looks them up on PATH (Debian: /usr/bin)."""
    leader_election: bool = False
    """Lease-based leader election: only the replica holding the Lease reconciles."""
    leader_election_namespace: str | None = None
    """Namespace of the Lease; None: the operator's own namespace in a pod, else "default"."""
    leader_election_name: str = "tenant-operator"
    """Name of the coordination.k8s.io Lease the replicas compete for."""
    lease_duration_seconds: float = 15.0
    """How long a Lease not renewed keeps the others waiting before one of them takes over."""
    lease_renew_seconds: float = 5.0
    """How often the leader renews its Lease."""
    namespace_cluster_role: str = ""
    """ClusterRole the operator binds its own identity to in each tenant namespace it creates
    (the chart's `<release>-tenant-namespace`): its rights there and nowhere else. Empty: no
    such binding, for an identity that holds its rights cluster-wide (development)."""
    shared_namespace_cluster_role: str = ""
    """The same for the shared namespace (the chart's `<release>-shared-namespace`)."""

    def admin_dsn(self, dbname: str | None = None) -> str:
        """The admin conninfo, pointed at `dbname` (the shared database when None)."""
        return make_conninfo(self.database_url, dbname=dbname or self.shared_database)

    def maintenance_dsn(self) -> str:
        """The admin conninfo on the database named in the URL (where CREATE DATABASE runs)."""
        return make_conninfo(self.database_url)

    def tenant_endpoint(self) -> tuple[str, int]:
        """Host and port tenants' workloads use, as written into their Secrets."""
        params = conninfo_to_dict(self.database_url)
        host = str(self.database_host or params.get("host") or "localhost")
        port = self.database_port or int(params.get("port") or 5432)
        return host, port


_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def _flag(raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"expected true or false, not {raw!r}")


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int, "int | None": int, "float": float, "Path | None": Path, "Path": Path, "bool": _flag,
}


def _convert(name: str, raw: str) -> Any:
    converter: Callable[[str], Any] = _CONVERTERS.get(str(_FIELDS[name].type), str)
    try:
        return converter(raw)
    except (ValueError, SystemExit) as error:
        raise SystemExit(f"{ENV_PREFIX}{name.upper()}={raw!r} is not valid: {error}") from None


def from_environment(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from TENANT_OPERATOR_<FIELD> variables; `overrides` (CLI flags) win."""
    source: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in _FIELDS:
        raw = source.get(ENV_PREFIX + name.upper())
        if raw not in (None, ""):
            values[name] = _convert(name, raw)
    values.update({key: value for key, value in overrides.items() if value is not None})
    if "database_url" not in values:
        raise SystemExit(
            f"{ENV_PREFIX}DATABASE_URL is not set: give the operator an admin connection to PostgreSQL "
            "(e.g. postgresql://postgres:secret@db:5432/postgres), or use `tenant-operator dev`."
        )
    return Settings(**values)
