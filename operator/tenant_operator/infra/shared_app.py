"""The shared workload's credentials on one server: every tenant login takes the Secret's password.

The logins themselves (one per shared tenant, a member of that tenant's role alone)
are made and granted with the tenant's role (role_grants.py, app_logins.py). Here,
per server of the shared tier: earlier builds' single app role is taken apart, and
the password of the Secret names.SHARED_APP_SECRET is given to every login there
when this process has not yet given it (start-up, a rotation, a Secret made again).
"""

from __future__ import annotations

from tenant_operator.infra import app_logins
from tenant_operator.infra.connection import DatabaseUnavailable, admin_session
from tenant_operator.infra.postgres import EnsureResult


def ensure_app_logins(shared_dsn: str, password: str) -> EnsureResult:
    """Every login on the server of `shared_dsn` (the admin's, on the shared database) takes `password`."""
    actions: list[str] = []
    try:
        with admin_session(shared_dsn) as conn:
            actions += app_logins.drop_old_app_role(conn)
            count = app_logins.set_password(conn, shared_dsn, password)
    except DatabaseUnavailable:
        app_logins.forget(shared_dsn)
        raise
    if count:
        actions.append(f"set the password of {count} tenant login(s) of the shared app")
    return EnsureResult(tuple(actions))
