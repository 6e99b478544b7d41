"""Micro-batching: concurrent requests share one ``predict`` call.

scikit-learn's per-call overhead (input validation, the pipeline's column handling) is far larger than the
arithmetic for one row: a Kultivar pipeline takes milliseconds for 1 row and barely longer for 32. Serving each
request with its own call therefore caps a core at a few hundred requests per second; batching them lifts that
by an order of magnitude.

Policy (all on the event loop, no threads). A request joins the pending batch, which is processed as soon as

* it holds ``max_batch`` rows; or
* it holds as many requests as the largest recent batch (the concurrency the clients have shown). It is then
  processed at the end of the current loop iteration, so requests already read in this iteration still join and
  the estimate can grow when the clients' concurrency does; or
* no new request arrived for ``max_wait`` seconds (each arrival restarts this wait: while the server is still
  busy reading a burst of requests the batch keeps growing, however long reading them takes); or
* its first request has waited ``MAX_WAITS`` times ``max_wait`` in all (the latency bound).

When the last batch had a single request there is no sign of concurrency, so nobody waits: the batch is
processed at the end of the loop iteration. A lone client therefore pays no batching latency, and under load the
requests that arrive while a batch is being predicted form the next batch by themselves.

``eager`` (for a model whose ``process`` takes microseconds, such as a compiled one): when there is no sign of
concurrency and nothing is pending, the request is processed at once, in the caller, without a future or a
hop through the event loop - those cost more than such a prediction. A second request arriving in the same loop
iteration as an eagerly processed one is the sign of concurrency: it is queued as above, its batch holds more
than one request, and batching takes over until the recent batches are single again.

Time comes from a :class:`Clock` (default: the event loop's clock and timers), so tests drive the waits with a
manual clock instead of sleeping.

``process`` runs inline on the event loop: on the single core a serving pod usually gets, a worker thread would
not run in parallel anyway and would add GIL hand-offs to every batch. When a batch fails its requests are
retried one by one, so a request that breaks the model (despite validation) fails alone instead of taking its
batch-mates down with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

RECENT = 16  # batches whose sizes estimate the clients' concurrency
MAX_WAITS = 5  # a batch's first request waits at most this many max_wait in all


class BatcherClosed(RuntimeError):
    """The batcher was closed (the server is shutting down)."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where the batcher reads the time and sets its wait timers."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The running event loop's monotonic clock and timers."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)


class MicroBatcher(Generic[T, R]):
    """Collects items submitted concurrently and hands them to ``process`` in batches.

    ``process`` takes a list of items and returns one result per item, in order. ``size`` gives an item's row
    count (default 1), which ``max_batch`` limits; an item larger than ``max_batch`` is processed alone.
    """

    def __init__(self, process: Callable[[list[T]], Sequence[R]], *, max_batch: int = 32, max_wait: float = 0.002,
                 size: Callable[[T], int] | None = None, clock: Clock | None = None, eager: bool = False) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative, got {max_wait}")
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._process = process
        self._size = size or (lambda _item: 1)
        self._clock: Clock = clock or LoopClock()
        # The pending batch: items and their futures side by side (no pair per item to build and unpack).
        self._pending: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._pending_rows = 0
        self._handle: Timer | None = None
        self._timed = False  # _handle is the wait timer (not an end-of-iteration flush)
        self._first = 0.0  # loop time of the pending batch's first and latest arrival
        self._latest = 0.0
        self._recent: deque[int] = deque([1], maxlen=RECENT)
        self._largest_recent = 1
        self._closed = False
        self.eager = eager
        self._eager_this_iteration = False  # an item was processed eagerly in the current loop iteration
        self.batches = 0  # processed batches, for tests and diagnostics
        self.items = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _target(self) -> int:
        """Requests to wait for: as many as the largest recent batch."""
        return self._largest_recent

    def _record(self, size: int) -> None:
        """A processed batch's request count, into the recent sizes (and their maximum, read on every submit)."""
        recent = self._recent
        dropped = recent[0] if len(recent) == recent.maxlen else 0
        recent.append(size)
        if size >= self._largest_recent:
            self._largest_recent = size
        elif dropped == self._largest_recent:
            self._largest_recent = max(recent)

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result (or the exception ``process`` raised for it)."""
        pending = self.enqueue(item)
        return await pending if isinstance(pending, asyncio.Future) else pending

    def enqueue(self, item: T) -> R | asyncio.Future[R]:
        """``item``'s result when it was processed at once (``eager``), else the future that will hold it: what
        :meth:`submit` awaits, for callers that would rather not add a coroutine to every request."""
        if self._closed:
            raise BatcherClosed("the server is shutting down; retry on another replica")
        loop = asyncio.get_running_loop()
        if self.eager and not self._pending and not self._eager_this_iteration and self._largest_recent == 1:
            return self._process_now(item, loop)
        rows = self._size(item)
        if self._pending and self._pending_rows + rows > self.max_batch:
            self._flush()  # keep batches within max_batch: the newcomer starts the next one
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(item)
        self._futures.append(future)
        self._pending_rows += rows
        self._latest = self._clock.time()
        if self._pending_rows >= self.max_batch:
            self._flush()
        elif self._handle is None:
            self._first = self._latest
            if self._largest_recent > 1 and self.max_wait > 0:
                self._handle = self._clock.call_at(self._latest + self.max_wait, self._on_timer)
                self._timed = True
            else:
                self._handle, self._timed = loop.call_soon(self._flush), False
        elif self._timed and len(self._pending) >= self._largest_recent:
            assert self._handle is not None
            self._handle.cancel()
            self._handle, self._timed = loop.call_soon(self._flush), False
        return future

    def _process_now(self, item: T, loop: asyncio.AbstractEventLoop) -> R:
        """``item`` alone, in the caller (see ``eager`` in the module docstring)."""
        self._eager_this_iteration = True
        loop.call_soon(self._end_of_iteration)
        self._record(1)
        self.batches += 1
        self.items += 1
        results = self._process([item])
        if len(results) != 1:
            raise RuntimeError(f"batch processing returned {len(results)} results for 1 item")
        return results[0]

    def _end_of_iteration(self) -> None:
        self._eager_this_iteration = False

    def _on_timer(self) -> None:
        now = self._clock.time()
        deadline = min(self._latest + self.max_wait, self._first + MAX_WAITS * self.max_wait)
        if now < deadline:  # requests kept arriving: wait for the quiet gap (or the overall bound)
            self._handle = self._clock.call_at(deadline, self._on_timer)
            return
        self._flush()

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        items, futures = self._pending, self._futures
        self._pending, self._futures, self._pending_rows = [], [], 0
        for future in futures:
            if future.done():  # the client went away (its request was cancelled): leave its item out
                kept = [(item, f) for item, f in zip(items, futures, strict=True) if not f.done()]
                items, futures = [item for item, _ in kept], [f for _, f in kept]
                break
        if not items:
            return
        self._record(len(items))
        self.batches += 1
        self.items += len(items)
        try:
            results = self._process(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch processing returned {len(results)} results for {len(items)} items")
        except Exception as e:
            if len(items) == 1:
                _settle(futures[0], error=e)
            else:
                self._one_by_one(items, futures)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _one_by_one(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        for item, future in zip(items, futures, strict=True):
            try:
                (result,) = self._process([item])
            except Exception as e:
                _settle(future, error=e)
            else:
                _settle(future, result=result)

    async def close(self) -> None:
        """Process what is pending and refuse new items."""
        self._closed = True
        if self._pending:
            self._flush()
        await asyncio.sleep(0)  # let the waiting submitters pick up their results


def _settle(future: asyncio.Future[R], result: R | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
