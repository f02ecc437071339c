"""Converge: every part of a tenant brought to its desired state on one tier.

Namespace and isolation first, then the quota, then (only once the quota bounds
what they can do) the owners' access and the data, then the tier's workloads.
Synchronous on purpose: it runs in a worker thread, with the official client and
psycopg both blocking. Safe to run any number of times; when nothing differs
from the desired state it makes no write at all, to Kubernetes or PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Iterable

import psycopg
from kubernetes.client.exceptions import ApiException

from tenant_operator.api import conditions as cond
from tenant_operator.api import limits, names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.desired.drift import needs_apply
from tenant_operator.infra import access as access_
from tenant_operator.infra import connection, metrics, postgres
from tenant_operator.infra.kube import KubeAPI
from tenant_operator.reconcile import storage as storage_step
from tenant_operator.reconcile.context import Context, Outcome
from tenant_operator.reconcile.schema import SchemaState, ensure_schema
from tenant_operator.reconcile.state import annotation, available, recorded, secret_password

log = logging.getLogger(__name__)

# Tenants waiting for their Deployments look again after 1, 2, 4, 8, then every 15 seconds
# (the operator watches only the shared namespace's Deployments: it may not list the cluster's).
WAIT_FOR_WORKLOADS = 15.0


@dataclasses.dataclass(frozen=True)
class Converged:
    parts: list[Condition]
    """NamespaceReady, QuotaReady, DatabaseReady, WorkloadsReady; or the one refusal."""
    outcome: Outcome
    refused: bool = False
    """The spec cannot be rendered on that tier: nothing was applied, `parts` says why."""
    schema: SchemaState = SchemaState()
    """The application's schema: a part of Ready only for a tenant being born."""
    quota_status: dict | None = None
    """The ResourceQuota's status as read (hard, used); None when it was not read."""
    storage: Condition | None = None
    """StorageExceeded: only for a tenant with a maxSize (or one still stopped)."""
    max_bytes: int | None = None
    """Its maxSize in bytes, for status.usage."""


