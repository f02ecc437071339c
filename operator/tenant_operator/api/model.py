"""The Tenant API: pydantic models of TenantPlan and Tenant, the one source of truth.

The CRDs in crds/ are generated from these models (tenant_operator.api.crds), so a
constraint belongs here: in Python it guards the operator's own reads and writes,
in the CRD it lets the API server refuse a bad spec before the operator sees it.
Rules pydantic cannot express in JSON Schema are given twice, as a Python
validator and as a CEL rule (`x-kubernetes-validations`) beside it.

Where a person types a value, a rule's message says what is allowed, with an
example: the API server's own message for an OpenAPI `pattern` only repeats
the regular expression. So names and quantities are checked by CEL rules with
such a message (`_matching`), and OpenAPI patterns are kept for the status,
which only the operator writes.

Docstrings of models and `description`s of fields are user documentation: they
become the CRD's descriptions, shown by `kubectl explain`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

# Condition types, as they appear in status.conditions[].type.
READY = "Ready"
NAMESPACE_READY = "NamespaceReady"
QUOTA_READY = "QuotaReady"
DATABASE_READY = "DatabaseReady"
WORKLOADS_READY = "WorkloadsReady"
MIGRATING = "Migrating"

# A strict subset of Kubernetes' quantity grammar: no sign (a negative quota or
# limit is meaningless), no signed exponent, and at most two exponent digits
# (a longer one can overflow the parser's int64, which only the API server
# would notice). The CRD's CEL rule and the Python validator share it, so the
# API server and the operator agree on every value.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][0-9]{1,2})?$"
QUANTITY_MAX_LENGTH = 64
QUANTITY_MESSAGE = "must be a non-negative Kubernetes quantity such as 500m, 2 or 1Gi"
# Upper case only after the first character, as in hugepages-2Mi or an extended
# resource such as example.com/GPU; a key such as CPU stays refused, as
# ResourceQuota itself refuses it.
RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"
RESOURCE_NAME_MAX_LENGTH = 253
RESOURCE_NAME_RULES = (
    f"at most {RESOURCE_NAME_MAX_LENGTH} letters, digits, '-', '_', '.' or '/', starting with a lowercase "
    "letter or digit and ending with a letter or digit, such as cpu, requests.memory, hugepages-2Mi "
    "or count/deployments.apps"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# The API server checks `format: date-time`; this mirrors it so that a bad
# timestamp fails in the operator, not as a 422 on the status patch.
RFC3339_PATTERN = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)

# CEL cost is estimated from the largest value a schema admits: every map, list
# and string a rule touches is bounded, or the API server refuses the CRD.
MAX_RESOURCE_ENTRIES = 64
MAX_OWNERS = 50


def cel(rule: str, message: str) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry, for `json_schema_extra`."""
    return {"rule": rule, "message": message}


def _validations(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _rfc3339(value: str) -> str:
    if not RFC3339_PATTERN.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp such as 2024-05-01T12:00:00Z")
    return value


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("items must be unique")
    return values


def _matches(pattern: str, message: str) -> AfterValidator:
    """The Python half of a CEL `matches` rule: same pattern, same message."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        # fullmatch: Python's `$` also matches before a trailing newline, RE2's does not.
        if not regex.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _matching(pattern: str, message: str, max_length: int) -> Any:
    """A string type checked by a CEL rule instead of an OpenAPI `pattern`.

    A pattern failure reads "should match '^[a-z0-9]([-a-z0-9]*...'"; the rule's
    message says in words what is allowed. maxLength stays OpenAPI: its message
    ("may not be more than 63 bytes") is clear, and CEL needs the bound.
    """
    return Annotated[
        str,
        StringConstraints(max_length=max_length),
        _matches(pattern, message),
        Field(json_schema_extra=_validations(cel(f"self.matches(r'{pattern}')", message))),
    ]


def _number_as_text(value: Any) -> Any:
    """`pods: 20` means `pods: "20"`, as in a ResourceQuota; the operator always sees text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# int-or-string in the CRD, so a YAML number is accepted. The CEL rule reads an
# int as what it is; a string must match QUANTITY_PATTERN (no OpenAPI pattern: its
# failure would block CEL and hide this message) and parse as a quantity.
Quantity = Annotated[
    str,
    BeforeValidator(_number_as_text),
    StringConstraints(max_length=QUANTITY_MAX_LENGTH),
    _matches(QUANTITY_PATTERN, QUANTITY_MESSAGE),
    Field(
        description="A non-negative Kubernetes quantity, such as 500m, 2, 1Gi or 10; a number or a string.",
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            **_validations(
                cel(
                    f"type(self) == int ? self >= 0 : (self.matches(r'{QUANTITY_PATTERN}') && isQuantity(self))",
                    QUANTITY_MESSAGE,
                ),
            ),
        },
    ),
]

