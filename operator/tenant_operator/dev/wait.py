"""Waiting on a condition instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def wait_for(check: Callable[[], T], timeout: float = 60, interval: float = 0.2, what: str = "condition") -> T:
    """Call `check` until it returns something truthy; return that value.

    Exceptions from `check` count as "not yet" until the deadline, then the
    last one is reported, since a test author wants to see why it never held.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except Exception as error:  # noqa: BLE001 - reported below if it persists
            last_error = error
        if time.monotonic() > deadline:
            detail = f": last error {last_error!r}" if last_error else ""
            raise Timeout(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)
