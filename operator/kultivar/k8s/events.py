"""Events are posted off the reconcile path, as client-go's EventRecorder does.

An Event is best effort (a failed post never fails a reconcile), yet posting it inline made two of the four
requests a TrainingRun's start waits for: at 500 runs at once, the workers spent half their time on Events.
Here a reconcile hands its Events to a bounded queue that a few threads post; when the queue is full (an API
server that does not answer for long) the newest are dropped and counted, never blocking a reconcile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class EventSender:
    def __init__(self, post: Callable[[dict[str, Any]], None], threads: int = 2, capacity: int = 5000) -> None:
        self._post = post
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
