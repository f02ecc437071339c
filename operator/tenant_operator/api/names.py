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


def shared_app_role(shared_database: str) -> str:
    """The shared workload's login for one shared database: a member of each served shared tenant's role.

    One per shared database, not per server: two installs sharing a server must not share (and
    keep resetting) one password. Never `tenant_...`; a long database name is cut and hashed
    so the name stays one PostgreSQL identifier.
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
