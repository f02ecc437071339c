"""The application's schema in one tenant: born with every version, then following the rollout.

Called by converge once the tenant's data and Secret are in place. A tenant not
yet serving gets every version before it becomes Ready (SchemaReady is one of
its parts). A tenant already serving moves to a new version only when the
rollout lets it (Context.rollouts: maxParallel, canaries first, halted, paused),
and stays Ready meanwhile, telling its progress in SchemaReady. A version that
fails leaves the tenant on the one before: SchemaReady False
SchemaMigrationFailed with PostgreSQL's error, phase Degraded; it is tried again
once the DatabaseSchema changes (a fixed or new version, paused toggled).

The versions run as the tenant (infra/schema_history.py) while this process holds
the tenant's lock (the one moves take), proven again before every version.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.schema import DatabaseSchema, Migration
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import fence, metrics, schema_history
from tenant_operator.infra.connection import DatabaseUnavailable
from tenant_operator.infra.fence import Deposed
from tenant_operator.infra.postgres import DataPlacement
from tenant_operator.infra.tenantlock import LockBusy
from tenant_operator.reconcile.context import Context
from tenant_operator.reconcile.state import recorded

log = logging.getLogger(__name__)

# A tenant waiting for its turn in a rollout looks again this much later.
ROLLOUT_WAIT = 5.0
# One waiting for a slot is woken when one frees (RolloutGate.finished, and its pump every few seconds):
# this poll is only a safety net. Every waiting tenant polled every 5 s cost a 1,000-tenant rollout
# more reconciles than its migrations.
SLOT_WAIT = 30.0
SERVING = ("Ready", "Degraded", "Suspended")
# The tenant stays on the version it has until the DatabaseSchema changes.
FAILED_REASONS = ("SchemaMigrationFailed", "MigrationChecksumMismatch", "MigrationVersionRemoved")


@dataclasses.dataclass(frozen=True)
class SchemaState:
    """What the schema step tells: its condition, what status.database records, when to look again."""

    condition: Condition | None = None
    """None: the plan names no DatabaseSchema."""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    """schemaVersion, schemaFailedVersion, schemaFailedGeneration for status.database."""
    part_of_ready: bool = False
    """A tenant being born is Ready only at the latest version."""
    requeue_after: float | None = None
    failed: bool = False

    @property
    def degraded(self) -> bool:
        return self.condition is not None and self.condition.reason in FAILED_REASONS


def ensure_schema(ctx: Context, tenant: Tenant, plan: TenantPlan, placement: DataPlacement,
                  password: str | Callable[[bool], str | None]) -> SchemaState:
    """`password`: the tenant's, or how to find it when a version is to run (True: from its Secret, not memory)."""
    name = plan.spec.database.schema_name
    if not name:
        return SchemaState(record=recorded(tenant))
    born = render.value(tenant.status.phase) not in SERVING
    resolved = ctx.schemas.resolve(name)
    if resolved is None:
        return _state(tenant, born, Condition(cond.SCHEMA_READY, False, "SchemaNotFound",
                                              f"DatabaseSchema {name!r} (plan {plan.name}) does not exist"),
                      requeue_after=30.0)
    if resolved.problem is not None or resolved.latest is None:
        problem = resolved.problem
        return _state(tenant, born, Condition(cond.SCHEMA_READY, False, problem.reason if problem else "NoMigrations",
                                              f"DatabaseSchema {name}: {problem}"), requeue_after=30.0)
    schema, latest = resolved.schema, resolved.latest
    record = recorded(tenant)
    current = record.get("schemaVersion")
    if current == latest:
        return _state(tenant, born, Condition(cond.SCHEMA_READY, True, "SchemaAtLatest",
                                              f"DatabaseSchema {name} at version {latest}"), record)
    if record.get("schemaFailedGeneration") == schema.generation:
        # Not tried again until the DatabaseSchema changes: the rollout counts it as failed.
        return _state(tenant, born, _kept_failure(tenant) or Condition(
            cond.SCHEMA_READY, False, "SchemaMigrationFailed", f"version {record.get('schemaFailedVersion')} failed"),
            record)
    if not born:
        waiting = ctx.rollouts.may_start(schema, tenant, latest)
        if waiting and waiting.brief:
            # Its turn comes as soon as a slot frees (the rollout wakes it): a status write per tenant
            # per version to say "not yet" would double a rollout's writes.
            return SchemaState(condition=None, record=record, requeue_after=SLOT_WAIT)
        if waiting:
            return _state(tenant, born, Condition(cond.SCHEMA_READY, False, "SchemaRolloutPending",
                                                  f"at version {current}, {latest} is rolling out: {waiting.reason}"),
                          record, requeue_after=ROLLOUT_WAIT)
    return _take_turn(ctx, tenant, born, placement, password, resolved.migrations, schema, record, latest)


