"""Is the live object what we would apply? The diff that lets an unchanged tenant cost no writes.

Server-side apply of an unchanged manifest is a no-op inside the API server, but
it is still a write request, and at a thousand tenants those add up. So the
reconcile compares first: every field the operator sets must be present in the
live object with an equal value. Fields the server or other controllers add
(defaults, status, annotations of others) are not ours and are ignored.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity


def _same_scalar(desired: Any, actual: Any) -> bool:
    if desired == actual:
        return True
    # The API server canonicalises quantities ("1000m" comes back as "1", "1024Mi" as "1Gi").
    if isinstance(desired, (str, int)) and isinstance(actual, (str, int)):
        try:
            return parse_quantity(desired) == parse_quantity(actual)
        except (ValueError, InvalidOperation, TypeError):
            return False
    if isinstance(desired, (int, float, Decimal)) and isinstance(actual, (int, float, Decimal)):
        return Decimal(str(desired)) == Decimal(str(actual))
    return False


def contains(actual: Any, desired: Any) -> bool:
    """Whether `actual` holds everything in `desired` (maps by key, lists item by item)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(key in actual and contains(actual[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(contains(a, d) for a, d in zip(actual, desired))
    return _same_scalar(desired, actual)


def needs_apply(desired: dict, actual: dict | None) -> bool:
    if actual is None:
        return True
    ours = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind")}
    return not contains(actual, ours)