ResourceName = Annotated[
    str,
    StringConstraints(max_length=RESOURCE_NAME_MAX_LENGTH),
    _matches(RESOURCE_NAME_PATTERN, f"resource names must be {RESOURCE_NAME_RULES}"),
]

# The key rule reaches the CRD as this CEL rule (OpenAPI has no key schema there).
# Nothing else in the API server's answer names the offending key, so the
# messageExpression does (the first one: a joined list of them all costs too
# much in CEL's static estimate). CEL strings are double-quoted here because the
# text holds '-'.
_FIRST_BAD_RESOURCE_NAME = (
    f"self.filter(k, size(k) > {RESOURCE_NAME_MAX_LENGTH} || !k.matches('{RESOURCE_NAME_PATTERN}'))[0]"
)
_RESOURCE_NAME_RULE = {
    **cel(
        f"self.all(k, size(k) <= {RESOURCE_NAME_MAX_LENGTH} && k.matches('{RESOURCE_NAME_PATTERN}'))",
        f"resource names must be {RESOURCE_NAME_RULES}",
    ),
    "messageExpression": (
        f"\"invalid resource name '\" + {_FIRST_BAD_RESOURCE_NAME}"
        f" + \"': resource names must be {RESOURCE_NAME_RULES}\""
    ),
}
ResourceMap = Annotated[
    dict[ResourceName, Quantity],
    Field(max_length=MAX_RESOURCE_ENTRIES, json_schema_extra=_validations(_RESOURCE_NAME_RULE)),
]

# What a ResourceQuota counts without a domain prefix (Kubernetes' validation of spec.hard),
# besides hugepages-<size>; a name with a domain (count/deployments.apps, example.com/gpu)
# is counted too. The looser resource-name rule above lets more through.
QUOTA_RESOURCES = (
    "configmaps", "cpu", "ephemeral-storage", "limits.cpu", "limits.ephemeral-storage", "limits.memory", "memory",
    "persistentvolumeclaims", "pods", "replicationcontrollers", "requests.cpu", "requests.ephemeral-storage",
    "requests.memory", "requests.storage", "resourcequotas", "secrets", "services", "services.loadbalancers",
    "services.nodeports",
)
QUOTA_HUGEPAGES_PREFIXES = ("hugepages-", "requests.hugepages-")
QUOTA_NAME_MESSAGE = (
    "a ResourceQuota counts only " + ", ".join(QUOTA_RESOURCES)
    + ", hugepages-<size>, or names with a domain such as count/deployments.apps or example.com/gpu"
)
# Counted in whole numbers (Kubernetes' IsIntegerResourceName): objects, and extended
# resources - a name with a domain outside kubernetes.io that is not requests.<...>.
QUOTA_OBJECT_COUNTS = (
    "configmaps", "persistentvolumeclaims", "pods", "replicationcontrollers", "resourcequotas", "secrets",
    "services", "services.loadbalancers", "services.nodeports",
)
WHOLE_NUMBER_MESSAGE = "objects (pods, services, count/...) and extended resources are counted in whole numbers"


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


_CEL_QUOTA_NAME = (
    f"(k.contains('/') || k in {_cel_list(QUOTA_RESOURCES)}"
    + "".join(f" || k.startsWith('{prefix}')" for prefix in QUOTA_HUGEPAGES_PREFIXES) + ")"
)
_CEL_WHOLE = (
    f"(k in {_cel_list(QUOTA_OBJECT_COUNTS)}"
    " || (k.contains('/') && !k.startsWith('requests.') && !k.contains('kubernetes.io/')))"
)
# A value that is no quantity at all is left to the Quantity rule, so it gets one message.
# CEL's isInteger() is false for every binary suffix (1Ki) and beyond an int64: a whole
# number before a binary suffix is whole, and from 1E up a count means "no limit" (and
# ResourceQuota takes it). _whole() below says the same in Python.
WHOLE_ENOUGH = 10**18
BINARY_SUFFIXED = r"^[0-9.]+[KMGTPE]i$"
WHOLE_BINARY = r"^[0-9]+[KMGTPE]i$"
_CEL_WHOLE_VALUE = (
    "(type(self[k]) == int || !isQuantity(self[k]) || quantity(self[k]).isInteger()"
    f" || self[k].matches('{WHOLE_BINARY}') || quantity(self[k]).compareTo(quantity('1E')) >= 0)"
)


