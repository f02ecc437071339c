"""What a tenant role is granted besides its data: its plan's limits, and the shared app's way in.

Part of ensure_tenant_data (postgres.py), on its admin sessions: the role's
limits as `ALTER ROLE ... SET` defaults (api/limits.py), and the membership of
the shared database's app role (shared_app.py) that lets the shared workload
`SET ROLE` to the tenant exactly while the tenant is served.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tenant_operator.api import limits
from tenant_operator.api.names import shared_app_role
from tenant_operator.infra import sql
from tenant_operator.infra.connection import fetch_row


def app_role(conn: psycopg.Connection) -> str:
    """The shared app role of the session's database: admin sessions here are on the shared database."""
    return shared_app_role(conn.info.dbname)


def cut_shared_app(conn: psycopg.Connection, role: str, state: dict[str, Any]) -> list[str]:
    """The shared app may no longer act as the tenant: its membership goes, and so do its sessions.

    NOLOGIN does not stop SET ROLE by a member, and a session that already did SET ROLE
    keeps acting as the tenant until it ends. PostgreSQL does not show which role another
    session acts as, so every session of the app role ends; its pool opens new ones.
    """
    if not state["is_member"]:
        return []
    conn.execute(sql.revoke_membership(role, app_role(conn)))
    conn.execute(*sql.terminate_sessions(app_role(conn)))
    return ["shared app may no longer act as the tenant"]


def ensure_role_settings(conn: psycopg.Connection, role: str, state: dict[str, Any] | None,
                          wanted: dict[str, str]) -> list[str]:
    """The plan's limits as the role's defaults; a limit no longer in the plan goes back to the server's."""
    current = {}
    for entry in (state or {}).get("rolconfig") or []:
        parameter, _, value = entry.partition("=")
        if parameter in limits.ROLE_SETTINGS.values():
            current[parameter] = value
    actions = []
    for parameter in sorted(set(current) | set(wanted)):
        if parameter not in wanted:
            conn.execute(sql.alter_role_reset(role, parameter))
            actions.append(f"reset {parameter}")
        elif current.get(parameter) != wanted[parameter]:
            conn.execute(sql.alter_role_set(role, parameter, wanted[parameter]))
            actions.append(f"set {parameter} to {wanted[parameter]}")
    return actions


def serve_by_shared_app(conn: psycopg.Connection, role: str, state: dict[str, Any] | None, served: bool) -> list[str]:
    """The app role a member of the tenant's exactly while `served` (a shared tenant that may log in)."""
    if state is None:  # created just now: a member of nothing, looked at again
        state = fetch_row(conn, sql.role_state(role, member=app_role(conn)))
    if not served:
        return cut_shared_app(conn, role, state)
    if state["is_member"] or not state["member_exists"]:
        return []  # no app role (yet): the operator creates it at start-up, then every tenant is looked at
    conn.execute(sql.grant_membership(role, app_role(conn)))
    return ["shared app may act as the tenant"]
