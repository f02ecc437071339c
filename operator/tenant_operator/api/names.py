"""What a tenant's things are called: one place for every name, label and key.

A tenant name is a DNS label of at most 40 characters (the CRD enforces it), so
`tenant-<name>` is a valid namespace and `tenant_<name>` (hyphens become
underscores, which Kubernetes names cannot hold, so the mapping is one to one)
is a valid PostgreSQL identifier with room left for a quarantine suffix.
"""

import hashlib

GROUP = "tenancy.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

FIELD_MANAGER = "tenant-operator"
FINALIZER = f"{GROUP}/finalizer"

LABEL_TENANT = f"{GROUP}/tenant"
LABEL_TIER = f"{GROUP}/tier"
LABEL_PLAN = f"{GROUP}/plan"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "tenant-operator"

TENANT_NAME_MAX_LENGTH = 40
TENANT_NAME_PATTERN = r"^[a-z]([a-z0-9-]*[a-z0-9])?$"

DB_SECRET_NAME = "tenant-db"
OWNER_CLUSTER_ROLE = "tenancy-tenant-owner"
"""Owners' rights in their namespace: rbac/tenant-owner-clusterrole.yaml, installed with the operator."""
SHARED_APP_ROLE_PREFIX = "tenancy_app_"
SHARED_APP_LOGIN_PREFIX = "tenancy_app_for_"
SHARED_APP_SECRET = "shared-app-db"
"""Its credentials, in the shared namespace, mounted by the shared workload."""
ROTATED_FOR_ANNOTATION = f"{GROUP}/rotated-for"
"""On the shared app's Secret: which rotate-password request its password answers."""
ROTATE_PASSWORD_ANNOTATION = f"{GROUP}/rotate-password"
"""Set (or change) it on a Tenant to get a new database password: role and Secret change together."""
MOVE_MODE_ANNOTATION = f"{GROUP}/move-mode"
"""online, offline or auto: how this tenant's moves copy its data (the setting MOVE_MODE otherwise)."""


def tenant_namespace(tenant_name: str) -> str:
    return f"tenant-{tenant_name}"


def sql_name(tenant_name: str) -> str:
    """The one PostgreSQL identifier of a tenant: its role, schema and (isolated) database."""
    return "tenant_" + tenant_name.replace("-", "_")


def shared_app_login(tenant_name: str) -> str:
    """The shared workload's login for one tenant: a member of that tenant's role alone, while it is served.

    One login per tenant, not one for all: tenant code (a trigger, a DEFAULT) runs inside the
    app's transaction, and RESET ROLE there goes back to the login. A login that is a member
    of every tenant would hand that code every tenant (infra/shared_app.py). Never `tenant_...`.
    """
    return SHARED_APP_LOGIN_PREFIX + tenant_name.replace("-", "_")


def shared_app_login_of_role(role: str) -> str:
    """shared_app_login of the tenant whose role (sql_name) this is."""
    return SHARED_APP_LOGIN_PREFIX + role.removeprefix("tenant_")


def shared_app_role(shared_database: str) -> str:
    """The one app role of a shared database that earlier builds made: dropped at start-up.

    It was a member of every served tenant's role, which tenant code in the app's session could
    reach with RESET ROLE (see shared_app_login). Cut and hashed like it was, to find it.
    """
    name = SHARED_APP_ROLE_PREFIX + shared_database
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(shared_database.encode()).hexdigest()[:8]
    return f"{SHARED_APP_ROLE_PREFIX}{shared_database.encode()[:40].decode(errors='ignore')}_{digest}"


def storage_owner(tenant_name: str) -> str:
    """Who owns the tenant's objects while it is over its maxSize (infra/storage.py); never `tenant_...`."""
    return "tenancy_owner_" + tenant_name.replace("-", "_")


def role_name(tenant_name: str) -> str:
    return sql_name(tenant_name)


def schema_name(tenant_name: str) -> str:
    return sql_name(tenant_name)


def database_name(tenant_name: str) -> str:
    return sql_name(tenant_name)
