"""The health endpoints: /healthz says the process is alive, /readyz that it can reconcile.

kopf has one liveness endpoint, which answers only after the start-up handlers
succeeded: used for both probes it restarts an operator that waits for
PostgreSQL, and calls a replica ready before its caches hold the tenants. So
the operator serves its own, on the event loop kopf runs (an answer proves that
loop turns), from the first start-up handler on:

- `/healthz` answers 200 as long as the loop does: the liveness probe.
- `/readyz` answers 200 once the operator can reconcile: started (PostgreSQL
  reached, shared infrastructure applied) and its caches synced; a leader and a
  follower with warm caches are both ready, so that a rolling update waits for
  the new replica to be warm before the old one goes. Otherwise 503, and the
  body says why. While shutting down it answers 503 again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import aiohttp.web

from tenant_operator.runtime.controller import Controller


@dataclasses.dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


def readiness(controller: Controller | None, problem: str | None, leading: bool | None,
              stopping: bool = False) -> Readiness:
    """Whether the operator can reconcile. `leading` is None without leader election."""
    if stopping:
        return Readiness(False, "stopping")
    if controller is None:
        return Readiness(False, f"starting: {problem}" if problem else "starting")
    if not controller.synced:
        missing = len(controller.unseen or ())
        return Readiness(False, f"caches not synced: {missing} tenant(s) not seen through the watch yet")
    if leading is None:
        return Readiness(True, "ready")
    return Readiness(True, "ready: leader" if leading else "ready: follower with warm caches")


async def serve(port: int, check: Callable[[], Readiness]) -> aiohttp.web.AppRunner:
    """Serve both endpoints on all addresses at `port` until the returned runner is cleaned up."""

    async def alive(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="alive\n")

    async def ready(request: aiohttp.web.Request) -> aiohttp.web.Response:
        answer = check()
        return aiohttp.web.Response(text=answer.reason + "\n", status=200 if answer.ready else 503)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get("/healthz", alive), aiohttp.web.get("/readyz", ready)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