def _take_turn(ctx: Context, tenant: Tenant, born: bool, placement: DataPlacement,
               password: str | Callable[[bool], str | None], migrations: Sequence[Migration], schema: DatabaseSchema,
               record: dict[str, Any], latest: int) -> SchemaState:
    """Run the versions the tenant lacks; a serving tenant's slot in the rollout is given back whatever happens."""
    secret = password if isinstance(password, str) else password(False)
    if secret is None:
        if not born:
            ctx.rollouts.finished(schema, tenant, False)
        return _state(tenant, born, Condition(cond.SCHEMA_READY, False, "SchemaWaiting",
                                              f"Secret {names.DB_SECRET_NAME} holds no password yet"), record,
                      requeue_after=ROLLOUT_WAIT)
    failed = True
    try:
        try:
            record, condition = _migrate(ctx, tenant, placement, secret, migrations, schema.name,
                                         schema.generation, record, latest)
        except schema_history.LoginFailed:
            # A remembered password may be stale: once more with the Secret's, if it holds another.
            current = None if isinstance(password, str) else password(True)
            if current is None or current == secret:
                raise
            record, condition = _migrate(ctx, tenant, placement, current, migrations, schema.name,
                                         schema.generation, record, latest)
        failed = condition.reason in FAILED_REASONS
    except Deposed as deposed:
        failed = False
        log.warning("tenant %s: schema migration stops here: %s", tenant.name, deposed)
        return SchemaState(condition=None, record=record, requeue_after=2.0)
    except LockBusy as busy:
        failed = False
        return _state(tenant, born, Condition(cond.SCHEMA_READY, False, "SchemaWaiting", str(busy)), record,
                      requeue_after=2.0)
    except DatabaseUnavailable as error:
        failed = False  # passing trouble, retried with backoff: not a failure the rollout counts
        return _state(tenant, born, Condition(cond.SCHEMA_READY, False, "DatabaseUnavailable", str(error)), record,
                      failed=True)
    finally:
        if not born:
            ctx.rollouts.finished(schema, tenant, failed)
    return _state(tenant, born, condition, record)


def _migrate(ctx: Context, tenant: Tenant, placement: DataPlacement, password: str, migrations: Sequence[Migration],
             name: str,
             generation: int, record: dict[str, Any], latest: int) -> tuple[dict[str, Any], Condition]:
    dsn = schema_history.tenant_dsn(ctx.server.admin_dsn(), placement, password)
    applied: list[int] = []
    with fence.authority_over(ctx.server.admin_dsn(), tenant.name, ctx.leading) as authority:
        def before_each(migration: Migration) -> None:
            authority.check(f"apply version {migration.version} of {name}")
            applied.append(migration.version)

        try:
            schema_history.apply(dsn, placement.schema, migrations, latest, before_each)
        except schema_history.MigrationFailed as failure:
            metrics.count_schema_migration(name, failure.version, "failed")
            done = [v for v in applied if v != failure.version]
            for version in done:
                metrics.count_schema_migration(name, version, "applied")
            record = _with_version(record, done)
            record.update(schemaFailedVersion=failure.version, schemaFailedGeneration=generation)
            ctx.events.post(tenant, "SchemaMigrationFailed", f"DatabaseSchema {name}: {failure}", warning=True)
            return record, Condition(cond.SCHEMA_READY, False, "SchemaMigrationFailed",
                                     f"DatabaseSchema {name}: {failure}; the tenant stays on version "
                                     f"{record.get('schemaVersion')}")
        except schema_history.VersionsRemoved as removed:
            record = dict(record, schemaFailedVersion=max(removed.versions), schemaFailedGeneration=generation)
            ctx.events.post(tenant, "MigrationVersionRemoved", f"DatabaseSchema {name}: {removed}", warning=True)
            return record, Condition(cond.SCHEMA_READY, False, "MigrationVersionRemoved",
                                     f"DatabaseSchema {name}: {removed}")
        except schema_history.ChecksumMismatch as mismatch:
            record = dict(record, schemaFailedVersion=mismatch.version, schemaFailedGeneration=generation)
            ctx.events.post(tenant, "MigrationChecksumMismatch", f"DatabaseSchema {name}: {mismatch}", warning=True)
            return record, Condition(cond.SCHEMA_READY, False, "MigrationChecksumMismatch",
                                     f"DatabaseSchema {name}: {mismatch}")
    for version in applied:
        metrics.count_schema_migration(name, version, "applied")
    record = {key: value for key, value in record.items() if not key.startswith("schemaFailed")}
    record["schemaVersion"] = latest
    if applied:
        ctx.events.post(tenant, "SchemaMigrated", f"DatabaseSchema {name}: applied version(s) "
                                                  f"{', '.join(map(str, applied))}; now at {latest}")
    return record, Condition(cond.SCHEMA_READY, True, "SchemaAtLatest", f"DatabaseSchema {name} at version {latest}")


def _with_version(record: dict[str, Any], applied: list[int]) -> dict[str, Any]:
    record = dict(record)
    if applied:
        record["schemaVersion"] = max(applied)
    return record


def _kept_failure(tenant: Tenant) -> Condition | None:
    told = tenant.status.condition(cond.SCHEMA_READY)
    if told is None or told.status == "True":
        return None
    return Condition(cond.SCHEMA_READY, False, told.reason, told.message)


def _state(tenant: Tenant, born: bool, condition: Condition | None, record: dict[str, Any] | None = None,
           requeue_after: float | None = None, failed: bool = False) -> SchemaState:
    return SchemaState(condition, recorded(tenant) if record is None else record, part_of_ready=born,
                       requeue_after=requeue_after, failed=failed)