def converge(ctx: Context, tenant: Tenant, plan: TenantPlan, tier: str, prune: bool | None = None,
             with_schema: bool = True) -> Converged:
    """Bring every part of the tenant to its desired state on `tier`; the parts' conditions.

    A tenant never reconciled before is applied without reading first (nothing to
    compare with, and a read per object is half the cost of provisioning). Objects
    that are no longer wanted are looked for only when the spec changed since the
    last reconcile, or when the caller (a migration) says so. A move leaves the
    application's schema alone (`with_schema`): its next version waits for the new home.
    """
    fresh = not tenant.reconciled
    if prune is None:
        prune = not fresh and tenant.status.observed_generation != tenant.generation
    apply = functools.partial(_apply_all, ctx.kube, compare=not fresh)
    try:
        objects = render.tenant_objects(tenant, plan, ctx.settings, tier)
    except render.TemplateError as error:
        if isinstance(error, render.SpecError):
            problem = Condition(error.condition_type, False, error.reason, str(error))
        else:
            problem = Condition(cond.WORKLOADS_READY, False, "TemplateError", str(error))
        return Converged([problem], Outcome(requeue_after=None), refused=True)

    namespace = _step(cond.NAMESPACE_READY, "NamespaceReady",
                      f"namespace {names.tenant_namespace(tenant.name)} with isolation and owner access",
                      lambda: _namespace(ctx, objects["namespace"], apply, fresh))
    quota_seen: list[dict] = []
    quota = _step(cond.QUOTA_READY, "QuotaApplied", "ResourceQuota and LimitRange from the plan",
                  lambda: quota_seen.extend(apply(objects["quota"],
                                                  _prunable_quota(objects["quota"], tenant) if prune else []))
                  ) if namespace.ok else Condition(cond.QUOTA_READY, False, "WaitingForNamespace",
                                                   "the namespace must exist before its quota")
    # Owners get in, and the tenant gets data, only once the quota bounds what they can do.
    if quota.ok:
        namespace = _step(cond.NAMESPACE_READY, "NamespaceReady", namespace.message,
                          lambda: apply(objects["access"], _prunable_access(tenant) if prune else []))
    parts = [namespace, quota]
    bounds = limits.effective(plan.spec.database.limits, tenant.spec.database_overrides)
    if namespace.ok and quota.ok:
        step = _database_step(ctx, tenant, plan, bounds, tier, fresh)
    else:
        step = _DatabaseStep(Condition(cond.DATABASE_READY, False, "WaitingForQuota",
                                       "the namespace and its quota must be in place first"))
    database, password = step.condition, step.password
    parts.append(database)
    placement = postgres.placement(tenant.name, tier, ctx.settings.shared_database)
    stored = _storage_step(ctx, tenant, bounds, placement, step.stopped) if database.ok else None
    schema = SchemaState(record=recorded(tenant))
    if stored is not None and stored.status == "True":
        # Its DDL would fail as the tenant, which owns nothing while stopped: the next version waits.
        schema = SchemaState(condition=Condition(cond.SCHEMA_READY, False, "StorageExceeded",
                                                 "schema versions wait until the tenant is back under its maxSize"),
                             record=recorded(tenant))
    elif with_schema and password is not None and not tenant.spec.suspended:
        schema = ensure_schema(ctx, tenant, plan, postgres.placement(tenant.name, tier, ctx.settings.shared_database),
                               password)
        if schema.part_of_ready and schema.condition is not None:
            parts.append(schema.condition)
    if database.ok:
        workloads = _workloads_step(ctx, tenant, tier, objects["workloads"], apply, prune)
    else:
        workloads = Condition(cond.WORKLOADS_READY, False, "WaitingForDatabase", "the database is not ready")
    parts.append(workloads)

    quota_status = next((body.get("status") or {} for body in quota_seen if body.get("kind") == "ResourceQuota"),
                        None)
    if quota_status is None and fresh and quota.ok:
        # Not read back at birth: as the quota controller will count it, nothing used yet.
        quota_status = next(({"hard": (doc.get("spec") or {}).get("hard") or {}, "used": {}}
                             for doc in objects["quota"] if doc["kind"] == "ResourceQuota"), None)
    outcome = _outcome(parts, workloads, schema)
    if stored is not None and stored.reason == storage_step.BUSY:
        outcome = dataclasses.replace(outcome, failed=True)  # the tenant's locks may pass: retried with backoff
    return Converged(parts, outcome, schema=schema, quota_status=quota_status,
                     storage=stored, max_bytes=limits.max_bytes(bounds))


def _storage_step(ctx: Context, tenant: Tenant, bounds: limits.DatabaseLimits, placement: postgres.DataPlacement,
                  stopped: bool) -> Condition | None:
    """maxSize, looked at only for a tenant that has one or is stopped (reconcile/storage.py).

    `stopped` as the data step found it: retained data adopted by a new Tenant may still be.
    """
    told = tenant.status.condition(cond.STORAGE_EXCEEDED)
    if bounds.max_size is None and not stopped:
        return None
    if not ctx.leading():
        return None  # stopping or lifting acts on the tenant's data: only the leader's to do
    try:
        return storage_step.enforce(ctx, tenant, placement, bounds, stopped=stopped)
    except connection.DatabaseUnavailable as error:
        return Condition(cond.STORAGE_EXCEEDED, told is not None and told.status == "True", "DatabaseUnavailable",
                         str(error))


def _outcome(parts: list[Condition], workloads: Condition, schema: SchemaState) -> Outcome:
    if schema.failed or any(p.ok is False and p.reason.endswith(("Unavailable",)) for p in parts):
        return Outcome(failed=True)
    if any(p.ok is False and p.reason.endswith("Failed") and p.type != cond.SCHEMA_READY for p in parts):
        return Outcome(failed=True)
    if any(p.reason == "AccessPending" for p in parts):
        return Outcome(failed=True)
    if workloads.ok is not True:
        return Outcome(requeue_after=WAIT_FOR_WORKLOADS, waiting=True)
    return Outcome(requeue_after=schema.requeue_after)


