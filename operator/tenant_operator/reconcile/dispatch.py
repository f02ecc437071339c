"""One reconcile of one tenant: delete, move or converge, chosen here and nowhere else.

The guards in order: being deleted -> finalizer -> plan -> a move wanted ->
converge and report. The phases below never call back up here; one that wants
another pass says so in its Outcome.
"""

from __future__ import annotations

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.reconcile import deletion, migration
from tenant_operator.reconcile.context import Context, Outcome
from tenant_operator.reconcile.converge import converge, plan_for, schema_turn
from tenant_operator.reconcile.report import phase, report, summary
from tenant_operator.reconcile.state import migration_wanted, tier_of


def reconcile(ctx: Context, tenant: Tenant, schema_only: bool = False) -> Outcome:
    """`schema_only`: the rollout gave the tenant its turn and nothing else about it changed."""
    if tenant.deleting:
        return deletion.finalize(ctx, tenant)
    tenant = ensure_finalizer(ctx, tenant)
    tier = tier_of(tenant) or render.value(tenant.spec.tier)

    plan, problem = plan_for(ctx, tenant)
    if problem or plan is None:
        assert problem is not None
        report(ctx, tenant, [problem], phase="Failed" if problem.reason != "PlanNotFound" else "Pending", tier=None)
        return Outcome(requeue_after=None if problem.reason == "TierNotAllowed" else 30.0)

    if migration_wanted(tenant):
        return migration.advance(ctx, tenant, plan)
    if schema_only and _serving_at_rest(tenant):
        turn = schema_turn(ctx, tenant, plan, tier)
        report(ctx, tenant, [turn.condition] if turn.condition else [], tier=tier, schema_record=turn.record,
               phase="Degraded" if turn.degraded else "Ready")
        return Outcome(requeue_after=turn.requeue_after, failed=turn.failed)
    converged = converge(ctx, tenant, plan, tier)
    if converged.refused:
        # Nothing was provisioned on `tier`: status keeps the tier the tenant really lives on (if any),
        # so that a later change of spec.tier is a fresh start, not a migration from nowhere.
        report(ctx, tenant, [*converged.parts, cond.summary(converged.parts)], phase="Failed",
               tier=tier_of(tenant))
        return converged.outcome
    parts, schema = converged.parts, converged.schema
    told = [schema.condition] if schema.condition is not None and not schema.part_of_ready else []
    if converged.storage is not None:
        told.append(converged.storage)
    now = phase(parts, tenant, tier)
    if now == "Ready" and (schema.degraded or (converged.storage is not None and converged.storage.ok)):
        now = "Degraded"  # serving on the version before the one that failed, or read-only over its maxSize
    report(ctx, tenant, [*parts, *told, summary(parts, tenant, tier)], phase=now, tier=tier,
           schema_record=schema.record, quota_status=converged.quota_status, max_bytes=converged.max_bytes)
    return converged.outcome


def _serving_at_rest(tenant: Tenant) -> bool:
    """Ready at its current spec: a rollout's turn may look at its schema alone."""
    return (render.value(tenant.status.phase) == "Ready" and tenant.status.observed_generation == tenant.generation
            and not tenant.spec.suspended)


def ensure_finalizer(ctx: Context, tenant: Tenant) -> Tenant:
    if names.FINALIZER in tenant.finalizers:
        return tenant
    finalizers = (*tenant.finalizers, names.FINALIZER)
    written = ctx.kube.merge_patch(ObjectRef(TENANT, tenant.name),
                                   {"metadata": {"finalizers": list(finalizers),
                                                 "resourceVersion": tenant.resource_version}})
    return tenant.with_finalizers(finalizers, ((written or {}).get("metadata") or {}).get("resourceVersion"))
