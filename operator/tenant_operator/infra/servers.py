"""The PostgreSQL servers tenants live on: each DatabaseServer resolved into what a session needs.

A DatabaseServer names a Secret holding its admin DSN; the operator's own
DATABASE_URL is the server `default` (with or without an object of that name,
whose spec may still cordon, drain or size it). A server is resolved from the
controller's cache of DatabaseServers and a read of its Secret, kept a few
seconds: a thousand reconciles in a resync must not read a Secret each.

Whether a server can take tenants (reachable, the admin's rights, wal_level)
is probed by `probe`, and kept by `Health` for the placement and the status.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from kubernetes.client.exceptions import ApiException
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.api.settings import Settings
from tenant_operator.infra import replication, shared_database
from tenant_operator.infra.connection import DatabaseUnavailable, admin_session
from tenant_operator.infra.kube import KubeAPI

DEFAULT = "default"
TIERS = ("shared", "isolated")
DEFAULT_MAX_TENANTS = 1000
SECRET = KINDS[("v1", "Secret")]


class ServerUnusable(Exception):
    """The server cannot be used now (unknown, its Secret missing or unreadable); the message says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Server:
    name: str
    admin_url: str = dataclasses.field(repr=False)
    host: str
    port: int
    shared_database: str
    tiers: tuple[str, ...] = TIERS
    max_tenants: int = DEFAULT_MAX_TENANTS
    cordoned: bool = False
    drain: bool = False
    labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def admin_dsn(self, dbname: str | None = None) -> str:
        """The admin conninfo, pointed at `dbname` (the shared database when None)."""
        return make_conninfo(self.admin_url, dbname=dbname or self.shared_database)

    def maintenance_dsn(self) -> str:
        """The admin conninfo on the database its URL names (where CREATE DATABASE runs)."""
        return make_conninfo(self.admin_url)

    @property
    def endpoint(self) -> tuple[str, int]:
        """Host and port tenants' workloads use, as written into their Secrets."""
        return self.host, self.port


def default_server(settings: Settings, body: dict[str, Any] | None = None) -> Server:
    """The server of DATABASE_URL; `body` a DatabaseServer named default, whose spec sizes and cordons it."""
    host, port = settings.tenant_endpoint()
    spec = (body or {}).get("spec") or {}
    endpoint = spec.get("endpoint") or {}
    return _with_spec(Server(DEFAULT, settings.database_url, str(endpoint.get("host") or host),
                             int(endpoint.get("port") or port), settings.shared_database), body)


def _with_spec(server: Server, body: dict[str, Any] | None) -> Server:
    if body is None:
        return server
    spec = body.get("spec") or {}
    return dataclasses.replace(
        server, tiers=tuple(spec.get("tiers") or TIERS), max_tenants=int(spec.get("maxTenants") or DEFAULT_MAX_TENANTS),
        cordoned=bool(spec.get("cordoned")), drain=bool(spec.get("drain")),
        labels=dict((body.get("metadata") or {}).get("labels") or {}))


def admin_url_from_secret(secret: dict[str, Any] | None, key: str, where: str) -> str:
    encoded = ((secret or {}).get("data") or {}).get(key)
    if secret is None:
        raise ServerUnusable("AdminSecretNotFound", f"Secret {where} does not exist")
    if not encoded:
        raise ServerUnusable("AdminSecretInvalid", f"Secret {where} has no key {key!r} (an admin DSN)")
    url = base64.b64decode(encoded).decode().strip()
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ServerUnusable("AdminSecretInvalid", f"key {key!r} of Secret {where} is not a libpq URL or "
                                                   "key=value conninfo") from None
    if params.get("dbname") in (None, "", "*"):
        # CloudNativePG's superuser Secret names the database `*` (any): sessions start in `postgres`.
        url = make_conninfo(url, dbname="postgres")
    return url


