"""Building blocks of the API models: patterns, CEL rules, quantities, quota names, enums.

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
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

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


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _rfc3339(value: str) -> str:
    if not RFC3339_PATTERN.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp such as 2024-05-01T12:00:00Z")
    return value


def unique(values: list[Any]) -> list[Any]:
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
        Field(json_schema_extra=validations(cel(f"self.matches(r'{pattern}')", message))),
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
            **validations(
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
    Field(max_length=MAX_RESOURCE_ENTRIES, json_schema_extra=validations(_RESOURCE_NAME_RULE)),
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
        json_schema_extra=validations(
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
SchemaName = _matching(
    DNS_SUBDOMAIN_PATTERN,
    "must be the name of a DatabaseSchema: lowercase letters, digits, '-' and '.', starting and ending "
    "with a letter or digit, such as shop",
    max_length=253,
)
ConfigMapName = _matching(
    DNS_SUBDOMAIN_PATTERN,
    "must be the name of a ConfigMap: lowercase letters, digits, '-' and '.', starting and ending "
    "with a letter or digit, such as shop-migrations",
    max_length=253,
)
# A server's name is what tenants pin in spec.database.server, and it goes into metric
# labels and file names: a DNS label, no dots.
ServerName = _matching(
    DNS_LABEL_PATTERN,
    "must be the name of a DatabaseServer: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit, such as default or pg-eu-1",
    max_length=63,
)
SecretName = _matching(
    DNS_SUBDOMAIN_PATTERN,
    "must be the name of a Secret: lowercase letters, digits, '-' and '.', starting and ending "
    "with a letter or digit, such as pg-eu-1-superuser",
    max_length=253,
)
TemplateName = _matching(
    r"^[a-z0-9][a-z0-9-]*$",
    "must be the name of a workload template: lowercase letters, digits and '-', starting with a "
    "letter or digit, such as web",
    max_length=63,
)


class Tier(StrEnum):
    """Where a tenant lives: shared (a schema in the shared database, served by the shared workloads) or isolated (a database and workloads of its own)."""  # noqa: E501 - the CRD description

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


class SpecModel(BaseModel):
    # forbid: a misspelt field in a test or a render input fails loudly (the API
    # server prunes unknown fields from real objects before we see them).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class StatusModel(BaseModel):
    # ignore: a status written by a newer operator must still load in an older one.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


DisplayName = Annotated[str, Field(max_length=128, description="A human-readable name.")]


class LabelSelector(SpecModel):
    """Objects whose labels include all of these (an empty selector selects every one)."""

    match_labels: dict[str, str] = Field(default={}, max_length=32, description="Labels an object must carry.")


def plain(value: Any) -> Any:
    """Deep copy into dicts and lists: kopf hands out read-only Mapping views."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
