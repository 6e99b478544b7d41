"""Events are posted off the reconcile path, as client-go's EventRecorder does.

An Event is best effort (a failed post never fails a reconcile), yet posting it inline made two of the four
requests a TrainingRun's start waits for: at 500 runs at once, the workers spent half their time on Events.
Here a reconcile hands its Events to a bounded queue that a few threads post; when the queue is full (an API
server that does not answer for long) the newest are dropped and counted, never blocking a reconcile.

Posting is rate-limited (a token bucket: bursts of `burst`, then `rate` a second), as the kubelet limits its
Events (eventRecordQPS): 500 TrainingRuns at once make over a thousand Events, which posted at full speed took the
API server from the Jobs and status writes the runs wait for. Below the burst an Event is posted at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class TokenBucket:
    """At most `burst` at once, refilled at `rate` a second; take() waits for a token. Thread-safe."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:  # one waiter at a time: tokens go out in order
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                self._sleep(wait)
                self._tokens, self._at = 1.0, self._at + wait
            self._tokens -= 1


class EventSender:
    def __init__(self, post: Callable[[dict[str, Any]], None], threads: int = 2, capacity: int = 5000,
                 rate: float = 10.0, burst: int = 50) -> None:
        self._post = post
        self._bucket = TokenBucket(rate, burst)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(capacity)
        self.dropped = 0
        self._threads = [threading.Thread(target=self._run, name=f"kultivar-events-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def send(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.warning("event queue full: dropped %s on %s", event.get("reason"),
                        (event.get("involvedObject") or {}).get("name"))

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._bucket.take()
                self._post(event)
            except Exception:  # best effort: the post logs its own failures; nothing may end this thread
                log.warning("could not post an event", exc_info=True)
            finally:
                self._queue.task_done()

    def close(self, timeout: float = 5.0) -> None:
        """Post what is queued (for up to timeout seconds), then stop the threads."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
