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

# Maps whose values are quantities, which the API server canonicalises ("1000m" comes back
# as "1", "1024Mi" as "1Gi"): ResourceQuota hard, LimitRange limits, container resources.
QUANTITY_MAPS = {"hard", "requests", "limits", "default", "defaultRequest", "max", "min", "maxLimitRequestRatio"}


def _same_scalar(desired: Any, actual: Any, quantity: bool = False) -> bool:
    if desired == actual:
        return True
    if quantity and isinstance(desired, (str, int)) and isinstance(actual, (str, int)):
        try:
            return parse_quantity(desired) == parse_quantity(actual)
        except (ValueError, InvalidOperation, TypeError):
            return False
    numbers = (int, float, Decimal)
    if isinstance(desired, numbers) and isinstance(actual, numbers) and not isinstance(desired, bool) \
            and not isinstance(actual, bool):
        return Decimal(str(desired)) == Decimal(str(actual))
    return False


def contains(actual: Any, desired: Any, quantity: bool = False) -> bool:
    """Whether `actual` holds everything in `desired` (maps by key, lists item by item)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(key in actual and contains(actual[key], value, quantity=quantity or key in QUANTITY_MAPS)
                   for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(contains(a, d) for a, d in zip(actual, desired, strict=True))
    return _same_scalar(desired, actual, quantity)


def needs_apply(desired: dict, actual: dict | None) -> bool:
    if actual is None:
        return True
    ours = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind")}
    return not contains(actual, ours)
