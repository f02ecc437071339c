"""The DatabaseServers as the leader keeps them: probed, counted, guarded against deletion, drained.

Every few seconds the leader resolves each server (its Secret), probes it
(reachable, version, the admin's rights, wal_level), makes the shared database
on a Ready server that serves the shared tier, counts the tenants on it from the
cache of Tenants, and writes the status when it changed: Ready, Draining, the
tenants placed (listed), free room, a drain's progress. The server `default`
(the operator's DATABASE_URL) gets an object of its own at start-up, so that it
can be seen, cordoned, sized and drained like the others.

A DatabaseServer carries a finalizer: it is deleted only once no tenant lives
on it; until then its status names them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.kinds import DATABASE_SERVER, ObjectRef
from tenant_operator.api.server import MAX_LISTED_TENANTS, DatabaseServer, free_places
from tenant_operator.infra import connection, metrics, replication, servers, tierdata, usage
from tenant_operator.infra.events import Recorder, object_event
from tenant_operator.infra.kube import Kube
from tenant_operator.infra.servers import Probe, ServerUnusable
from tenant_operator.reconcile.placement import NO_SERVER

log = logging.getLogger(__name__)

FINALIZER = "tenancy.dev/database-server"
STATUS_SECONDS = 5.0
# Quarantined copies past their retention are looked for this often, on every server.
SWEEP_SECONDS = 60.0
DRAINING = "Draining"
ONLINE_MOVES = "OnlineMoves"


def placed_tenants(tenants: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each cached tenant's server, and a move's servers: what placement counts (reconcile/placement.py)."""
    found: dict[str, dict[str, str]] = {}
    for body in list(tenants):
        status = body.get("status") or {}
        database = status.get("database") or {}
        migration = status.get("migration") or {}
        where: dict[str, str] = {}
        server = database.get("server") or (servers.DEFAULT if status.get("tier") else None)
        if server:
            where["server"] = server
        pin = ((body.get("spec") or {}).get("database") or {}).get("server")
        if pin:
            where["pin"] = pin
        if migration:
            where["fromServer"] = migration.get("fromServer") or server or servers.DEFAULT
            where["toServer"] = migration.get("toServer") or where["fromServer"]
        if where:
            found[body["metadata"]["name"]] = where
    return found


def waiting_on(server: str, tenants: Iterable[dict[str, Any]]) -> list[str]:
    """Tenants a change of `server` concerns: those on it or moving to or from it, and those no server took."""
    bodies = list(tenants)
    found = {tenant for tenant, where in placed_tenants(bodies).items() if server in where.values()}
    for body in bodies:
        told = cond.find((body.get("status") or {}).get("conditions", []), cond.DATABASE_READY) or {}
        if told.get("reason") == NO_SERVER:
            found.add(body["metadata"]["name"])
    return sorted(found)


def ensure_default(kube: Kube) -> None:
    """The object of the server `default`, made once; its spec is then the platform team's."""
    if kube.read(ObjectRef(DATABASE_SERVER, servers.DEFAULT)) is not None:
        return
    body = {"apiVersion": DATABASE_SERVER.api_version, "kind": DATABASE_SERVER.kind,
            "metadata": {"name": servers.DEFAULT, "finalizers": [FINALIZER]}, "spec": {}}
    try:
        kube.create(DATABASE_SERVER.collection_path(), body)
        log.info("created DatabaseServer default (the operator's DATABASE_URL)")
    except ApiException as error:
        if error.status != 409:  # another replica made it first
            raise


