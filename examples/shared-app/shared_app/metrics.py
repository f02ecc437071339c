"""Request counts and durations per tenant, in Prometheus' text format.

A label value is only ever a tenant the routing table named; every other
request (no header, an unknown or hostile name) counts as "unknown", so a
client cannot grow the number of series by inventing tenant names. Written by
hand rather than with prometheus_client to keep the image's dependencies to
the database driver.
"""

from __future__ import annotations

import threading

from shared_app.routing import Route

UNKNOWN = "unknown"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def tenant_label(route: Route | None) -> str:
    """The tenant label of a request: its route's tenant, or "unknown" when it had none."""
    return route.tenant if route is not None else UNKNOWN


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters shared by the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._seconds: dict[str, tuple[float, int]] = {}

    def observe(self, tenant: str, code: int, seconds: float) -> None:
        with self._lock:
            self._requests[tenant, code] = self._requests.get((tenant, code), 0) + 1
            total, count = self._seconds.get(tenant, (0.0, 0))
            self._seconds[tenant] = (total + seconds, count + 1)

    def requests(self, tenant: str, code: int) -> int:
        with self._lock:
            return self._requests.get((tenant, code), 0)

    def tenants(self) -> frozenset[str]:
        """Every tenant label in use."""
        with self._lock:
            return frozenset(tenant for tenant, _ in self._requests)

    def render(self) -> str:
        with self._lock:
            requests = sorted(self._requests.items())
            seconds = sorted(self._seconds.items())
        lines = [
            "# HELP shared_app_requests_total Requests answered, by tenant and HTTP status code.",
            "# TYPE shared_app_requests_total counter",
        ]
        lines += [f'shared_app_requests_total{{tenant="{_escape(tenant)}",code="{code}"}} {n}'
                  for (tenant, code), n in requests]
        lines += [
            "# HELP shared_app_request_seconds Time to answer a request, by tenant.",
            "# TYPE shared_app_request_seconds summary",
        ]
        for tenant, (total, count) in seconds:
            lines.append(f'shared_app_request_seconds_sum{{tenant="{_escape(tenant)}"}} {total!r}')
            lines.append(f'shared_app_request_seconds_count{{tenant="{_escape(tenant)}"}} {count}')
        return "\n".join(lines) + "\n"
