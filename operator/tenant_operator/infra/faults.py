"""Where a test may make a migration fail; in the production operator, nothing happens here.

The points are named places in the migration (`step:<step>` after a step's first
effects, `copy:table` between two tables, `copy:done` after the rows arrived).
No setting reaches them: only a process started through `tenant_operator.dev.faults`,
which the test harness runs and the image's entry point never does, installs a hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Hook = Callable[[str, dict[str, Any]], None]
_hook: Hook | None = None


def install(hook: Hook) -> None:
    global _hook
    _hook = hook


def reached(point: str, **details: Any) -> None:
    if _hook is not None:
        _hook(point, details)