def quota_name_allowed(key: str) -> bool:
    return "/" in key or key in QUOTA_RESOURCES or key.startswith(QUOTA_HUGEPAGES_PREFIXES)


def counted_whole(key: str) -> bool:
    return key in QUOTA_OBJECT_COUNTS or (
        "/" in key and not key.startswith("requests.") and "kubernetes.io/" not in key)


def _whole(value: str) -> bool:
    from kubernetes.utils.quantity import parse_quantity

    amount = parse_quantity(value)
    if amount >= WHOLE_ENOUGH:
        return True
    if re.fullmatch(BINARY_SUFFIXED, value):
        return re.fullmatch(WHOLE_BINARY, value) is not None
    return amount == amount.to_integral_value()


def _quota_entries(quota: dict[str, str]) -> dict[str, str]:
    for key, value in quota.items():
        if not quota_name_allowed(key):
            raise ValueError(f"{key!r} cannot go into a ResourceQuota: {QUOTA_NAME_MESSAGE}")
        if counted_whole(key) and not _whole(value):
            raise ValueError(f"{key}: {value} is not a whole number: {WHOLE_NUMBER_MESSAGE}")
    return quota


QuotaMap = Annotated[
    dict[ResourceName, Quantity],
    Field(
        max_length=MAX_RESOURCE_ENTRIES,
        json_schema_extra=_validations(
            _RESOURCE_NAME_RULE,
            {
                **cel(f"self.all(k, {_CEL_QUOTA_NAME})", QUOTA_NAME_MESSAGE),
                "messageExpression": (
                    f"\"'\" + self.filter(k, !{_CEL_QUOTA_NAME})[0]"
                    f" + \"' cannot go into a ResourceQuota: {QUOTA_NAME_MESSAGE}\""
                ),
            },
            {
                **cel(f"self.all(k, !{_CEL_WHOLE} || {_CEL_WHOLE_VALUE})", WHOLE_NUMBER_MESSAGE),
                "messageExpression": (
                    f"self.filter(k, {_CEL_WHOLE} && !{_CEL_WHOLE_VALUE})[0]"
                    f" + \" is not a whole number: {WHOLE_NUMBER_MESSAGE}\""
                ),
            },
        ),
    ),
    AfterValidator(_quota_entries),
]

Timestamp = Annotated[str, AfterValidator(_rfc3339), Field(json_schema_extra={"format": "date-time"})]

# A plan name goes into the label tenancy.dev/plan: a DNS subdomain of at most 63.
PlanName = _matching(
    DNS_SUBDOMAIN_PATTERN,
    "must be the name of a TenantPlan: lowercase letters, digits, '-' and '.', starting and ending "
    "with a letter or digit, such as professional",
    max_length=63,
)
NamespaceName = _matching(
    DNS_LABEL_PATTERN,
    "must be a namespace name: lowercase letters, digits and '-', starting and ending with a letter "
    "or digit, such as ci",
    max_length=63,
)
TemplateName = _matching(
    r"^[a-z0-9][a-z0-9-]*$",
    "must be the name of a workload template: lowercase letters, digits and '-', starting with a "
    "letter or digit, such as web",
    max_length=63,
)


class Tier(StrEnum):
    """Where a tenant lives: shared (a schema in the shared database, served by the shared workloads) or isolated (a database and workloads of its own)."""

    SHARED = "shared"
    ISOLATED = "isolated"


class OwnerKind(StrEnum):
    """The kind of subject bound to the admin role in the tenant namespace."""

    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class ReclaimPolicy(StrEnum):
    """What deleting the Tenant does to its data."""

    RETAIN = "Retain"
    DELETE = "Delete"
    SNAPSHOT = "Snapshot"


class Phase(StrEnum):
    """A one-word summary of the tenant's state; the conditions tell why."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    MIGRATING = "Migrating"
    SUSPENDED = "Suspended"
    DEGRADED = "Degraded"
    DELETING = "Deleting"
    FAILED = "Failed"


class _Spec(BaseModel):
    # forbid: a misspelt field in a test or a render input fails loudly (the API
    # server prunes unknown fields from real objects before we see them).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Status(BaseModel):
    # ignore: a status written by a newer operator must still load in an older one.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


DisplayName = Annotated[str, Field(max_length=128, description="A human-readable name.")]


# --- TenantPlan ---------------------------------------------------------------


class LimitsSpec(_Spec):
    """LimitRange values for every container in the tenant namespace."""

    default: ResourceMap | None = Field(default=None, description="Default limits of a container that sets none.")
    default_request: ResourceMap | None = Field(
        default=None, description="Default requests of a container that sets none."
    )
    max: ResourceMap | None = Field(default=None, description="Largest limits a container may set.")
    min: ResourceMap | None = Field(default=None, description="Smallest requests a container may set.")


class ResourcesSpec(_Spec):
    """Container resources of the tier's workloads."""

    requests: ResourceMap = Field(default={}, description="Container resource requests.")
    limits: ResourceMap = Field(default={}, description="Container resource limits.")


