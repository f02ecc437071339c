"""A work queue of tenant names, as controller-runtime has: deduplicated, one worker per key.

kopf's change handlers react to changes and keep their progress in annotations
on the object; a reconcile that compares actual with desired state needs
neither. Watch events only put a name here; workers take names off and
reconcile them, so a burst of events for one tenant is one reconcile, a tenant
is never reconciled by two workers at once, and failures come back with
exponential backoff instead of hot-looping.
"""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self, backoff_base: float = 1.0, backoff_max: float = 300.0):
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()       # waiting to be processed
        self._processing: set[str] = set()  # taken by a worker right now
        self._failures: dict[str, int] = {}
        self._polls: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max

    def add(self, key: str) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add later; an earlier pending add for the same key wins."""
        existing = self._timers.get(key)
        loop = asyncio.get_running_loop()
        if existing and existing.when() <= loop.time() + delay:
            return
        if existing:
            existing.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_later(delay, fire)

    def retry(self, key: str) -> float:
        """Requeue after a failure with exponential backoff; returns the delay chosen."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._backoff_base * (2 ** min(failures, 32)), self._backoff_max)
        self.add_after(key, delay)
        return delay

    def poll(self, key: str, longest: float) -> float:
        """Look again at a key that waits for something to come: 1, 2, 4 ... seconds, at most `longest`."""
        polls = self._polls.get(key, 0)
        self._polls[key] = polls + 1
        delay = min(2.0 ** min(polls, 32), longest)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """The key succeeded: its next failure starts the backoff from the beginning."""
        self._failures.pop(key, None)

    def settled(self, key: str) -> None:
        """The key no longer waits: its next wait polls quickly again."""
        self._polls.pop(key, None)

    def drop(self, key: str) -> None:
        """The object is gone: no retries, no timers."""
        self.forget(key)
        self.settled(key)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    async def get(self) -> str:
        while True:
            key = await self._queue.get()
            if key in self._dirty and key not in self._processing:
                self._dirty.discard(key)
                self._processing.add(key)
                return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def __contains__(self, key: str) -> bool:
        """Queued or being worked on."""
        return key in self._dirty or key in self._processing

    def __len__(self) -> int:
        return len(self._dirty) + len(self._processing)
