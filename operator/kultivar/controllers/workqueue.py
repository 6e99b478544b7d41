"""A deduplicating, delaying work queue of object keys (the shape of client-go's workqueue).

Watch events only *enqueue* a key; workers reconcile the object's current state. So a burst of events
costs one reconcile, one key is never reconciled by two workers at once, and failures back off per key
instead of storming the API server.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable


class WorkQueue:
    def __init__(self, base_backoff: float = 0.5, max_backoff: float = 300.0) -> None:
        self._queue: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._wakeup = asyncio.Event()
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Hashable) -> None:
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer:
            timer[1].cancel()
        if key in self._processing:
            self._dirty.add(key)  # reconcile again once the running one finishes
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._wakeup.set()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Enqueue later; of several pending delays for one key only the earliest is kept."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending and pending[0] <= due:
            return
        if pending:
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def backoff(self, key: Hashable) -> float:
        """Record a failure of key and return how long to wait before retrying it."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return float(min(self._max_backoff, self._base_backoff * (2**n)))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    async def get(self) -> Hashable:
        while not self._queue:
            if self._closed:
                raise asyncio.CancelledError
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._wakeup.set()
