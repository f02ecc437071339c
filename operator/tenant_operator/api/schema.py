"""DatabaseSchema: the application's migrations, and how they roll out across the tenants.

A TenantPlan names one (`spec.database.schema`); every tenant on the plan is born
with all its versions and follows when versions are added. Versions are whole
numbers, applied in numeric order whatever order they are listed in; they come
inline and/or from a ConfigMap whose keys are `<version>_<description>.sql`
(what a kustomize configMapGenerator over a migrations folder gives).

A migration's text is the tenant's SQL: it runs on a session logged in as the
tenant's own role, never on an admin session (infra/schema_history.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from tenant_operator.api.fields import (
    CONDITION_TYPE_PATTERN,
    REASON_PATTERN,
    ConfigMapName,
    LabelSelector,
    NamespaceName,
    SpecModel,
    StatusModel,
    Timestamp,
    plain,
)

ROLLED_OUT = "RolledOut"
HALTED = "Halted"
MAX_LISTED_FAILURES = 20
MAX_VERSION = 10**15
# A migration that must not run in a transaction (CREATE INDEX CONCURRENTLY) says so in a
# comment line of its own, anywhere before its first statement.
NO_TRANSACTION = re.compile(r"^\s*--\s*tenant-operator:\s*no-transaction\s*$", re.MULTILINE | re.IGNORECASE)
CONFIGMAP_KEY = re.compile(r"^(?P<version>[0-9]{1,15})_(?P<description>[A-Za-z0-9_.-]{1,200})\.sql$")


class InlineMigration(SpecModel):
    """One version of the schema, written in the DatabaseSchema itself."""

    version: int = Field(ge=1, le=MAX_VERSION, description="Whole number; versions apply in numeric order.")
    description: str = Field(min_length=1, max_length=200, description="What the version does, such as add_orders.")
    sql: str = Field(min_length=1, max_length=262144, description="The SQL, run as the tenant in its own schema.")


class ConfigMapRef(SpecModel):
    """A ConfigMap of migrations: keys `<version>_<description>.sql`, values the SQL."""

    namespace: NamespaceName = Field(
        description="Namespace of the ConfigMap (the operator must be allowed to read it).")
    name: ConfigMapName = Field(description="ConfigMap name.")


class MigrationsSpec(SpecModel):
    """Where the versions come from: inline, a ConfigMap, or both (a version in only one of them)."""

    config_map_ref: ConfigMapRef | None = Field(default=None, description="A ConfigMap of migrations.")
    inline: list[InlineMigration] = Field(
        default=[],
        max_length=500,
        description="Migrations written here.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"]},
    )


class CanarySpec(SpecModel):
    """Tenants that take a new version first; the rest follow once these stayed healthy long enough."""

    selector: LabelSelector = Field(description="The canary tenants.")
    healthy_seconds: int = Field(default=60, ge=0, le=86400,
                                 description="How long every canary must have served the new version first.")


class RolloutSpec(SpecModel):
    """How a new version reaches the tenants."""

    max_parallel: int = Field(default=5, ge=1, le=100, description="Tenants migrating at once.")
    max_failures: int = Field(default=1, ge=1, le=1000, description="Failed tenants at which the rollout halts.")
    canary: CanarySpec | None = Field(default=None, description="Tenants that go first.")
    paused: bool = Field(default=False, description="No tenant starts a new version (new tenants still get theirs).")


class DatabaseSchemaSpec(SpecModel):
    """The application's schema: its versions and how they roll out."""

    migrations: MigrationsSpec = Field(description="The versions of the schema.")
    rollout: RolloutSpec = Field(default=RolloutSpec(), description="How a new version reaches the tenants.")


class SchemaFailure(StatusModel):
    """A tenant whose migration failed: it keeps serving on the version before."""

    tenant: str = Field(description="Tenant name.")
    version: int = Field(description="The version that failed.")
    sqlstate: str | None = Field(default=None, description="PostgreSQL's SQLSTATE, if the server answered.")
    message: str = Field(default="", max_length=2048, description="The error.")


class SchemaCondition(StatusModel):
    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN, description="RolledOut or Halted.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(min_length=1, max_length=1024, pattern=REASON_PATTERN, description="CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition was set for.")
    last_transition_time: Timestamp = Field(description="When the status last changed.")


class DatabaseSchemaStatus(StatusModel):
    """Where the rollout stands, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last looked at.")
    latest_version: int | None = Field(default=None, description="The highest version.")
    tenants: int = Field(default=0, ge=0, description="Tenants on plans that name this schema.")
    at_latest: int = Field(default=0, ge=0, description="Tenants at the latest version.")
    pending: int = Field(default=0, ge=0, description="Tenants still to move to the latest version.")
    failed: int = Field(default=0, ge=0, description="Tenants whose migration failed.")
    failures: list[SchemaFailure] = Field(default=[], max_length=MAX_LISTED_FAILURES,
                                          description=f"The failures (at most {MAX_LISTED_FAILURES} listed).")
    paused_seen: bool | None = Field(default=None, description="spec.rollout.paused as last looked at.")
    conditions: list[SchemaCondition] = Field(
        default=[], description="RolledOut and Halted.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class DatabaseSchema(BaseModel):
    """A DatabaseSchema object as the operator sees it."""

    name: str
    generation: int = 0
    spec: DatabaseSchemaSpec
    status: DatabaseSchemaStatus = DatabaseSchemaStatus()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DatabaseSchema:
        metadata = body.get("metadata") or {}
        return cls(name=metadata["name"], generation=metadata.get("generation") or 0,
                   spec=plain(body.get("spec") or {}), status=plain(body.get("status") or {}))


class Migration(BaseModel):
    """One version, from wherever it came: what the history table records of it."""

    version: int
    description: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not NO_TRANSACTION.search(self.sql)


class MigrationsProblem(ValueError):
    """The versions cannot be put in order (told to a person in the DatabaseSchema's condition)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def ordered_migrations(spec: DatabaseSchemaSpec, config_map_data: Mapping[str, str] | None) -> list[Migration]:
    """Every version, inline and from the ConfigMap, in numeric order; a clash or a bad key refuses all."""
    found: dict[int, tuple[Migration, str]] = {}
    for item in spec.migrations.inline:
        found[item.version] = (Migration(version=item.version, description=item.description, sql=item.sql), "inline")
    for key, text in sorted((config_map_data or {}).items()):
        match = CONFIGMAP_KEY.match(key)
        if not match:
            raise MigrationsProblem("InvalidMigrationName",
                                    f"ConfigMap key {key!r} is not <version>_<description>.sql, "
                                    "such as 003_add_orders.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationsProblem("DuplicateVersion", f"version {version} is given twice ({found[version][1]} "
                                                        f"and ConfigMap key {key!r})")
        if not text.strip():
            raise MigrationsProblem("EmptyMigration", f"ConfigMap key {key!r} holds no SQL")
        found[version] = (Migration(version=version, description=match["description"], sql=text), f"key {key!r}")
    if not found:
        raise MigrationsProblem("NoMigrations", "the schema has no versions: add inline migrations or a ConfigMap")
    return [migration for _, (migration, _) in sorted(found.items())]