class WorkloadSpec(_Spec):
    """The workloads rendered for a tier: which template, and its sizing."""

    template: TemplateName = Field(default="web", description="Name of the workload template the operator renders.")
    image: str = Field(
        default="nginxinc/nginx-unprivileged:1.27", min_length=1, max_length=512, description="Container image."
    )
    replicas: int = Field(default=1, ge=0, le=50, description="Number of replicas.")
    port: int = Field(default=8080, ge=1, le=65535, description="Container port the workload listens on.")
    resources: ResourcesSpec = Field(default=ResourcesSpec(), description="Container resource requests and limits.")


class TierWorkloads(_Spec):
    """Workloads per tier; a tier without an entry gets none of its own."""

    shared: WorkloadSpec | None = Field(default=None, description="Workloads of the shared tier.")
    isolated: WorkloadSpec | None = Field(default=None, description="Workloads of each isolated tenant.")


class TenantPlanSpec(_Spec):
    """A plan tenants subscribe to: quotas, container limits, allowed tiers and workloads."""

    display_name: DisplayName | None = None
    quota: QuotaMap = Field(
        default={}, description="ResourceQuota hard limits of each tenant namespace, such as cpu, pods or requests.storage."
    )
    limits: LimitsSpec = Field(default=LimitsSpec(), description="LimitRange container defaults and bounds.")
    tiers: Annotated[list[Tier], AfterValidator(_unique)] = Field(
        default=[Tier.SHARED],
        min_length=1,
        max_length=len(Tier),
        json_schema_extra={"uniqueItems": True},
        description="Tiers a tenant on this plan may use.",
    )
    workloads: TierWorkloads = Field(default=TierWorkloads(), description="Workloads rendered per tier.")


# --- Tenant -------------------------------------------------------------------


OWNER_NAMESPACE_REQUIRED = "an owner of kind ServiceAccount needs the namespace the service account lives in"
OWNER_NAMESPACE_FORBIDDEN = "only an owner of kind ServiceAccount has a namespace; users and groups are cluster-wide"


class Owner(_Spec):
    """A subject that administers the tenant namespace."""

    # Two rules, each pointing at .namespace with the reason Kubernetes uses for
    # its own fields: "owners[0].namespace: Required value: ..." / "Forbidden: ...".
    model_config = ConfigDict(
        json_schema_extra=_validations(
            {
                **cel("self.kind != 'ServiceAccount' || has(self.namespace)", OWNER_NAMESPACE_REQUIRED),
                "fieldPath": ".namespace",
                "reason": "FieldValueRequired",
            },
            {
                **cel("self.kind == 'ServiceAccount' || !has(self.namespace)", OWNER_NAMESPACE_FORBIDDEN),
                "fieldPath": ".namespace",
                "reason": "FieldValueForbidden",
            },
        )
    )

    kind: OwnerKind = Field(description="User, Group or ServiceAccount.")
    name: str = Field(min_length=1, max_length=253, description="Name of the user, group or service account.")
    namespace: NamespaceName | None = Field(
        default=None, description="Namespace of the service account; only for kind ServiceAccount."
    )

    @model_validator(mode="after")
    def _namespace_iff_service_account(self) -> Owner:
        if self.kind == OwnerKind.SERVICE_ACCOUNT and self.namespace is None:
            raise ValueError(OWNER_NAMESPACE_REQUIRED)
        if self.kind != OwnerKind.SERVICE_ACCOUNT and self.namespace is not None:
            raise ValueError(OWNER_NAMESPACE_FORBIDDEN)
        return self


class DatabaseSpec(_Spec):
    """The tenant's PostgreSQL data."""

    reclaim_policy: ReclaimPolicy = Field(
        default=ReclaimPolicy.RETAIN,
        description="On deletion: Retain keeps the data, Delete drops it, Snapshot dumps it, then drops it.",
    )


