"""The authority to act on one tenant's data during a move, proven again before each action.

Two things must both hold: this replica still leads (the Lease, judged by its own
monotonic clock, so a process that was paused finds out the moment it wakes), and
it still holds the tenant's PostgreSQL lock (tenantlock.py), which a new leader
takes away from a deposed one. A status checkpoint adds the third fence: it is
written with the resourceVersion that was read, so a writer that missed a change
gets 409 Conflict instead of overwriting it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

from tenant_operator.infra.tenantlock import LockLost, TenantLock


class Deposed(Exception):
    """This process may no longer act on the tenant: it stops before its next action."""


@dataclasses.dataclass
class Authority:
    leading: Callable[[], bool]
    lock: TenantLock

    def check(self, before: str) -> None:
        if not self.leading():
            raise Deposed(f"no longer the leader: not going on to {before}")
        try:
            self.lock.check()
        except LockLost as error:
            raise Deposed(f"{error}: not going on to {before}") from None


@contextlib.contextmanager
def authority_over(admin_dsn: str, tenant_name: str, leading: Callable[[], bool]) -> Iterator[Authority]:
    """The tenant's lock, taken (from a deposed holder too, when we lead) for the block."""
    lock = TenantLock(admin_dsn, tenant_name)
    lock.acquire(may_break=leading())
    with lock:
        yield Authority(leading, lock)
