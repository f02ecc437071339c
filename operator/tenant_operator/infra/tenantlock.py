"""A PostgreSQL advisory lock per tenant: only its holder acts on the tenant's data in a move.

Leadership alone does not fence: a leader that was paused (SIGSTOP, a long GC, a
frozen VM) wakes with its statements half sent and its checks already passed.
So whoever runs a migration step, rolls one back or settles one for a deletion
holds this lock on a session of its own in the shared database, and runs its
destructive statements (DROP, RENAME of the tenant's data) on that very session.
If the lock was taken away, that session is gone, and so is every statement that
would have run on it.

Taking it away: a holder is another process when its session's application_name
(set on every session the operator opens, `connection.identify`) names another
identity. The caller decides whether it may break the lock (the leader, which
the Lease proves is the only one entitled to act); breaking ends every session of
the old holder, its COPY and pg_restore sessions as well as the one holding the
lock, and the holder, if it ever wakes, finds its lock session dead and stops.
"""

from __future__ import annotations

import logging

import psycopg

from tenant_operator.infra import connection

log = logging.getLogger(__name__)

# The first key of pg_advisory_lock(int, int): which kind of lock; the second is the tenant's.
LOCK_CLASS = 0x74656E  # "ten"


class LockBusy(Exception):
    """Another process holds the tenant's lock and may not be displaced."""


class LockLost(Exception):
    """The lock session ended: someone broke our lock, or the server went away."""


class TenantLock:
    """The lock for one tenant, held from acquire() until release() (or the session's end)."""

    def __init__(self, dsn: str, tenant: str):
        self.dsn = dsn
        self.tenant = tenant
        self._session: psycopg.Connection | None = None

    @property
    def session(self) -> psycopg.Connection:
        """The session holding the lock: destructive statements run on it, and die with it."""
        if self._session is None:
            raise LockLost(f"the lock of tenant {self.tenant} is not held by this process")
        return self._session

    def acquire(self, may_break: bool) -> None:
        """Take the lock; a holder of another identity is displaced only when `may_break`."""
        try:
            # A kept admin session: a rollout takes a thousand tenants' locks, a connection each was most of its cost.
            self._session = connection.take_admin_session(self.dsn)
        except connection.DatabaseUnavailable as error:
            raise connection.DatabaseUnavailable(f"cannot take the lock of tenant {self.tenant}: {error}") from None
        try:
            if self._try():
                return
            holder = self._holder()
            if holder is None and self._try():
                return
            if holder is None or holder == connection.application_name() or not may_break:
                raise LockBusy(f"another session ({holder or 'unknown'}) holds the lock of tenant {self.tenant}")
            ended = self._end_sessions_of(holder)
            log.warning("tenant %s: took the tenant lock from %s (ended %d of its sessions)", self.tenant, holder,
                        ended)
            if not self._try():
                raise LockBusy(f"the lock of tenant {self.tenant} is still held after ending {holder}'s sessions")
        except BaseException:
            self.release()
            raise

    def _try(self) -> bool:
        return bool(connection.first_row(self.session.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                                            [LOCK_CLASS, self.tenant]))[0])

    def _holder(self) -> str | None:
        # pg_locks shows a two-key advisory lock as classid = key 1, objid = key 2 (as oid), objsubid 2.
        row = self.session.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.database = ("
            "  SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s::bigint::oid AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid",
            [LOCK_CLASS, self.tenant]).fetchone()
        return row[0] if row else None

    def _end_sessions_of(self, application_name: str) -> int:
        if not application_name.startswith(connection.APPLICATION_PREFIX):
            raise LockBusy(f"the lock of tenant {self.tenant} is held by {application_name!r}, not an operator")
        rows = self.session.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()", [application_name]).fetchall()
        return sum(1 for row in rows if row[0])

    def check(self) -> None:
        """Prove the lock is still ours: its session answers and holds it."""
        try:
            held = self._session is not None and connection.first_row(self._session.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
                " AND granted AND classid = %s::bigint::oid AND objid = (hashtext(%s)::bigint & 4294967295)::oid)",
                [LOCK_CLASS, self.tenant]))[0]
        except psycopg.Error:
            held = False
        if not held:
            raise LockLost(f"the lock of tenant {self.tenant} is no longer held by this process")

    def release(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            session.close()  # ending the session releases its advisory locks
        connection.keep_admin_session(self.dsn, session)  # kept only if it is clean and holds nothing

    def __enter__(self) -> TenantLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
