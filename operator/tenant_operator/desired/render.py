"""What a tenant should be, as manifests: pure functions of (tenant, plan, settings).

Nothing here talks to a server; the reconcile applies what these return. Every
object carries the tenancy labels so that a person (and the operator) can find
everything a tenant owns with one label selector.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import yaml

from tenant_operator.api import names
from tenant_operator.api.fields import QUOTA_NAME_MESSAGE, quota_name_allowed
from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.api.settings import Settings

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
ROUTES_CONFIGMAP = "tenant-routes"
QUOTA_NAME = "tenant-quota"
LIMITS_NAME = "tenant-limits"
NETWORK_POLICY_NAME = "tenant-isolation"
OWNERS_BINDING_NAME = "tenant-owners"
OWNER_API_GROUP = {"User": "rbac.authorization.k8s.io", "Group": "rbac.authorization.k8s.io", "ServiceAccount": ""}


def value(item: Any) -> Any:
    """Plain value of an enum member (tiers, kinds), as it is written into manifests."""
    return item.value if isinstance(item, Enum) else item


def tenant_labels(tenant, tier: str | None = None) -> dict[str, str]:
    return {
        names.LABEL_TENANT: tenant.name,
        names.LABEL_TIER: tier or value(tenant.spec.tier),
        names.LABEL_PLAN: tenant.spec.plan,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
    }


def _meta(tenant, name: str, tier: str | None = None, namespaced: bool = True) -> dict:
    meta = {"name": name, "labels": tenant_labels(tenant, tier)}
    if namespaced:
        meta["namespace"] = names.tenant_namespace(tenant.name)
    return meta


def namespace(tenant, tier: str | None = None) -> dict:
    meta = _meta(tenant, names.tenant_namespace(tenant.name), tier, namespaced=False)
    # Pod Security Admission: tenants run restricted workloads only.
    meta["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _resource_map(resources: dict | None) -> dict[str, str]:
    return {key: str(quantity) for key, quantity in sorted((resources or {}).items())}


# The key rules beyond the CRD's (api/fields.py refuses unknown names and fractional counts
# already); kept here so that what the operator applies never depends on admission alone.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _quota_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and ("/" in prefix or not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "the part before '/' must be a lowercase DNS domain such as example.com"
    if len(name) > 63 or not _QUALIFIED_NAME_PART.fullmatch(name):
        return ("the name must be at most 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    if not quota_name_allowed(key):
        return QUOTA_NAME_MESSAGE
    return None


def _check_quota(hard: dict[str, str], field: str) -> None:
    for key in hard:
        problem = _quota_key_problem(key)
        if problem:
            raise SpecError(f"{field}[{key}] cannot go into a ResourceQuota: {problem}",
                            condition_type="QuotaReady", reason="InvalidQuota")


def resource_quota(tenant, plan) -> dict:
    """The plan's quota with the tenant's overrides; SpecError for what a ResourceQuota cannot hold,
    so that nothing of the tenant is created rather than a namespace without its quota."""
    plan_quota, overrides = _resource_map(plan.spec.quota), _resource_map(tenant.spec.quota_overrides)
    _check_quota(plan_quota, f"TenantPlan {plan.name} spec.quota")
    _check_quota(overrides, "spec.quotaOverrides")
    hard = {**plan_quota, **overrides}
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta(tenant, QUOTA_NAME),
            "spec": {"hard": hard}}


def limit_range(tenant, plan) -> dict | None:
    limits = plan.spec.limits
    item: dict[str, Any] = {"type": "Container"}
    for field, key in (("default", "default"), ("default_request", "defaultRequest"), ("max", "max"),
                       ("min", "min")):
        resources = getattr(limits, field, None) if limits else None
        if resources:
            item[key] = _resource_map(resources)
    if len(item) == 1:
        return None
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": _meta(tenant, LIMITS_NAME),
            "spec": {"limits": [item]}}


def network_policy(tenant) -> dict | None:
    """Ingress only from the tenant's own namespace and from namespaces that belong to no tenant."""
    if not tenant.spec.network_isolation:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(tenant, NETWORK_POLICY_NAME),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": names.tenant_namespace(tenant.name)}}},
                {"namespaceSelector": {"matchExpressions": [
                    {"key": names.LABEL_TENANT, "operator": "DoesNotExist"}]}},
            ]}],
        },
    }


# Subjects that stand for everyone (every user, anonymous requests, every service account
# of the cluster): as owners they would hand the tenant namespace, and its database
# credentials, to all of them.
EVERYONE = {
    "User": frozenset({"system:anonymous"}),
    "Group": frozenset({"system:authenticated", "system:unauthenticated", "system:serviceaccounts"}),
}


