"""Rollouts of DatabaseSchema versions across the fleet: who may start now, and where each stands.

The leader's workers ask `may_start` before a serving tenant moves to a new
version: at most maxParallel tenants of a schema migrate at once, canaries
first (the rest wait until every canary has served the latest version for
healthySeconds), none while paused, and none once maxFailures tenants failed
under the DatabaseSchema's current generation (Halted). A change of the
DatabaseSchema (a fixed or new version, paused toggled) is a new generation: the
failures of the old one no longer count and those tenants try again.

The counts come from the controller's cache of Tenants (status.database.schemaVersion
and schemaFailedGeneration), so a new leader knows at once where every rollout
stands; what is in flight is this process's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from tenant_operator.api import conditions as cond
from tenant_operator.api.kinds import DATABASE_SCHEMA
from tenant_operator.api.schema import HALTED, MAX_LISTED_FAILURES, ROLLED_OUT, DatabaseSchema
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import metrics
from tenant_operator.infra.events import Recorder, object_event
from tenant_operator.infra.kube import Kube
from tenant_operator.infra.schemas import SchemaCatalog
from tenant_operator.reconcile.context import Wait

log = logging.getLogger(__name__)

# How long a scan of the cache for failed tenants stands (this process's own failures count at once).
FAILED_SCAN_SECONDS = 1.0


def _labels(body: dict[str, Any]) -> dict[str, str]:
    return (body.get("metadata") or {}).get("labels") or {}


def _database(body: dict[str, Any]) -> dict[str, Any]:
    return ((body.get("status") or {}).get("database")) or {}


class RolloutGate:
    def __init__(self, tenants_of: Callable[[str], Iterable[dict[str, Any]]],
                 wake: Callable[[str], None] = lambda name: None):
        """`tenants_of(schema name)`: the cached bodies of the tenants on plans naming it.

        `wake(tenant name)`, from any thread: a tenant turned away for want of a slot
        is queued again the moment one frees, rather than when its poll comes round.
        """
        self.tenants_of = tenants_of
        self.wake = wake
        self._lock = threading.Lock()
        self._running: dict[str, set[str]] = {}
        self._waiting: dict[str, dict[str, None]] = {}
        self._failed: dict[tuple[str, int], set[str]] = {}
        self._canaries_done: dict[tuple[str, int], float] = {}
        self._seen_failed: dict[tuple[str, int], tuple[float, set[str]]] = {}
        self._parallel: dict[str, int] = {}

    def may_start(self, schema: DatabaseSchema, tenant: Tenant, latest: int) -> Wait | None:
        rollout = schema.spec.rollout
        if rollout.paused:
            return Wait("the rollout is paused (spec.rollout.paused)")
        # Its own failure is told by its record (ensure_schema stops there); should a view without that
        # record come by, the tenant tries again rather than waiting for a halt it caused itself.
        failed = self.failed(schema) - {tenant.name}
        if len(failed) >= rollout.max_failures:
            return Wait(f"the rollout is halted: {len(failed)} tenant(s) failed (maxFailures {rollout.max_failures})")
        if rollout.canary and not self._is_canary(schema, tenant.name):
            waiting = self._canaries_waiting(schema, latest)
            if waiting:
                return Wait(waiting)
        with self._lock:
            self._parallel[schema.name] = rollout.max_parallel
            running = self._running.setdefault(schema.name, set())
            if tenant.name in running:
                return None
            queued = self._waiting.setdefault(schema.name, {})
            if len(running) >= rollout.max_parallel:
                queued[tenant.name] = None
                return Wait(f"{len(running)} tenant(s) migrating (maxParallel {rollout.max_parallel})", brief=True)
            queued.pop(tenant.name, None)
            running.add(tenant.name)
        return None

    def finished(self, schema: DatabaseSchema, tenant: Tenant, failed: bool) -> None:
        with self._lock:
            self._running.get(schema.name, set()).discard(tenant.name)
            if failed:
                self._failed.setdefault((schema.name, schema.generation), set()).add(tenant.name)
            waiting = self._waiting.get(schema.name, {})
            following = next(iter(waiting), None)
            if following is not None:
                del waiting[following]
        if following is not None:
            self.wake(following)

    def pump(self) -> None:
        """Wake as many waiting tenants as each schema has free slots.

        finished() hands a freed slot to the next tenant waiting; a tenant woken that no longer
        needs one (it reached the version, it was deleted) hands it on to nobody. Called every
        few seconds by the leader, so such a slot stays idle that long, not until polls come round.
        """
        woken = []
        with self._lock:
            for name, waiting in self._waiting.items():
                free = self._parallel.get(name, 0) - len(self._running.get(name, ()))
                for tenant in list(waiting)[:max(free, 0)]:
                    del waiting[tenant]
                    woken.append(tenant)
        for tenant in woken:
            self.wake(tenant)

    def failed(self, schema: DatabaseSchema) -> set[str]:
        """Tenants failed under the schema's current generation (cache and this process's own)."""
        key = (schema.name, schema.generation)
        with self._lock:
            seen = self._seen_failed.get(key)
        if seen is None or time.monotonic() - seen[0] > FAILED_SCAN_SECONDS:
            # A scan of every tenant of the schema: once a second, not once per tenant asking for a turn.
            seen = (time.monotonic(), {body["metadata"]["name"] for body in self.tenants_of(schema.name)
                                       if _database(body).get("schemaFailedGeneration") == schema.generation})
            with self._lock:
                self._seen_failed[key] = seen
        with self._lock:
            return seen[1] | self._failed.get(key, set())

    def _is_canary(self, schema: DatabaseSchema, tenant_name: str) -> bool:
        canary = schema.spec.rollout.canary
        if canary is None:
            return False
        for body in self.tenants_of(schema.name):
            if body["metadata"]["name"] == tenant_name:
                return _matches(_labels(body), canary.selector.match_labels)
        return False

    def _canaries_waiting(self, schema: DatabaseSchema, latest: int) -> str | None:
        canary = schema.spec.rollout.canary
        assert canary is not None
        canaries = [body for body in self.tenants_of(schema.name)
                    if _matches(_labels(body), canary.selector.match_labels)]
        behind = [body["metadata"]["name"] for body in canaries if _database(body).get("schemaVersion") != latest]
        key = (schema.name, latest)
        if behind:
            return f"waiting for the canaries to reach version {latest} ({', '.join(sorted(behind)[:5])})"
        with self._lock:
            since = self._canaries_done.setdefault(key, time.monotonic())
        left = canary.healthy_seconds - (time.monotonic() - since)
        if left > 0:
            return f"the canaries serve version {latest}; the rest follow in {left:.0f}s"
        return None


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def rollout_status(schema: DatabaseSchema, latest: int | None, problem: tuple[str, str] | None,
                   tenants: list[dict[str, Any]], current: dict[str, Any], now: str) -> dict[str, Any]:
    """The DatabaseSchema's status from its tenants' statuses: counts, failures, RolledOut and Halted."""
    generation = schema.generation
    at_latest = [t for t in tenants if latest is not None and _database(t).get("schemaVersion") == latest]
    failed = [t for t in tenants if _database(t).get("schemaFailedGeneration") == generation]
    failures = []
    for body in sorted(failed, key=lambda b: b["metadata"]["name"])[:MAX_LISTED_FAILURES]:
        told = cond.find((body.get("status") or {}).get("conditions", []), cond.SCHEMA_READY) or {}
        failures.append({"tenant": body["metadata"]["name"], "version": _database(body).get("schemaFailedVersion"),
                         "message": str(told.get("message", ""))[:2048]})
    halted = len(failed) >= schema.spec.rollout.max_failures
    done = latest is not None and len(at_latest) == len(tenants)
    updates = [
        cond.Condition(ROLLED_OUT, done, "AllTenantsAtLatest" if done else (problem[0] if problem else "InProgress"),
                       problem[1] if problem else f"{len(at_latest)} of {len(tenants)} tenant(s) at version {latest}"),
        cond.Condition(HALTED, halted, "MaxFailuresReached" if halted else "NotHalted",
                       f"{len(failed)} tenant(s) failed under generation {generation} (maxFailures "
                       f"{schema.spec.rollout.max_failures}); change the DatabaseSchema to resume" if halted
                       else f"{len(failed)} tenant(s) failed"),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "tenants": len(tenants),
        "atLatest": len(at_latest),
        "pending": len(tenants) - len(at_latest) - len([t for t in failed if t not in at_latest]),
        "failed": len(failed),
        "failures": failures,
        "conditions": cond.merge(current.get("conditions", []), updates, generation, now),
    }
    if latest is not None:
        status["latestVersion"] = latest
    return status


def tenants_of_schema(tenants: Iterable[dict[str, Any]], plans: dict[str, dict[str, Any]],
                      schema_name: str) -> list[dict[str, Any]]:
    """The cached tenants on plans naming the schema (those being deleted left out)."""
    naming = {name for name, plan in plans.items()
              if (((plan.get("spec") or {}).get("database") or {}).get("schema")) == schema_name}
    return [body for body in list(tenants) if (body.get("spec") or {}).get("plan") in naming
            and not (body.get("metadata") or {}).get("deletionTimestamp")]


def write_rollout_status(kube: Kube, catalog: SchemaCatalog, recorder: Recorder, name: str,
                         tenants: list[dict[str, Any]]) -> None:
    resolved = catalog.resolve(name)
    if resolved is None:
        return
    # The status as the cache has it now: a resolution is kept for a few seconds, its status with it.
    body = catalog.body_of(name)
    if body is None:
        return
    schema = DatabaseSchema.from_body(body)
    problem = (resolved.problem.reason, str(resolved.problem)) if resolved.problem else None
    current = schema.status.model_dump(mode="json", by_alias=True, exclude_unset=True)
    status = rollout_status(schema, resolved.latest, problem, tenants, current, cond.now())
    _time_rollout(name, resolved.latest, status)
    if all(current.get(key) == value for key, value in status.items()):
        return
    written = kube.apply_status(DATABASE_SCHEMA, name, status) or {}
    metadata = written.get("metadata") or {}
    for changed in cond.transitions(current.get("conditions", []), status["conditions"]):
        if changed["type"] == ROLLED_OUT and changed["status"] == "False" and changed["reason"] == "InProgress":
            continue  # a rollout starting is told by the tenants' own events
        warning = changed["type"] == HALTED and changed["status"] == "True" or changed["reason"] not in (
            "AllTenantsAtLatest", "NotHalted", "InProgress")
        recorder.post_body(object_event("DatabaseSchema", name, metadata.get("uid"), metadata.get("resourceVersion"),
                                        changed["reason"], f"{changed['type']}: {changed['message']}", warning))


_rollout_started: dict[tuple[str, int], float] = {}


def _time_rollout(name: str, latest: int | None, status: dict[str, Any]) -> None:
    """The rollout duration metric: from the first look at a latest version with tenants behind, to none behind."""
    if latest is None:
        return
    key = (name, latest)
    if status["atLatest"] < status["tenants"]:
        _rollout_started.setdefault(key, time.monotonic())
    elif key in _rollout_started:
        seconds = time.monotonic() - _rollout_started.pop(key)
        metrics.ROLLOUT_SECONDS.observe(seconds)
        log.info("DatabaseSchema %s: every tenant (%d) at version %s after %.1fs", name, status["tenants"], latest,
                 seconds)