def _namespace(ctx: Context, manifests: list[dict], apply: Callable, fresh: bool) -> None:
    """The namespace, the operator's rights in it, then the rest of what goes with it."""
    access_.ensure_namespace(ctx.kube, ctx.access, manifests[0], known_absent=fresh)
    try:
        apply(manifests)
    except ApiException as error:
        if error.status == 403 and ctx.access is not None:
            ctx.access.forget(manifests[0]["metadata"]["name"])
        raise


def plan_for(ctx: Context, tenant: Tenant) -> tuple[TenantPlan | None, Condition | None]:
    plan_body = ctx.plan_body(tenant.spec.plan)
    if plan_body is None:
        return None, Condition(cond.READY, False, "PlanNotFound",
                               f"TenantPlan {tenant.spec.plan!r} does not exist; create it or choose another plan")
    plan = TenantPlan.from_body(plan_body)
    allowed = [render.value(t) for t in plan.spec.tiers]
    if render.value(tenant.spec.tier) not in allowed:
        return None, Condition(cond.READY, False, "TierNotAllowed",
                               f"plan {tenant.spec.plan!r} allows tiers {', '.join(allowed)}, "
                               f"not {render.value(tenant.spec.tier)!r}")
    return plan, None


def _step(type_: str, reason: str, message: str, action: Callable[[], object]) -> Condition:
    try:
        action()
    except ApiException as error:
        return Condition(type_, False, "ApplyFailed", _api_error_message(error))
    except access_.AccessPending as error:
        return Condition(type_, False, "AccessPending", str(error))
    return Condition(type_, True, reason, message)


def _api_error_message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "").get("message", str(error.reason))
    except (TypeError, ValueError):
        return f"{error.status} {error.reason}"


def _apply_all(kube: KubeAPI, desired: list[dict], prunable: Iterable[ObjectRef] = (), compare: bool = True,
               ) -> list[dict]:
    """Apply what differs; the objects as read before (their status, for the caller that wants it)."""
    seen = []
    for manifest in desired:
        actual = kube.read(ObjectRef.of(manifest)) if compare else None
        if actual:
            seen.append(actual)
        if not compare or needs_apply(manifest, actual):
            kube.apply(manifest)
    for ref in prunable:
        actual = kube.read(ref)
        if actual and actual["metadata"].get("labels", {}).get(names.LABEL_MANAGED_BY) == names.MANAGED_BY:
            kube.delete(ref)
    return seen


def _prunable_access(tenant: Tenant) -> list[ObjectRef]:
    """Access objects the tenant no longer wants (isolation switched off, owners emptied)."""
    namespace = names.tenant_namespace(tenant.name)
    refs = []
    if not tenant.spec.network_isolation:
        refs.append(ObjectRef(KINDS[("networking.k8s.io/v1", "NetworkPolicy")], render.NETWORK_POLICY_NAME, namespace))
    if not tenant.spec.owners:
        refs.append(ObjectRef(KINDS[("rbac.authorization.k8s.io/v1", "RoleBinding")], render.OWNERS_BINDING_NAME,
                              namespace))
    return refs


def _prunable_quota(desired: list[dict], tenant: Tenant) -> list[ObjectRef]:
    if any(m["kind"] == "LimitRange" for m in desired):
        return []
    return [ObjectRef(KINDS[("v1", "LimitRange")], render.LIMITS_NAME, names.tenant_namespace(tenant.name))]


