"""What the phases read off a tenant and the objects around it, shared below all of them.

The predicates on status.migration (is a move running, should one start, may a
deletion go ahead), the availability of a Deployment, the password a Secret
holds. Pure functions of the typed Tenant and of raw objects read back.
"""

from __future__ import annotations

import base64
from typing import Any

from tenant_operator.api import conditions as cond
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render

STEPS = ("prepare", "replicate", "freeze", "copy", "verify", "switch", "retire")
ROLLBACK_STEPS = ("prepare", "replicate", "freeze", "copy", "verify")
ROLLED_BACK_REASONS = ("VerificationFailed", "TargetNotEmpty", "CopyFailed", "CatchUpFailed", "MigrationFailed")
# Another process holds the tenant's lock (and may not be displaced): look again this much later.
LOCK_BUSY_RETRY = 2.0


def tier_of(tenant: Tenant) -> str | None:
    """The tier the tenant's data lives on now (None before it lived anywhere)."""
    return render.value(tenant.status.tier) if tenant.status.tier else None


def migrating(tenant: Tenant) -> bool:
    return tenant.status.migration is not None


def safe_to_delete(tenant: Tenant) -> bool:
    """Deletion waits while a migration runs: it may hold data in two places."""
    return not migrating(tenant)


def migration_wanted(tenant: Tenant) -> bool:
    """A migration runs, or should start: the tenant lives on another tier than its spec asks."""
    if migrating(tenant):
        return True
    current, desired = tier_of(tenant), render.value(tenant.spec.tier)
    if not current or current == desired:
        return False
    # A rolled-back migration is not retried for the same spec: a person looks first.
    last = tenant.status.condition(cond.MIGRATING)
    return not (last and last.reason in ROLLED_BACK_REASONS and last.observed_generation == tenant.generation)


def available(deployment: dict[str, Any] | None) -> bool:
    """A Deployment that has rolled out its current spec and serves (or is scaled to zero)."""
    if not deployment:
        return False
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return False
    if spec.get("replicas", 1) == 0:
        return True
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions", []))


def secret_password(secret: dict[str, Any] | None) -> str | None:
    encoded = ((secret or {}).get("data") or {}).get("password")
    return base64.b64decode(encoded).decode() if encoded else None


def annotation(obj: dict[str, Any] | None, key: str) -> str | None:
    return (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(key)


def recorded(tenant: Tenant) -> dict[str, Any]:
    """The application schema's fields of status.database as they stand."""
    database = tenant.status.database
    if database is None:
        return {}
    fields = {"schemaVersion": database.schema_version, "schemaFailedVersion": database.schema_failed_version,
              "schemaFailedGeneration": database.schema_failed_generation}
    return {key: value for key, value in fields.items() if value is not None}
