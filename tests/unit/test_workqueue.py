"""The work queue: one reconcile per burst of events, one worker per tenant, failures back off."""

from __future__ import annotations

import asyncio

from tenant_operator.runtime.workqueue import WorkQueue

NOTHING_WAITS = 0.02  # how long a get() is given to prove that no key is ready


def run(coroutine):
    return asyncio.run(coroutine)


async def ready(queue: WorkQueue, within: float = NOTHING_WAITS) -> str | None:
    """The next key, or None when none comes within `within` seconds."""
    try:
        return await asyncio.wait_for(queue.get(), within)
    except TimeoutError:
        return None


def test_added_key_is_handed_out():
    async def scenario():
        queue = WorkQueue()
        queue.add("acme")
        assert len(queue) == 1
        assert await ready(queue) == "acme"
        assert await ready(queue) is None

    run(scenario())


def test_adding_a_key_twice_yields_one_get():
    async def scenario():
        queue = WorkQueue()
        queue.add("acme")
        queue.add("acme")
        assert await ready(queue) == "acme"
        assert await ready(queue) is None

    run(scenario())


def test_a_burst_of_events_is_one_reconcile():
    async def scenario():
        queue = WorkQueue()
        for _ in range(100):
            queue.add("acme")
        queue.add("globex")
        got = [await ready(queue), await ready(queue), await ready(queue)]
        assert got == ["acme", "globex", None]

    run(scenario())


def test_keys_come_out_in_the_order_they_went_in():
    async def scenario():
        queue = WorkQueue()
        for key in ("c", "a", "b"):
            queue.add(key)
        assert [await ready(queue) for _ in range(3)] == ["c", "a", "b"]

    run(scenario())


def test_key_readded_while_processing_waits_until_done():
    async def scenario():
        queue = WorkQueue()
        queue.add("acme")
        assert await ready(queue) == "acme"
        queue.add("acme")  # an event arrives while a worker reconciles acme
        assert await ready(queue) is None  # not handed to a second worker meanwhile
        queue.done("acme")
        assert await ready(queue) == "acme"  # the new event is not lost
        queue.done("acme")
        assert await ready(queue) is None

    run(scenario())


def test_key_readded_many_times_while_processing_comes_back_once():
    async def scenario():
        queue = WorkQueue()
        queue.add("acme")
        await ready(queue)
        for _ in range(10):
            queue.add("acme")
        queue.done("acme")
        assert await ready(queue) == "acme"
        queue.done("acme")
        assert await ready(queue) is None

    run(scenario())


def test_done_without_new_events_forgets_the_key():
    async def scenario():
        queue = WorkQueue()
        queue.add("acme")
        await ready(queue)
        queue.done("acme")
        assert len(queue) == 0
        assert await ready(queue) is None

    run(scenario())


def test_one_key_is_never_processed_by_two_workers_at_once():
    async def scenario():
        queue = WorkQueue()
        active: set[str] = set()
        overlaps: list[str] = []
        handled: list[str] = []

        async def worker():
            while True:
                key = await queue.get()
                if key in active:
                    overlaps.append(key)
                active.add(key)
                await asyncio.sleep(0.001)
                handled.append(key)
                active.discard(key)
                queue.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for round_ in range(20):
            for key in ("a", "b", "c"):
                queue.add(key)
            await asyncio.sleep(0.0005 * (round_ % 3))
        while len(queue):
            await asyncio.sleep(0.002)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        assert overlaps == []
        assert set(handled) == {"a", "b", "c"}
        assert handled[-3:] and len(queue) == 0  # the last events of every key were processed, none left

    run(scenario())


# --- backoff ---------------------------------------------------------------------------------------


def test_retry_delays_double_and_cap_at_the_maximum():
    async def scenario():
        queue = WorkQueue(backoff_base=1.0, backoff_max=10.0)
        delays = [queue.retry("acme") for _ in range(6)]
        queue.drop("acme")
        return delays

    assert run(scenario()) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_retried_key_comes_back_after_its_delay():
    async def scenario():
        queue = WorkQueue(backoff_base=0.03, backoff_max=1.0)
        queue.add("acme")
        await ready(queue)
        queue.retry("acme")
        queue.done("acme")
        assert await ready(queue, within=0.01) is None  # not hot-looping
        assert await ready(queue, within=0.5) == "acme"

    run(scenario())


def test_forget_resets_the_backoff():
    async def scenario():
        queue = WorkQueue(backoff_base=1.0, backoff_max=100.0)
        for _ in range(4):
            queue.retry("acme")
        queue.forget("acme")
        delay = queue.retry("acme")
        queue.drop("acme")
        return delay

    assert run(scenario()) == 1.0


def test_backoff_is_per_key():
    async def scenario():
        queue = WorkQueue(backoff_base=1.0, backoff_max=100.0)
        for _ in range(3):
            queue.retry("acme")
        delay = queue.retry("globex")
        queue.drop("acme")
        queue.drop("globex")
        return delay

    assert run(scenario()) == 1.0


def test_a_tenant_failing_for_days_keeps_the_maximum_delay():
    async def scenario():
        # 1100 failures at the 300 s cap is about four days of a persistently failing tenant.
        queue = WorkQueue(backoff_base=1.0, backoff_max=300.0)
        delays = [queue.retry("acme") for _ in range(1100)]
        queue.drop("acme")
        return delays[-1]

    assert run(scenario()) == 300.0


# --- delayed adds ----------------------------------------------------------------------------------


def test_add_after_fires_later():
    async def scenario():
        queue = WorkQueue()
        queue.add_after("acme", 0.03)
        assert await ready(queue, within=0.005) is None
        await asyncio.sleep(0.05)
        assert await ready(queue) == "acme"

    run(scenario())


def test_an_earlier_pending_add_after_wins():
    async def scenario():
        queue = WorkQueue()
        queue.add_after("acme", 0.01)
        queue.add_after("acme", 60)  # must not postpone the earlier one
        assert await ready(queue, within=0.5) == "acme"
        queue.done("acme")
        assert await ready(queue) is None

    run(scenario())


def test_a_sooner_add_after_replaces_a_later_one():
    async def scenario():
        queue = WorkQueue()
        queue.add_after("acme", 60)
        queue.add_after("acme", 0.01)
        assert await ready(queue, within=0.5) == "acme"
        queue.done("acme")
        queue.drop("acme")

    run(scenario())


def test_add_after_of_a_key_already_waiting_does_not_duplicate_it():
    async def scenario():
        queue = WorkQueue()
        queue.add("acme")
        queue.add_after("acme", 0.01)
        await asyncio.sleep(0.02)
        assert await ready(queue) == "acme"
        assert await ready(queue) is None

    run(scenario())


def test_drop_cancels_pending_retries_and_backoff():
    async def scenario():
        queue = WorkQueue(backoff_base=0.01, backoff_max=1.0)
        queue.retry("gone")
        queue.retry("gone")
        queue.drop("gone")
        await asyncio.sleep(0.03)
        assert await ready(queue) is None
        assert queue.retry("gone") == 0.01
        queue.drop("gone")

    run(scenario())


def test_a_key_waiting_for_something_is_polled_ever_less_often_up_to_a_limit():
    async def scenario():
        queue = WorkQueue()
        delays = [queue.poll("acme", longest=15) for _ in range(6)]
        assert delays == [1, 2, 4, 8, 15, 15]
        queue.settled("acme")
        assert queue.poll("acme", longest=15) == 1
        queue.drop("acme")

    run(scenario())