def _check_owner(index: int, kind: str, name: str) -> None:
    if name in EVERYONE.get(kind, ()):
        raise SpecError(f"spec.owners[{index}]: {kind} {name} stands for everyone in the cluster; name the users, "
                        "groups or service accounts that administer the tenant",
                        condition_type="NamespaceReady", reason="OwnerNotAllowed")
    if kind == "ServiceAccount" and (len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name)):
        raise SpecError(f"spec.owners[{index}].name: {name!r} is not a service account name (lowercase letters, "
                        "digits, '-' and '.', such as deployer)", condition_type="NamespaceReady",
                        reason="InvalidOwner")


def owners_role_binding(tenant) -> dict | None:
    if not tenant.spec.owners:
        return None
    subjects = []
    for index, owner in enumerate(tenant.spec.owners):
        kind = value(owner.kind)
        _check_owner(index, kind, owner.name)
        subject = {"kind": kind, "name": owner.name, "apiGroup": OWNER_API_GROUP[kind]}
        if kind == "ServiceAccount":
            subject["namespace"] = owner.namespace
            del subject["apiGroup"]
        subjects.append(subject)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(tenant, OWNERS_BINDING_NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": names.OWNER_CLUSTER_ROLE},
        "subjects": subjects,
    }


def database_url(host: str, port: int, database: str, user: str | None, password: str) -> str:
    """`user` None: a URL with the password alone (`postgresql://:secret@host...`), the user given elsewhere."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address: without brackets its colons read as the port
    login = quote(user, safe='') if user is not None else ""
    return f"postgresql://{login}:{quote(password, safe='')}@{host}:{port}/{quote(database, safe='')}"


def database_secret(tenant, host: str, port: int, database: str, schema: str, password: str,
                    rotation: str | None = None) -> dict:
    user = names.role_name(tenant.name)
    fields = {
        "host": host,
        "port": str(port),
        "database": database,
        "user": user,
        "password": password,
        "schema": schema,
        "DATABASE_URL": database_url(host, port, database, user, password),
    }
    meta = _meta(tenant, names.DB_SECRET_NAME)
    if rotation:
        # Which rotation request this password answers; a new request value means a new password.
        meta["annotations"] = {names.ROTATE_PASSWORD_ANNOTATION: rotation}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {key: base64.b64encode(text.encode()).decode() for key, text in fields.items()},
    }


def shared_app_secret(settings: Settings, host: str, port: int, password: str, rotation: str | None) -> dict:
    """The shared workload's credentials: the password of every tenant login on the shared database.

    No user: the app logs in to each tenant as the login its routing entry names (app_logins.py).
    """
    database = settings.shared_database
    fields = {"host": host, "port": str(port), "database": database, "password": password,
              "DATABASE_URL": database_url(host, port, database, None, password)}
    metadata: dict[str, Any] = {"name": names.SHARED_APP_SECRET, "namespace": settings.shared_namespace,
                                "labels": _shared_labels()}
    if rotation:
        metadata["annotations"] = {names.ROTATED_FOR_ANNOTATION: rotation}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "data": {key: base64.b64encode(text.encode()).decode() for key, text in fields.items()}}


def shared_app_secret_ref(settings: Settings) -> ObjectRef:
    return ObjectRef(KINDS[("v1", "Secret")], names.SHARED_APP_SECRET, settings.shared_namespace)


def _shared_labels() -> dict[str, str]:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, "app.kubernetes.io/part-of": "tenant-operator"}


def routes_ref(settings: Settings) -> ObjectRef:
    """The shared workload's routing table: one ConfigMap, an entry per shared tenant."""
    return ObjectRef(KINDS[("v1", "ConfigMap")], ROUTES_CONFIGMAP, settings.shared_namespace)


ROUTE_STATES = ("active", "suspended", "moving")


def route_entry(tenant, database: str, state: str = "active",
                server: tuple[str, str, int] | None = None) -> str:
    """The shared workload's routing entry for one tenant (X-Tenant-ID): where and as whom, nothing secret.

    state: active (serve it), suspended (403), moving (503 until the move ends; the entry goes
    if the tenant lands on the isolated tier). `server`: (name, host, port) of the DatabaseServer
    it lives on, for an app that serves tenants on several servers. `login` is the app's login
    for this tenant alone (app_logins.py), `role` what that login SETs ROLE to.
    """
    if state not in ROUTE_STATES:
        raise ValueError(f"unknown route state {state!r}")
    entry: dict[str, Any] = {"schema": names.schema_name(tenant.name), "role": names.role_name(tenant.name),
                             "login": names.shared_app_login(tenant.name), "database": database, "state": state}
    if server is not None:
        entry.update(server=server[0], host=server[1], port=server[2])
    return json.dumps(entry, sort_keys=True)


