"""The shared workload's credentials: its tenant logins and their Secret, kept matching, rotated on request.

The Secret (names.SHARED_APP_SECRET in the shared namespace) holds the password;
every tenant login of the shared app (infra/app_logins.py) is made to take it.
A new password is made when there is none, or when someone asks:
`kubectl annotate secret shared-app-db tenancy.dev/rotate-password=<new value>`
(as a Tenant's own rotation works): the logins get it, then the Secret, which then
says which request it answers (tenancy.dev/rotated-for), and the shared workload's
pods roll to read it. Looked at when the operator starts and every
CHECK_SECONDS after, by the leader.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from tenant_operator.api import names
from tenant_operator.api.settings import Settings
from tenant_operator.desired import render
from tenant_operator.desired.drift import needs_apply
from tenant_operator.infra import metrics, postgres, shared_app
from tenant_operator.infra.connection import DatabaseUnavailable
from tenant_operator.infra.kube import KubeAPI
from tenant_operator.infra.servers import Server
from tenant_operator.reconcile.state import annotation, secret_password

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0


def ensure_credentials(kube: KubeAPI, settings: Settings, others: Iterable[Server] = ()) -> str:
    """Logins and Secret as they must be; a digest of the password the shared workload's pods must hold.

    The digest (of SHA-256, not the password) goes into the pods' template: whenever the
    password changes, by a rotation or because the Secret was lost and made again, the pods roll.
    Every login has the same password on every server of the shared tier (`others`: those
    besides the operator's own), so that one app reaches each tenant where its routing entry says.
    """
    ref = render.shared_app_secret_ref(settings)
    secret = kube.read(ref)
    password = secret_password(secret)
    requested = annotation(secret, names.ROTATE_PASSWORD_ANNOTATION)
    answered = annotation(secret, names.ROTATED_FOR_ANNOTATION)
    rotating = bool(password and requested and requested != answered)
    if password is None or rotating:
        password = postgres.new_password()
    result = shared_app.ensure_app_logins(settings.admin_dsn(), password)
    metrics.count_write("postgres", len(result.actions))
    if result.changed:
        log.info("shared app: %s", "; ".join(result.actions))
    rotation = requested if rotating else answered
    host, port = settings.tenant_endpoint()
    desired = render.shared_app_secret(settings, host, port, password, rotation)
    if needs_apply(desired, secret):
        kube.apply(desired)
    if rotating:
        log.info("shared app: new password (rotation %r); the shared workload's pods roll", requested)
    for server in others:
        try:
            done = shared_app.ensure_app_logins(server.admin_dsn(), password)
        except DatabaseUnavailable as error:
            log.warning("shared app logins on DatabaseServer %s: %s", server.name, error)
            continue
        metrics.count_write("postgres", len(done.actions))
    return hashlib.sha256(password.encode()).hexdigest()[:16]