def _database_step(ctx: Context, tenant: Tenant, plan: TenantPlan, bounds: limits.DatabaseLimits, tier: str,
                   fresh: bool = False) -> _DatabaseStep:
    """The data, its Secret and route; the condition, and the role's password once all is in place."""
    placement = postgres.placement(tenant.name, tier, ctx.settings.shared_database)
    secret_ref = ObjectRef(KINDS[("v1", "Secret")], names.DB_SECRET_NAME, names.tenant_namespace(tenant.name))
    try:
        # A tenant never reconciled has no Secret of ours yet; if one was left behind, the
        # role gets the new password and the Secret is overwritten with it, consistently.
        secret = None if fresh else ctx.kube.read(secret_ref)
        password = secret_password(secret)
        rotation = tenant.annotations.get(names.ROTATE_PASSWORD_ANNOTATION)
        rotating = bool(secret and rotation and rotation != annotation(secret, names.ROTATE_PASSWORD_ANNOTATION))
        if rotating:
            password = None  # a new password, set on the role and written to the Secret together
        result = _ensure_data(ctx, placement, password, login=not tenant.spec.suspended, bounds=bounds)
        if result.changed and not fresh:  # a new tenant's Ready event tells the same
            where = f"{placement.database}/{placement.schema}"
            ctx.events.post(tenant, "DatabaseProvisioned",
                            f"{placement.tier} tier: {'; '.join(result.actions)} ({where})")
        host, port = ctx.server.endpoint
        desired = render.database_secret(tenant, host, port, placement.database, placement.schema,
                                         result.password, rotation)
        if needs_apply(desired, secret):
            ctx.kube.apply(desired)
        if rotating:
            ctx.events.post(tenant, "PasswordRotated", f"new password for role {placement.role}")
        _ensure_route(ctx, tenant, tier, placement, known_absent=fresh)
    except connection.DatabaseUnavailable as error:
        return _DatabaseStep(Condition(cond.DATABASE_READY, False, "DatabaseUnavailable", str(error)))
    except psycopg.errors.InvalidParameterValue as error:
        # A limit the CRD's pattern let through but the server refuses (work_mem below 64kB, say).
        return _DatabaseStep(Condition(cond.DATABASE_READY, False, "InvalidDatabaseLimits",
                                       f"PostgreSQL refused a database limit of plan {plan.name} or the tenant's "
                                       f"databaseOverrides: {' '.join(str(error).split())}"))
    except psycopg.errors.InsufficientPrivilege as error:
        # An admin with CREATEROLE but no SUPERUSER may not set some limits (temp_file_limit): said, not a crash.
        return _DatabaseStep(Condition(cond.DATABASE_READY, False, "AdminLacksRights",
                                       f"PostgreSQL refused the operator's admin: {' '.join(str(error).split())}; "
                                       f"a limit such as tempFileLimit (plan {plan.name}) needs a superuser admin"))
    except ApiException as error:
        return _DatabaseStep(Condition(cond.DATABASE_READY, False, "ApplyFailed", _api_error_message(error)))
    ctx.passwords.put(tenant.name, result.password)
    where = f"schema {placement.schema} in database {placement.database}"
    return _DatabaseStep(Condition(cond.DATABASE_READY, True, "DatabaseReady",
                                   f"{where}; credentials in Secret {secret_ref.name}"), result.password,
                         result.stopped)


@dataclasses.dataclass(frozen=True)
class _DatabaseStep:
    condition: Condition
    password: str | None = None
    """The role's password once all is in place."""
    stopped: bool = False


@dataclasses.dataclass(frozen=True)
class _Ensured:
    actions: tuple[str, ...]
    password: str
    """The role's password, for the Secret: the one it held, or a new one."""
    stopped: bool = False
    """Its objects belong to its storage owner: over its maxSize when last looked at."""

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _ensure_data(ctx: Context, placement: postgres.DataPlacement, password: str | None, login: bool,
                 bounds: limits.DatabaseLimits) -> _Ensured:
    """Provision the data; a password is generated only when no Secret holds one yet.

    A retained role of a deleted tenant (login disabled, no Secret left) is adopted:
    it gets a new password and its login back, its data stays as it was. The shared
    app may act as the tenant exactly while it may log in (and lives on the shared tier).
    """
    def ensure(new_password: str | None, kept: str) -> _Ensured:
        result = postgres.ensure_tenant_data(ctx.server.admin_dsn(), placement, new_password, login=login,
                                             served=login, connection_limit=limits.connection_limit(bounds),
                                             settings=limits.role_settings(bounds))
        return _Ensured(result.actions, kept, result.stopped)

    if password is None:
        fresh = postgres.new_password()
        ensured = ensure(fresh, fresh)
    else:
        try:
            ensured = ensure(None, password)
        except ValueError:
            # The role is gone but its Secret is not (a restored or wiped server): recreate it
            # with the password the tenant's workloads already hold.
            ensured = ensure(password, password)
    metrics.count_write("postgres", len(ensured.actions))
    return ensured






