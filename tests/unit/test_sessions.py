"""Admin sessions kept between reconciles: reused while they work, closed when they cannot be trusted."""

from __future__ import annotations

import psycopg
from psycopg.pq import TransactionStatus

from tenant_operator.infra import sessions
from tenant_operator.infra.sessions import IdleSessions

DSN = "host=db dbname=tenants"


class Session:
    """Stands in for a psycopg connection: the parts IdleSessions looks at."""

    def __init__(self, alive: bool = True, status: TransactionStatus = TransactionStatus.IDLE):
        self.alive = alive
        self.closed = False
        self.info = type("Info", (), {"transaction_status": status})()

    def execute(self, query: str):
        if not self.alive:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    def close(self):
        self.closed = True


def test_a_session_given_back_is_taken_again_and_only_for_its_own_database():
    idle = IdleSessions()
    one = Session()
    idle.give(DSN, one)
    assert idle.take("host=db dbname=other") is None
    assert idle.take(DSN) is one
    assert idle.take(DSN) is None  # taken sessions are not shared
    assert not one.closed


def test_no_more_than_keep_sessions_stay_open():
    idle = IdleSessions(keep=2)
    kept = [Session() for _ in range(3)]
    for session in kept:
        idle.give(DSN, session)
    assert len(idle) == 2 and kept[2].closed


def test_a_session_the_server_dropped_is_closed_and_a_working_one_taken_instead():
    idle = IdleSessions()
    working, dropped = Session(), Session(alive=False)
    idle.give(DSN, working)
    idle.give(DSN, dropped)
    assert idle.take(DSN) is working
    assert dropped.closed


def test_a_session_left_in_a_transaction_or_idle_too_long_is_not_reused(monkeypatch):
    idle = IdleSessions(max_idle=60)
    in_transaction = Session(status=TransactionStatus.INTRANS)
    idle.give(DSN, in_transaction)
    assert in_transaction.closed and len(idle) == 0

    clock = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: clock[0])
    stale = Session()
    idle.give(DSN, stale)
    clock[0] += 61
    assert idle.take(DSN) is None and stale.closed


def test_close_ends_every_idle_session():
    idle = IdleSessions()
    kept = [Session(), Session()]
    idle.give(DSN, kept[0])
    idle.give("host=db dbname=postgres", kept[1])
    idle.close()
    assert all(s.closed for s in kept) and len(idle) == 0
