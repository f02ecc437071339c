"""The tier migration state machine (shared <-> isolated), recorded in status.migration."""

from __future__ import annotations

# Steps in order. Before "switch" a failure rolls back to the source; from "switch" on the
# target is the tenant's home and the migration can only go forward.
STEPS = ("prepare", "freeze", "copy", "verify", "switch", "retire")
ROLLBACK_STEPS = ("prepare", "freeze", "copy", "verify")


def in_progress(status: dict | None) -> bool:
    return bool((status or {}).get("migration"))


def safe_to_delete(status: dict | None) -> bool:
    """Deletion waits while a migration runs: it may hold data in two places."""
    return not in_progress(status)