def _ensure_route(ctx: Context, tenant: Tenant, tier: str, placement: postgres.DataPlacement,
                  known_absent: bool = False) -> None:
    """Register a shared tenant with the shared workload; an isolated one is not routed there."""
    ref = render.routes_ref(ctx.settings)
    routes = {} if known_absent else (ctx.kube.read(ref) or {}).get("data") or {}
    state = "suspended" if tenant.spec.suspended else "active"
    wanted = render.route_entry(tenant, placement.database, state, (ctx.server.name, *ctx.server.endpoint)) \
        if tier == "shared" else None
    if routes.get(tenant.name) != wanted:
        ctx.kube.merge_patch(ref, {"data": {tenant.name: wanted}})


def _workloads_step(ctx: Context, tenant: Tenant, tier: str, desired: list[dict], apply: Callable,
                    prune: bool) -> Condition:
    try:
        apply(desired)
        if tier == "shared":
            if prune:
                _prune_isolated_workloads(ctx.kube, tenant)
            deployments = [ObjectRef(KINDS[("apps/v1", "Deployment")], "shared-web", ctx.settings.shared_namespace)]
        else:
            deployments = [ObjectRef.of(m) for m in desired if m["kind"] == "Deployment"]
        if tier == "shared":
            waiting = [] if ctx.shared_workload.get(lambda: available(ctx.kube.read(deployments[0]))) \
                else [str(deployments[0])]
        else:
            waiting = [str(ref) for ref in deployments if not available(ctx.kube.read(ref))]
    except ApiException as error:
        return Condition(cond.WORKLOADS_READY, False, "ApplyFailed", _api_error_message(error))
    if waiting:
        return Condition(cond.WORKLOADS_READY, False, "WorkloadsProgressing", f"waiting for {', '.join(waiting)}")
    if tenant.spec.suspended:
        return Condition(cond.WORKLOADS_READY, True, "WorkloadsSuspended", "workloads scaled to zero")
    where = "the shared workload serves it" if tier == "shared" else f"{len(deployments)} Deployment(s) Available"
    return Condition(cond.WORKLOADS_READY, True, "WorkloadsAvailable", where)




def _prune_isolated_workloads(kube: KubeAPI, tenant: Tenant) -> None:
    namespace = names.tenant_namespace(tenant.name)
    selector = (f"{names.LABEL_TENANT}={tenant.name},{names.LABEL_TIER}=isolated,"
                f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}")
    for kind in (KINDS[("apps/v1", "Deployment")], KINDS[("v1", "Service")]):
        for item in kube.list(kind, namespace, selector):
            kube.delete(ObjectRef(kind, item["metadata"]["name"], namespace))


def schema_turn(ctx: Context, tenant: Tenant, plan: TenantPlan, tier: str) -> SchemaState:
    """The schema step alone, for a tenant at rest whose DatabaseSchema changed or whose turn came.

    Everything else about the tenant is as its last reconcile left it (a change of it
    would have queued a full reconcile); its password is the one its Secret held when
    this process last looked, else read from it when a version is to run. A tenant
    still waiting costs no request at all.
    """
    def password(from_secret: bool) -> str | None:
        known = None if from_secret else ctx.passwords.get(tenant.name)
        if known is not None:
            return known
        read = secret_password(ctx.kube.read(ObjectRef(KINDS[("v1", "Secret")], names.DB_SECRET_NAME,
                                                       names.tenant_namespace(tenant.name))))
        if read is not None:
            ctx.passwords.put(tenant.name, read)
        return read

    return ensure_schema(ctx, tenant, plan, postgres.placement(tenant.name, tier, ctx.settings.shared_database),
                         password)