class TenantSpec(_Spec):
    """The desired state of a tenant."""

    display_name: DisplayName | None = None
    plan: PlanName = Field(description="Name of the TenantPlan the tenant is on.")
    tier: Tier = Field(default=Tier.SHARED, description="Tier the tenant should live in; changing it migrates the tenant.")
    owners: list[Owner] = Field(
        default=[], max_length=MAX_OWNERS, description="Subjects bound to the admin role in the tenant namespace."
    )
    quota_overrides: QuotaMap = Field(default={}, description="Per-tenant entries replacing the plan's quota.")
    database: DatabaseSpec = Field(default=DatabaseSpec(), description="The tenant's database.")
    suspended: bool = Field(
        default=False, description="Scale the tenant's workloads to zero and block its database login, keeping all data."
    )
    network_isolation: bool = Field(
        default=True, description="Refuse traffic from other tenants' namespaces to the tenant namespace."
    )


# --- Tenant status ------------------------------------------------------------


class Condition(_Status):
    """One aspect of the tenant's state, Kubernetes style."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN, description="Type of condition, such as Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1, max_length=1024, pattern=REASON_PATTERN, description="CamelCase reason for the last transition."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition was set for.")
    last_transition_time: Timestamp = Field(description="When the status last changed.")


class DatabaseStatus(_Status):
    """Where the tenant's data lives; the credentials are in the Secret."""

    host: str | None = Field(default=None, description="PostgreSQL host.")
    port: int | None = Field(default=None, ge=1, le=65535, description="PostgreSQL port.")
    database: str | None = Field(default=None, description="Database name.")
    schema_name: str | None = Field(default=None, alias="schema", description="Schema name.")
    secret_name: str | None = Field(default=None, description="Secret in the tenant namespace holding the credentials.")


class TableProgress(_Status):
    """Copy progress of one table during a migration."""

    name: str = Field(description="Table name.")
    rows: int = Field(ge=0, description="Rows in the source table.")
    copied: int = Field(default=0, ge=0, description="Rows copied so far.")
    checksum: str | None = Field(default=None, description="Checksum of the source table, once verified.")


class MigrationStatus(_Status):
    """A tier migration in progress, recorded so that it resumes after a restart."""

    source: Tier = Field(alias="from", description="Tier the tenant is leaving.")
    target: Tier = Field(alias="to", description="Tier the tenant is moving to.")
    step: str = Field(max_length=63, description="Current step of the migration.")
    started: Timestamp = Field(description="When the migration started.")
    tables: list[TableProgress] = Field(default=[], description="Per-table copy progress.")
    rows_copied: int = Field(default=0, ge=0, description="Rows copied so far, all tables.")
    freeze_started: Timestamp | None = Field(default=None, description="When writes to the source were frozen.")
    freeze_seconds: float | None = Field(default=None, ge=0, description="How long writes were frozen, once switched.")
    quarantine: str | None = Field(default=None, max_length=63,
                                   description="Name the source schema or database was renamed to at the switch.")
    unfrozen: bool | None = Field(default=None,
                                  description="The switch gave the tenant its login back (on the target).")
    retired: bool | None = Field(default=None, description="The quarantined source was announced.")
    message: str | None = Field(default=None, description="Details of the current step.")


class TenantStatus(_Status):
    """The observed state of a tenant, written only by the operator."""

    phase: Phase = Field(default=Phase.PENDING, description="Summary of the tenant's state.")
    tier: Tier | None = Field(default=None, description="Tier the tenant lives in now; differs from spec during a migration.")
    namespace: str | None = Field(default=None, description="The tenant namespace.")
    database: DatabaseStatus | None = Field(default=None, description="Where the tenant's data lives.")
    conditions: list[Condition] = Field(
        default=[],
        description="Ready, NamespaceReady, QuotaReady, DatabaseReady, WorkloadsReady and Migrating.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    migration: MigrationStatus | None = Field(default=None, description="The tier migration in progress, if any.")

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --- Whole objects ------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Deep copy into dicts and lists: kopf hands out read-only Mapping views."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class Tenant(BaseModel):
    """A Tenant object as the operator sees it: name, generation, spec and status."""

    name: str
    generation: int = 0
    spec: TenantSpec
    status: TenantStatus = TenantStatus()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Tenant:
        metadata = body.get("metadata") or {}
        return cls(
            name=metadata["name"],
            generation=metadata.get("generation") or 0,
            spec=_plain(body.get("spec") or {}),
            status=_plain(body.get("status") or {}),
        )


class TenantPlan(BaseModel):
    """A TenantPlan object as the operator sees it: name and spec."""

    name: str
    spec: TenantPlanSpec

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TenantPlan:
        metadata = body.get("metadata") or {}
        return cls(name=metadata["name"], spec=_plain(body.get("spec") or {}))