@dataclasses.dataclass
class ServerKeeper:
    kube: Kube
    pool: servers.Servers
    health: servers.Health
    events: Recorder
    bodies: dict[str, dict]
    placed: Callable[[], dict[str, dict[str, str]]]
    retention: float = 7 * 24 * 3600.0
    """How long a move's quarantined source is kept (settings.quarantine_retention_seconds)."""
    shared_ready: set[str] = dataclasses.field(default_factory=set)
    """Servers whose shared database this process made sure of."""
    swept: float = 0.0
    drains: dict[str, tuple[int, set[str]]] = dataclasses.field(default_factory=dict)
    suspects: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    """(server, name) of replication found with no move recording it, at the last sweep."""
    """Per draining server: the moves its status told before this process looked, and who lived there then."""

    def drain_changed(self, name: str, draining: bool) -> None:
        """From the watch, at once: who lives on a server when its drain begins (the status comes seconds later)."""
        if not draining:
            self.drains.pop(name, None)
        elif name not in self.drains:
            self.drains[name] = (0, {tenant for tenant, where in self.placed().items() if where.get("server") == name})

    def keep_all(self) -> None:
        placed = self.placed()
        for name in list(self.bodies):
            try:
                self.keep(name, placed)
            except ApiException as error:
                log.warning("DatabaseServer %s: status not written: %s %s", name, error.status, error.reason)
        # After the probes: a new server's shared database, where its quarantined copies are, exists by now.
        if time.monotonic() - self.swept > SWEEP_SECONDS:
            self.swept = time.monotonic()
            for name in list(self.bodies):
                if self.health.of_known(name):
                    self.sweep(name)

    def keep(self, name: str, placed: dict[str, dict[str, str]]) -> None:
        body = self.bodies.get(name)
        if body is None:
            return
        server = DatabaseServer.from_body(body)
        on = sorted(tenant for tenant, where in placed.items() if where.get("server") == name)
        moving = sorted(tenant for tenant, where in placed.items() if where.get("fromServer") == name
                        and where.get("toServer") != name)
        if server.deleting:
            self._guard_deletion(server, on)
            return
        if FINALIZER not in server.finalizers:
            self.kube.merge_patch(ObjectRef(DATABASE_SERVER, name), {"metadata": {
                "finalizers": [*server.finalizers, FINALIZER], "resourceVersion": server.resource_version}})
        probe = self._probe(name)
        metrics.track_server(name, probe.ok, len(on))
        current = body.get("status") or {}
        pinned = [tenant for tenant in on if placed[tenant].get("pin") == name]
        status = self._status(server, probe, on, moving, pinned, current)
        if all(current.get(key) == value for key, value in status.items()):
            return
        written = self.kube.apply_status(DATABASE_SERVER, name, status) or {}
        metadata = written.get("metadata") or {}
        for changed in cond.transitions(current.get("conditions", []), status["conditions"]):
            warning = changed["status"] == "False" and changed["type"] == cond.READY
            self.events.post_body(object_event("DatabaseServer", name, metadata.get("uid"),
                                               metadata.get("resourceVersion"), changed["reason"],
                                               f"{changed['type']}: {changed['message']}", warning))

    def sweep(self, name: str) -> None:
        """Drop the quarantined copies on the server older than the retention period."""
        try:
            server = self.pool.get(name)
            for kind, copy in tierdata.expired_quarantines(server.admin_dsn(), server.shared_database, None,
                                                           self.retention):
                tierdata.drop_quarantine(server.admin_dsn(), server.shared_database, kind, copy)
                metrics.count_write("postgres")
                log.info("DatabaseServer %s: dropped quarantined %s %s (older than %.0fs)", name, kind, copy,
                         self.retention)
            self._drop_orphans(server)
        except (ServerUnusable, connection.DatabaseUnavailable) as error:
            log.info("DatabaseServer %s: quarantined copies not looked at: %s", name, error)

    def _drop_orphans(self, server: servers.Server) -> None:
        """A move's slot or subscription that no Tenant's record names, at two sweeps in a row, is dropped:
        it would keep the source's WAL until its disk fills (a record lost, a Tenant gone without its deletion)."""
        moving = {replication.object_name(names.sql_name(tenant)) for tenant, where in self.placed().items()
                  if "fromServer" in where}
        found = replication.leftovers(server.maintenance_dsn())
        orphans = {(server.name, name) for name in found if name not in moving}
        for _, name in orphans & self.suspects:
            for _, database in found[name]:
                replication.drop_leftover(server.maintenance_dsn(), name, database)
            log.warning("DatabaseServer %s: dropped replication %s, which no move records", server.name, name)
        self.suspects = {suspect for suspect in self.suspects if suspect[0] != server.name} | (orphans - self.suspects)

    def shared_servers(self) -> list[servers.Server]:
        """The Ready servers of the shared tier besides `default`: where the shared app's role must be too."""
        found = []
        for name in sorted(self.shared_ready - {servers.DEFAULT}):
            try:
                server = self.pool.get(name)
            except ServerUnusable:
                continue
            if "shared" in server.tiers and self.health.of(server).ok:
                found.append(server)
        return found

    def _probe(self, name: str) -> Probe:
        try:
            server = self.pool.get(name)
        except ServerUnusable as error:
            self.health.forget(name)
            return Probe(False, error.reason, str(error))
        probe = self.health.record(server, servers.probe(server))
        if probe.ok and "shared" in server.tiers:
            self.shared_ready.add(name)
        return probe

    def _status(self, server: DatabaseServer, probe: Probe, on: list[str], moving: list[str], pinned: list[str],
                current: dict[str, Any]) -> dict[str, Any]:
        spec = server.spec
        how = "replicate while tenants write" if probe.online else "copy inside the freeze"
        updates = [cond.Condition(cond.READY, probe.ok, probe.reason, probe.message),
                   cond.Condition(ONLINE_MOVES, probe.online, "LogicalReplication" if probe.online else "OfflineOnly",
                                  f"moves off this server {how}: {probe.online_reason or probe.message}")]
        if spec.drain:
            left = len(on)
            stay = f"; {len(pinned)} pinned here stay until their spec.database.server changes " \
                   f"({', '.join(pinned[:5])})" if pinned else ""
            updates.append(cond.Condition(DRAINING, left > 0, "Draining" if left else "Drained",
                                          f"{left} tenant(s) left, {len(moving)} moving now{stay}" if left
                                          else "no tenant lives here any more"))
        else:
            updates.append(cond.Condition(DRAINING, False, "NotDraining", "spec.drain is false"))
        status: dict[str, Any] = {
            "observedGeneration": server.generation,
            "conditions": cond.merge(current.get("conditions", []), updates, server.generation, cond.now()),
            "tenants": len(on),
            "free": free_places(spec.max_tenants, len(on)),
            "placed": on[:MAX_LISTED_TENANTS],
        }
        if probe.version:
            status["version"] = probe.version
        if probe.wal_level:
            status["walLevel"] = probe.wal_level
        if spec.drain:
            # After a restart, the moves the status told already count, and those from now on.
            before, lived = self.drains.setdefault(server.name, (int((current.get("draining") or {}).get("moved", 0)),
                                                                 set(on)))
            status["draining"] = {"remaining": len(on), "moving": moving[:MAX_LISTED_TENANTS],
                                  "moved": before + len(lived - set(on))}
        return status

    def _guard_deletion(self, server: DatabaseServer, on: list[str]) -> None:
        name = server.name
        if FINALIZER not in server.finalizers:
            return
        if on:
            current = self.bodies[name].get("status") or {}
            message = (f"{len(on)} tenant(s) still live here ({', '.join(on[:10])}{', ...' if len(on) > 10 else ''}):"
                       " drain the server (spec.drain: true) or delete them first")
            updates = [cond.Condition(cond.READY, False, "DeletionBlocked", message)]
            status = {**current, "tenants": len(on), "placed": on[:MAX_LISTED_TENANTS],
                      "conditions": cond.merge(current.get("conditions", []), updates, server.generation, cond.now())}
            if status != current:
                self.kube.apply_status(DATABASE_SERVER, name, status)
                log.warning("DatabaseServer %s: deletion waits: %s", name, message)
            return
        self.kube.merge_patch(ObjectRef(DATABASE_SERVER, name), {"metadata": {
            "finalizers": [f for f in server.finalizers if f != FINALIZER],
            "resourceVersion": server.resource_version}})
        self.pool.forget(name)
        self.health.forget(name)
        metrics.forget_server(name)
        log.info("DatabaseServer %s: no tenant left, deleted", name)


class Measurements:
    """A resync pass's measurement of every tenant's bytes and sessions: one query per server, taken by the
    first examination of a tenant there, shared by the rest of the pass."""

    def __init__(self, pool: servers.Servers, leading: Callable[[], bool], max_age: float):
        self.pool, self.leading, self.max_age = pool, leading, max_age
        self._taken: dict[str, usage.Snapshot] = {}

    def of(self, server: str, sql_name: str) -> usage.DataUsage | None:
        if not self.leading():
            return None
        snapshot = self._taken.get(server)
        if snapshot is None:
            try:
                dsn = self.pool.get(server).admin_dsn()
            except ServerUnusable:
                return None
            snapshot = self._taken.setdefault(server, usage.Snapshot(lambda: usage.measure(dsn), self.max_age))
        try:
            return snapshot.get().get(sql_name)
        except connection.DatabaseUnavailable:
            return None  # the tenant's own reconcile tells the outage; its usage stays as last measured

    def forget(self) -> None:
        self._taken.clear()