# libyaml's parser where PyYAML was built with it: the pure-Python one was most of a render.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _environment(settings: Settings) -> jinja2.Environment:
    return _environment_for(str(settings.template_dir) if settings.template_dir else None)


@functools.lru_cache(maxsize=8)
def _environment_for(template_dir: str | None) -> jinja2.Environment:
    # One Environment keeps compiled templates; its loader still notices a template file that changed.
    search = [template_dir] if template_dir else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*search, str(BUILTIN_TEMPLATES)]),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly, not as an empty field
        autoescape=False,
        keep_trailing_newline=True,
    )


class TemplateError(Exception):
    """A tier template is missing or does not render to valid manifests."""


class SpecError(TemplateError):
    """The spec passed the CRD's schema, but the objects it asks for would be refused.

    Raised before anything is applied, so a tenant gets nothing rather than part of
    itself (a namespace and owners without the quota that should bound them). A
    TemplateError, so that a reconcile that catches only that already reports it as a
    False condition and applies nothing; `condition_type` and `reason` say which
    condition it belongs to, for a reconcile that reports it there.
    """

    def __init__(self, message: str, condition_type: str, reason: str):
        super().__init__(message)
        self.condition_type = condition_type
        self.reason = reason


def render_template(settings: Settings, template: str, variables: dict) -> list[dict]:
    try:
        text = _environment(settings).get_template(f"{template}.yaml.j2").render(**variables)
        documents = [doc for doc in yaml.load_all(text, Loader=_YAML_LOADER) if doc]
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {template!r} not found (looked for {template}.yaml.j2)") from None
    except (jinja2.TemplateError, yaml.YAMLError) as error:
        raise TemplateError(f"template {template!r} does not render: {error}") from None
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys() \
                or not isinstance(doc["metadata"], dict):
            raise TemplateError(f"template {template!r} rendered something that is not a Kubernetes object")
    return documents


def _workload_variables(workload) -> dict:
    return {
        "template": workload.template,
        "image": workload.image,
        "replicas": workload.replicas,
        "port": workload.port,
        "resources": {key: _resource_map(getattr(workload.resources, key))
                      for key in ("requests", "limits") if getattr(workload.resources, key)},
    }


def isolated_workloads(tenant, plan, settings: Settings) -> list[dict]:
    workload = plan.spec.workloads.isolated if plan.spec.workloads else None
    if workload is None:
        return []
    documents = render_template(settings, workload.template, {
        "tenant": tenant.name,
        "namespace": names.tenant_namespace(tenant.name),
        "labels": tenant_labels(tenant, "isolated"),
        "workload": _workload_variables(workload),
        "secret": names.DB_SECRET_NAME,
        "suspended": bool(tenant.spec.suspended),
    })
    for doc in documents:
        # A template cannot place objects outside the tenant's namespace.
        doc["metadata"]["namespace"] = names.tenant_namespace(tenant.name)
    return documents


def shared_infrastructure(settings: Settings, credentials: str = "") -> list[dict]:
    """The shared namespace, routing ConfigMap and workload (its Secret is shared_app_secret's).

    `credentials`: a digest of the app role's password the workload's pods must hold: a new
    one rolls them, since a Secret read into the environment is read only at start.
    """
    labels = _shared_labels()
    namespace_doc = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": settings.shared_namespace, "labels": labels}}
    routes = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": ROUTES_CONFIGMAP, "namespace": settings.shared_namespace, "labels": labels}}
    workloads = render_template(settings, "shared", {
        "namespace": settings.shared_namespace,
        "labels": labels,
        "image": settings.shared_image,
        "replicas": settings.shared_replicas,
        "routes": ROUTES_CONFIGMAP,
        "secret": names.SHARED_APP_SECRET,
        "credentials": credentials,
    })
    return [namespace_doc, routes, *workloads]


def tenant_objects(tenant, plan, settings: Settings, tier: str) -> dict[str, list[dict]]:
    """The Kubernetes objects of a tenant, by the condition they answer to (apart from the Secret)."""
    return {
        "namespace": _present([namespace(tenant, tier), network_policy(tenant)]),
        "quota": _present([resource_quota(tenant, plan), limit_range(tenant, plan)]),
        "access": _present([owners_role_binding(tenant)]),
        "workloads": isolated_workloads(tenant, plan, settings) if tier == "isolated" else [],
    }


def _present(items: Iterable[dict | None]) -> list[dict]:
    return [item for item in items if item is not None]
