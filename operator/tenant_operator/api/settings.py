"""Operator settings: environment variables, overridable on the command line.

Every setting has a default that works for `make run`, except the admin
connection to PostgreSQL, which has to come from somewhere real: a DSN in the
environment (the Helm chart fills it from an existing Secret).

This dataclass is the one list of settings: each field is a variable
TENANT_OPERATOR_<NAME> and a `tenant-operator run --<name>` flag, generated
from the field with its help text (cli.py), so the two cannot drift apart.
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
MOVE_MODES = ("auto", "online", "offline")


def _setting(default: Any = dataclasses.MISSING, *, help: str, **options: Any) -> Any:
    """A field of Settings with its help: the one text the flag, `--help` and the docs test use."""
    return dataclasses.field(default=default, metadata={"help": help}, **options)


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        help="admin connection to PostgreSQL (libpq URL or key=value): a superuser, or a role with CREATEROLE "
             "and CREATEDB", repr=False)
    shared_database: str = _setting("tenants", help="the database holding the shared tier's schemas; created if "
                                                     "missing")
    database_host: str | None = _setting(
        None, help="host written into tenants' Secrets, when their workloads reach the server by another name than "
                   "the operator (default: the host of DATABASE_URL)")
    database_port: int | None = _setting(None, help="port written into tenants' Secrets (default: the port of "
                                                    "DATABASE_URL)")
    shared_namespace: str = _setting("tenancy-shared", help="namespace of the shared workload and its routing "
                                                            "ConfigMap tenant-routes; the operator creates both")
    template_dir: Path | None = _setting(None, help="extra jinja2 templates (<name>.yaml.j2) for tier workloads, "
                                                    "looked up before the built-in ones")
    shared_image: str = _setting("ghcr.io/tenancy-dev/shared-app:0.1.0",
                                 help="image of the shared workload shared-web: the reference app of "
                                      "examples/shared-app, or one keeping its contract (docs/applications.md)")
    shared_replicas: int = _setting(1, help="replicas of the shared workload")
    resync_seconds: float = _setting(300.0, help="how often every tenant is compared with its desired state even "
                                                 "without events (drift)")
    workers: int = _setting(4, help="tenants reconciled in parallel")
    metrics_port: int = _setting(0, help="port of the Prometheus metrics (/metrics on all addresses); 0: off")
    health_port: int = _setting(0, help="port of the health endpoints on all addresses: /healthz answers while "
                                        "the process is alive, /readyz once it can reconcile (PostgreSQL reached, "
                                        "caches synced); 0: off")
    quarantine_retention_seconds: float = _setting(
        7 * 24 * 3600.0, help="how long the source schema or database of a tier migration is kept, renamed, before "
                              "it is dropped")
    drain_parallel: int = _setting(2, help="tenants moved off a draining DatabaseServer at the same time")
    move_mode: str = _setting(
        "auto", help="how moves copy a tenant's data: online (logical replication while it writes; the freeze "
                     "covers the tail), offline (the copy inside the freeze), or auto (online where the source "
                     "allows it); a Tenant's annotation tenancy.dev/move-mode chooses for it")
    replication_lag_bytes: int = _setting(
        16 * 1024 * 1024, help="an online move freezes writes once the target is this close to the source (bytes)")
    replication_catch_up_seconds: float = _setting(
        60.0, help="inside the freeze, how long an online move waits for the target to apply the tail before it "
                   "rolls back")
    online_checksum_bytes: int = _setting(
        64 * 1024 * 1024, help="an online move of a tenant larger than this verifies row counts (and sequences) "
                               "inside its freeze, not checksums of every row: those cost seconds per GB")
    retained_wal_warning_bytes: int = _setting(
        1024 * 1024 * 1024, help="a move's replication slot keeping more WAL than this on the source is warned "
                                 "about (event, condition)")
    backoff_base_seconds: float = _setting(1.0, help="first retry delay after a failed reconcile; doubles per "
                                                     "failure")
    backoff_max_seconds: float = _setting(300.0, help="longest retry delay after failed reconciles")
    snapshot_dir: Path = _setting(
        Path(tempfile.gettempdir()) / "tenant-operator-snapshots",
        help="where reclaimPolicy Snapshot writes its pg_dump files; mount a PersistentVolumeClaim here in "
             "production (default: a directory under the system temp dir, for development)")
    snapshot_timeout_seconds: float = _setting(3600.0, help="a pg_dump running longer is stopped, and the deletion "
                                                            "retried later")
    pg_bin_dir: Path | None = _setting(None, help="directory of pg_dump and pg_restore (default: found on PATH)")
    leader_election: bool = _setting(False, help="several replicas: only the one holding a coordination.k8s.io "
                                                 "Lease reconciles, the others keep warm caches")
    leader_election_namespace: str | None = _setting(
        None, help="namespace of the Lease (default: the operator's own namespace in a pod, else default)")
    leader_election_name: str = _setting("tenant-operator", help="name of the Lease the replicas compete for")
    lease_duration_seconds: float = _setting(15.0, help="how long a Lease not renewed keeps the others waiting "
                                                        "before one of them takes over")
    lease_renew_seconds: float = _setting(5.0, help="how often the leader renews its Lease; under two thirds of "
                                                    "the duration")
    namespace_cluster_role: str = _setting(
        "", help="ClusterRole the operator holds in each tenant namespace it creates, bound there by the grants "
                 "process (the chart's <release>-tenant-namespace); empty: the identity holds its rights "
                 "cluster-wide (development)")
    shared_namespace_cluster_role: str = _setting(
        "", help="the same for the shared namespace (the chart's <release>-shared-namespace); empty: "
                 "NAMESPACE_CLUSTER_ROLE")

    def __post_init__(self) -> None:
        if self.move_mode not in MOVE_MODES:
            raise SystemExit(f"{ENV_PREFIX}MOVE_MODE={self.move_mode!r} is not valid: choose one of "
                             f"{', '.join(MOVE_MODES)}")

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


FIELDS: dict[str, dataclasses.Field] = {field.name: field for field in dataclasses.fields(Settings)}
"""Every setting by name: the environment variables, the command line's flags and the docs follow it."""


def help_of(name: str) -> str:
    return str(FIELDS[name].metadata["help"])


def _flag(raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {raw!r}")


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int, "int | None": int, "float": float, "Path | None": Path, "Path": Path, "bool": _flag,
}


def parse(name: str, raw: str) -> Any:
    """The value of setting `name` from its text (a variable's or a flag's); ValueError if it is not one."""
    converter: Callable[[str], Any] = _CONVERTERS.get(str(FIELDS[name].type), str)
    return converter(raw)


def is_flag(name: str) -> bool:
    """Whether the setting is a yes/no one (a flag without a value on the command line)."""
    return str(FIELDS[name].type) == "bool"


def from_environment(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from TENANT_OPERATOR_<FIELD> variables; `overrides` (CLI flags) win."""
    source: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in FIELDS:
        raw = source.get(ENV_PREFIX + name.upper())
        if raw not in (None, ""):
            try:
                values[name] = parse(name, raw)
            except ValueError as error:
                raise SystemExit(f"{ENV_PREFIX}{name.upper()}={raw!r} is not valid: {error}") from None
    values.update({key: value for key, value in overrides.items() if value is not None})
    if "database_url" not in values:
        raise SystemExit(
            f"{ENV_PREFIX}DATABASE_URL is not set: give the operator an admin connection to PostgreSQL "
            "(e.g. postgresql://postgres:secret@db:5432/postgres), or use `tenant-operator dev`."
        )
    return Settings(**values)
