"""Kubernetes-style conditions: the operator's diary for humans and scripts.

Conditions are kept as the JSON dicts stored in `status.conditions`.
lastTransitionTime moves only when the status flips, so re-stating a
condition that already holds changes nothing and costs no write.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

READY = "Ready"
NAMESPACE_READY = "NamespaceReady"
QUOTA_READY = "QuotaReady"
DATABASE_READY = "DatabaseReady"
WORKLOADS_READY = "WorkloadsReady"
MIGRATING = "Migrating"
SCHEMA_READY = "SchemaReady"
STORAGE_EXCEEDED = "StorageExceeded"
# Conditions whose normal state is False: a first report of them in that state is no news (no event).
ABNORMAL_WHEN_TRUE = (STORAGE_EXCEEDED,)

PARTS = (NAMESPACE_READY, QUOTA_READY, DATABASE_READY, WORKLOADS_READY)

PROGRESS_REASONS = frozenset({
    "WorkloadsProgressing",  # a Deployment rolls out
    "AccessPending",  # a new namespace waits for the grants process to bind the operator
    "WaitingForNamespace", "WaitingForQuota", "WaitingForDatabase",  # a part waits for the one before it
    "Migrating",  # Ready while a move runs
    "MigrationCompleted", "MigrationSettled", "MigrationCancelled",  # Migrating, once a move is over
})
"""Reasons of a condition that is not True in the normal course of things: their events are Normal.
Warning is for what a person should look at (kubectl get events --field-selector type=Warning)."""


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    ok: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.ok]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(current: Iterable[dict], updates: Iterable[Condition], generation: int, timestamp: str) -> list[dict]:
    """The condition list after `updates`, in a stable order; others are kept as they are."""
    by_type = {c["type"]: dict(c) for c in current}
    for update in updates:
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != update.status
        since = timestamp if previous is None or changed else previous.get("lastTransitionTime", timestamp)
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }
    order = [READY, *PARTS, SCHEMA_READY, MIGRATING]
    return sorted(by_type.values(), key=lambda c: (order.index(c["type"]) if c["type"] in order else 99, c["type"]))


def find(conditions: Iterable[dict], type_: str) -> dict | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Iterable[dict], type_: str) -> bool:
    found = find(conditions, type_)
    return bool(found and found.get("status") == "True")


def summary(parts: list[Condition]) -> Condition:
    """Ready from its parts: the first part not True says why the tenant is not Ready."""
    for part in parts:
        if part.ok is not True:
            return Condition(READY, False if part.ok is False else None, part.reason, f"{part.type}: {part.message}")
    return Condition(READY, True, "TenantReady", "all parts of the tenant are in place")


def deserves_warning(condition: dict) -> bool:
    """Whether the event telling this condition's change is a Warning: False, and not mere progress."""
    return condition.get("status") == "False" and condition.get("reason") not in PROGRESS_REASONS


def transitions(before: Iterable[dict], after: Iterable[dict]) -> list[dict]:
    """Conditions whose status or reason changed: what deserves an event."""
    old = {c["type"]: (c.get("status"), c.get("reason")) for c in before}
    return [c for c in after if old.get(c["type"]) != (c["status"], c["reason"])]
