"""What a tenant role is granted besides its data: its plan's limits, and the shared app's way in.

Part of ensure_tenant_data (postgres.py), on its admin sessions: the role's
limits as `ALTER ROLE ... SET` defaults (api/limits.py), and the tenant's own
login of the shared app (app_logins.py), a member of the tenant's role exactly
while the tenant is served, so that the shared workload can `SET ROLE` to it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tenant_operator.api import limits
from tenant_operator.api.names import shared_app_login_of_role
from tenant_operator.infra import app_logins, sql
from tenant_operator.infra.connection import fetch_row


def app_login(role: str) -> str:
    """The shared app's login for the tenant whose role this is."""
    return shared_app_login_of_role(role)


def cut_shared_app(conn: psycopg.Connection, role: str, state: dict[str, Any]) -> list[str]:
    """The shared app may no longer act as the tenant: its login's membership goes, and so do its sessions.

    NOLOGIN does not stop SET ROLE by a member, and a session that already did SET ROLE
    keeps acting as the tenant until it ends. The login serves this tenant alone, so
    ending its sessions touches no other tenant's requests.
    """
    if not state["is_member"]:
        return []
    login = app_login(role)
    conn.execute(sql.revoke_membership(role, login))
    conn.execute(*sql.terminate_sessions(login))
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


def serve_by_shared_app(conn: psycopg.Connection, role: str, state: dict[str, Any] | None, served: bool,
                        connection_limit: int) -> list[str]:
    """The tenant's app login a member of its role exactly while `served` (a shared tenant that may log in).

    `conn` is on the shared database. The login is made the first time the tenant is served
    on this server, with the tenant's connection limit: the app's connections count like its own.
    """
    if state is None:  # created just now: a member of nothing, looked at again
        state = fetch_row(conn, sql.role_state(role, member=app_login(role)))
    if not served:
        return cut_shared_app(conn, role, state)
    if state["is_member"]:
        return []
    actions = []
    if not state["member_exists"]:
        if not app_logins.make_login(conn, app_login(role), connection_limit):
            return []  # the app's password is not known yet: the tenant is looked at again once it is
        actions.append("made the shared app's login for the tenant")
    conn.execute(sql.grant_membership(role, app_login(role)))
    return [*actions, "shared app may act as the tenant"]
