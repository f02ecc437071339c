"""Liveness says alive, readiness says able to reconcile: what the chart's probes ask."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from tenant_operator.api.settings import Settings
from tenant_operator.dev.ports import free_port
from tenant_operator.runtime import health
from tenant_operator.runtime.controller import Controller


def controller(unseen: set[str] | None) -> Controller:
    one = Controller.create(kube=None, settings=Settings(database_url="postgresql://x@y/z"))
    one.unseen = unseen
    return one


def test_not_ready_while_starting_and_says_why():
    answer = health.readiness(None, "PostgreSQL is not reachable yet: connection refused", leading=None)

    assert not answer.ready
    assert answer.reason == "starting: PostgreSQL is not reachable yet: connection refused"


def test_not_ready_until_every_tenant_listed_at_start_came_through_the_watch():
    started = controller(unseen={"acme", "globex"})

    assert health.readiness(started, None, leading=None) == health.Readiness(
        False, "caches not synced: 2 tenant(s) not seen through the watch yet")
    started.tenant_seen("ADDED", {"metadata": {"name": "acme", "generation": 1}})
    assert not health.readiness(started, None, leading=None).ready
    started.tenant_seen("ADDED", {"metadata": {"name": "globex", "generation": 1}})
    assert health.readiness(started, None, leading=None).ready


def test_a_leader_and_a_warm_follower_are_both_ready():
    warm = controller(unseen=set())

    assert health.readiness(warm, None, leading=True) == health.Readiness(True, "ready: leader")
    assert health.readiness(warm, None, leading=False) == health.Readiness(True, "ready: follower with warm caches")


def test_a_cold_follower_is_not_ready():
    assert not health.readiness(controller(unseen={"acme"}), None, leading=False).ready


def test_stopping_is_not_ready():
    assert health.readiness(controller(unseen=set()), None, leading=True, stopping=True) == health.Readiness(
        False, "stopping")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_endpoints_answer_liveness_and_readiness_apart():
    state = {"answer": health.Readiness(False, "starting")}
    port = free_port()

    async def scenario() -> list[tuple[int, str]]:
        runner = await health.serve(port, lambda: state["answer"])
        loop = asyncio.get_running_loop()
        try:
            seen = [await loop.run_in_executor(None, get, port, "/healthz"),
                    await loop.run_in_executor(None, get, port, "/readyz")]
            state["answer"] = health.Readiness(True, "ready: leader")
            seen.append(await loop.run_in_executor(None, get, port, "/readyz"))
            return seen
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == [(200, "alive\n"), (503, "starting\n"), (200, "ready: leader\n")]
