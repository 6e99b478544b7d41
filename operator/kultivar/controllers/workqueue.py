"""A deduplicating, delaying work queue of object keys (the shape of client-go's workqueue), with two lanes.

Watch events only *enqueue* a key; workers reconcile the object's current state. So a burst of events
costs one reconcile, one key is never reconciled by two workers at once, and failures back off per key
instead of storming the API server.

Keys added with ``low=True`` (status follow-ups: a child Job changed, an object already started, a periodic
resync) are handed out only while no other key waits, as controller-runtime's priority queue does. At 500
TrainingRuns created at once, a run's Job is then not queued behind the status updates of the runs before it,
which share the same API server. A key added to both lanes is handed out once, in the first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable


class WorkQueue:
    def __init__(self, base_backoff: float = 0.5, max_backoff: float = 300.0) -> None:
        self._high: deque[Hashable] = deque()
        self._low: deque[Hashable] = deque()
        self._queued: dict[Hashable, bool] = {}  # key -> its lane (True: low); the deques may hold stale entries
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, bool] = {}  # added while processing -> lane to queue it in once done
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._wakeup = asyncio.Event()
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._closed = False

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Hashable, low: bool = False) -> None:
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer:
            timer[1].cancel()
        if key in self._processing:
            self._dirty[key] = self._dirty.get(key, True) and low  # reconcile again once the running one finishes
            return
        queued = self._queued.get(key)
        if queued is not None and (not queued or low):
            return  # already waiting in this lane or a better one
        # New, or moving up from the low lane (its low entry goes stale and is skipped).
        self._queued[key] = low
        (self._low if low else self._high).append(key)
        self._wakeup.set()

    def add_after(self, key: Hashable, delay: float, low: bool = False) -> None:
        """Enqueue later; of several pending delays for one key only the earliest is kept."""
        if delay <= 0:
            self.add(key, low)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending and pending[0] <= due:
            return
        if pending:
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key, low))

    def _fire(self, key: Hashable, low: bool) -> None:
        self._timers.pop(key, None)
        self.add(key, low)

    def backoff(self, key: Hashable) -> float:
        """Record a failure of key and return how long to wait before retrying it."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return float(min(self._max_backoff, self._base_backoff * (2**n)))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def _pop(self) -> Hashable | None:
        for lane, low in ((self._high, False), (self._low, True)):
            while lane:
                key = lane.popleft()
                if self._queued.get(key) is low:  # else a stale entry: the key moved lanes or was handed out
                    del self._queued[key]
                    return key
        return None

    async def get(self) -> Hashable:
        while True:
            key = self._pop()
            if key is not None:
                self._processing.add(key)
                return key
            if self._closed:
                raise asyncio.CancelledError
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        low = self._dirty.pop(key, None)
        if low is not None:
            self.add(key, low)

    def close(self) -> None:
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._wakeup.set()