class Servers:
    """Every server by name, from the cached DatabaseServers and their Secrets (kept `seconds`)."""

    def __init__(self, kube: KubeAPI, settings: Settings, body_of: Callable[[str], dict[str, Any] | None],
                 bodies: Callable[[], Iterable[dict[str, Any]]], seconds: float = 10.0):
        self.kube, self.settings = kube, settings
        self.body_of, self.bodies = body_of, bodies
        self.seconds = seconds
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, str, Server]] = {}

    def names(self) -> list[str]:
        found = {body["metadata"]["name"] for body in self.bodies()}
        return sorted(found | {DEFAULT})

    def get(self, name: str) -> Server:
        """The server; ServerUnusable when it does not exist or its Secret cannot be used."""
        body = self.body_of(name)
        if name == DEFAULT and not ((body or {}).get("spec") or {}).get("adminSecretRef"):
            return default_server(self.settings, body)
        if body is None:
            raise ServerUnusable("ServerNotFound", f"DatabaseServer {name!r} does not exist")
        version = str((body.get("metadata") or {}).get("resourceVersion"))
        with self._lock:
            kept = self._kept.get(name)
            if kept and kept[1] == version and time.monotonic() - kept[0] < self.seconds:
                return kept[2]
        server = self._resolve(name, body)
        with self._lock:
            self._kept[name] = (time.monotonic(), version, server)
        return server

    def forget(self, name: str) -> None:
        with self._lock:
            self._kept.pop(name, None)

    def _resolve(self, name: str, body: dict[str, Any]) -> Server:
        spec = body.get("spec") or {}
        ref = spec.get("adminSecretRef") or {}
        where = f"{ref.get('namespace')}/{ref.get('name')}"
        try:
            secret = self.kube.read(ObjectRef(SECRET, ref["name"], ref["namespace"]))
        except ApiException as error:
            if error.status == 403:
                raise ServerUnusable("AdminSecretForbidden", f"the operator may not read Secret {where}: keep "
                                                             "admin Secrets in the operator's namespace") from None
            raise
        url = admin_url_from_secret(secret, ref.get("key") or "uri", where)
        params = conninfo_to_dict(url)
        endpoint = spec.get("endpoint") or {}
        host = str(endpoint.get("host") or params.get("host") or "localhost")
        port = int(endpoint.get("port") or params.get("port") or 5432)
        return _with_spec(Server(name, url, host, port, self.settings.shared_database), body)


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a server answered: whether the operator can place tenants on it, and why not."""

    ok: bool
    reason: str
    message: str
    version: str | None = None
    wal_level: str | None = None
    online: bool = False
    """Whether moves off this server can replicate (infra/replication.py), and why not."""
    online_reason: str = ""


def probe(server: Server) -> Probe:
    """Reachable, its version, the admin's rights (superuser, or CREATEROLE and CREATEDB), wal_level;
    the shared database made (and locked down)."""
    try:
        with admin_session(server.maintenance_dsn()) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), current_setting('wal_level'), r.rolsuper,"
                " r.rolcreaterole, r.rolcreatedb FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    except DatabaseUnavailable as error:
        return Probe(False, "Unreachable", str(error))
    except psycopg.Error as error:
        return Probe(False, "Unreachable", " ".join(str(error).split()))
    if row is None:
        return Probe(False, "AdminLacksRights", "the admin role is not in pg_roles")
    version, wal_level, superuser, createrole, createdb = row
    if not superuser and not (createrole and createdb):
        return Probe(False, "AdminLacksRights", "the admin role needs SUPERUSER, or CREATEROLE and CREATEDB",
                     version, wal_level)
    # Made here, before the first tenant is placed on it, rather than by that tenant's reconcile; on a
    # server of the isolated tier alone too, since the tenants' locks (tenantlock.py) are taken in it.
    try:
        shared_database.ensure_shared_database(server.maintenance_dsn(), server.shared_database)
    except DatabaseUnavailable as error:
        return Probe(False, "Unreachable", str(error), version, wal_level)
    except psycopg.Error as error:
        return Probe(False, "SharedDatabaseFailed", f"the shared database {server.shared_database}: "
                                                    f"{' '.join(str(error).split())}", version, wal_level)
    able = replication.capability(server.maintenance_dsn())
    return Probe(True, "Reachable", f"PostgreSQL {version}, wal_level {wal_level}", version, wal_level,
                 able.online, able.reason)


class Health:
    """Each server's last probe, kept `seconds`; probed again on demand when older."""

    def __init__(self, seconds: float = 10.0, prober: Callable[[Server], Probe] = probe):
        self.seconds = seconds
        self.prober = prober
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, Probe]] = {}

    def of(self, server: Server) -> Probe:
        with self._lock:
            kept = self._kept.get(server.name)
        if kept and time.monotonic() - kept[0] < self.seconds:
            return kept[1]
        return self.record(server, self.prober(server))

    def record(self, server: Server, found: Probe) -> Probe:
        with self._lock:
            self._kept[server.name] = (time.monotonic(), found)
        return found

    def forget(self, name: str) -> None:
        with self._lock:
            self._kept.pop(name, None)

    def of_known(self, name: str) -> bool:
        """Whether the server's last probe (if any) found it Ready; no probe is made here."""
        with self._lock:
            kept = self._kept.get(name)
        return kept is not None and kept[1].ok
