"""The micro-batcher: pure asyncio, no server, and no wall-clock time (a manual clock drives the waits)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kultivar.serving.batching import MAX_WAITS, BatcherClosed, MicroBatcher


@dataclass
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when the test says so; due timers fire in order as it moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[_Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        self.timers.append(timer)
        return timer

    async def advance(self, seconds: float) -> None:
        await settle()  # tasks created just before run at the current time, not after it moved
        target = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= target]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    """Let every task that can run without time passing run (the end-of-iteration flushes included)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Recorder:
    """A ``process`` callback that records each batch and answers item * 10 (or fails on "bad")."""

    def __init__(self, fail_on: Any = None) -> None:
        self.batches: list[list[Any]] = []
        self.fail_on = fail_on

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot process {self.fail_on!r}")
        return [item * 10 if isinstance(item, int) else item for item in items]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_submissions_share_one_process_call() -> None:
    rec = Recorder()

    async def main() -> list[Any]:
        batcher = MicroBatcher(rec, max_batch=32, max_wait=0.05)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert run(main()) == [i * 10 for i in range(10)]
    assert rec.batches == [list(range(10))]


def test_a_lone_request_does_not_wait_for_company() -> None:
    rec = Recorder()

    async def main() -> None:
        clock = ManualClock()
        batcher = MicroBatcher(rec, max_batch=32, max_wait=5.0, clock=clock)
        lone = asyncio.create_task(batcher.submit(1))
        await settle()
        # Nothing suggested concurrency, so the long max_wait does not apply: answered with no time passing.
        assert lone.done() and lone.result() == 10 and not clock.timers

    run(main())


def test_batches_never_exceed_max_batch() -> None:
    rec = Recorder()

    async def main() -> list[Any]:
        batcher = MicroBatcher(rec, max_batch=4, max_wait=0.05)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert run(main()) == [i * 10 for i in range(10)]
    assert [len(b) for b in rec.batches] == [4, 4, 2]
    assert [i for b in rec.batches for i in b] == list(range(10))  # order kept


def test_rows_count_towards_max_batch_and_oversized_items_go_alone() -> None:
    rec = Recorder()

    async def main() -> None:
        batcher: MicroBatcher[tuple[str, int], Any] = MicroBatcher(rec, max_batch=10, max_wait=0.05,
                                                                   size=lambda item: item[1])
        await asyncio.gather(batcher.submit(("a", 3)), batcher.submit(("b", 50)), batcher.submit(("c", 3)),
                             batcher.submit(("d", 6)))

    run(main())
    assert [[name for name, _ in b] for b in rec.batches] == [["a"], ["b"], ["c", "d"]]


def test_waits_for_company_once_concurrency_was_seen() -> None:
    rec = Recorder()

    async def main() -> None:
        clock = ManualClock()
        batcher = MicroBatcher(rec, max_batch=32, max_wait=0.2, clock=clock)
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))  # concurrency 3 seen
        rec.batches.clear()
        first = asyncio.create_task(batcher.submit(100))
        await clock.advance(0.02)  # a second request arrives within the wait window and joins
        second = asyncio.create_task(batcher.submit(200))
        await clock.advance(0.199)
        # Two of the three expected requests came: the batch waits max_wait after the latest arrival ...
        assert not first.done() and not second.done() and rec.batches == []
        await clock.advance(0.002)
        # ... and not longer.
        assert first.result() == 1000 and second.result() == 2000 and rec.batches == [[100, 200]]

    run(main())


def test_each_arrival_restarts_the_wait_up_to_the_overall_bound() -> None:
    rec = Recorder()

    clock = ManualClock()

    async def trickle(batcher: MicroBatcher[int, int], count: int, gap: float) -> None:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(batcher.submit(i)))
            await clock.advance(gap)
        await clock.advance(1.0)  # quiet: whatever is pending is flushed
        assert all(t.done() for t in tasks)

    async def main() -> list[int]:
        batcher = MicroBatcher(rec, max_batch=64, max_wait=0.1, clock=clock)
        await asyncio.gather(*(batcher.submit(i) for i in range(50)))  # concurrency 50 seen
        rec.batches.clear()
        # Gaps shorter than max_wait keep the batch open past max_wait (4 x 0.04 s > 0.1 s) ...
        await trickle(batcher, 4, 0.04)
        # ... but never past MAX_WAITS x max_wait (0.5 s) for its first request: arrivals at 0, 0.06, ... 0.48
        # make the first batch, the rest (0.54, 0.60, 0.66) the next.
        await trickle(batcher, 12, 0.06)
        return [len(b) for b in rec.batches]

    assert MAX_WAITS == 5
    assert run(main()) == [4, 9, 3]


def test_stops_waiting_when_as_many_requests_as_last_time_arrived() -> None:
    rec = Recorder()

    async def main() -> None:
        clock = ManualClock()
        batcher = MicroBatcher(rec, max_batch=32, max_wait=5.0, clock=clock)
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        group = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
        await settle()
        # The full group of four flushed at once, with no time passing, instead of after max_wait.
        assert all(t.done() for t in group) and clock.now == 0.0

    run(main())
    assert [len(b) for b in rec.batches] == [4, 4]


def test_a_failing_item_fails_alone() -> None:
    rec = Recorder(fail_on="bad")

    async def main() -> list[Any]:
        batcher = MicroBatcher(rec, max_batch=32, max_wait=0.05)
        return list(await asyncio.gather(batcher.submit(1), batcher.submit("bad"), batcher.submit(3),
                                         return_exceptions=True))

    first, bad, third = run(main())
    assert (first, third) == (10, 30)
    assert isinstance(bad, ValueError) and "bad" in str(bad)
    assert rec.batches[0] == [1, "bad", 3]  # tried together first, then one by one


def test_a_result_count_mismatch_is_an_error_not_a_wrong_answer() -> None:
    async def main() -> Any:
        batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [0], max_batch=8, max_wait=0.05)
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    # Processed one by one after the mismatch, each call returns exactly one result.
    assert run(main()) == [0, 0]

    async def broken() -> Any:
        batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [], max_batch=8, max_wait=0.05)
        return await asyncio.gather(batcher.submit(1), return_exceptions=True)

    (error,) = run(broken())
    assert isinstance(error, RuntimeError) and "0 results for 1 items" in str(error)


def test_a_cancelled_request_does_not_disturb_its_batch() -> None:
    rec = Recorder()

    async def main() -> Any:
        batcher = MicroBatcher(rec, max_batch=32, max_wait=0.05)
        await asyncio.gather(batcher.submit(0), batcher.submit(0))  # concurrency seen: the next batch waits
        rec.batches.clear()
        gone = asyncio.create_task(batcher.submit(1))
        stays = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        return await stays

    assert run(main()) == 20
    assert rec.batches == [[2]]


def test_close_processes_pending_items_and_refuses_new_ones() -> None:
    rec = Recorder()

    async def main() -> tuple[Any, BaseException | None]:
        batcher = MicroBatcher(rec, max_batch=32, max_wait=10.0)
        await asyncio.gather(batcher.submit(0), batcher.submit(0))
        pending = asyncio.create_task(batcher.submit(7))
        await asyncio.sleep(0)
        await batcher.close()
        result = await asyncio.wait_for(pending, 1.0)
        try:
            await batcher.submit(8)
        except BatcherClosed as e:
            return result, e
        return result, None

    result, refused = run(main())
    assert result == 70
    assert refused is not None and "shutting down" in str(refused)


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_wait": -1.0}])
def test_rejects_nonsense_settings(kwargs: dict[str, Any]) -> None:
    process: Callable[[list[int]], list[int]] = lambda items: items  # noqa: E731
    with pytest.raises(ValueError):
        MicroBatcher(process, **kwargs)


def test_eager_a_lone_request_is_processed_in_the_caller() -> None:
    rec = Recorder()

    async def main() -> None:
        clock = ManualClock()
        batcher = MicroBatcher(rec, max_batch=32, max_wait=5.0, clock=clock, eager=True)
        assert await batcher.submit(1) == 10  # answered in the caller: nothing pending, no timer, no future
        assert batcher.pending == 0 and not clock.timers and (batcher.batches, batcher.items) == (1, 1)
        await settle()
        assert await batcher.submit(2) == 20  # the next loop iteration: alone again
        with pytest.raises(ValueError, match="cannot process 'bad'"):
            await MicroBatcher(Recorder(fail_on="bad"), eager=True).submit("bad")

    run(main())
    assert rec.batches == [[1], [2]]


def test_eager_concurrency_in_one_loop_iteration_turns_batching_on() -> None:
    rec = Recorder()

    async def main() -> None:
        clock = ManualClock()
        batcher = MicroBatcher(rec, max_batch=32, max_wait=0.05, clock=clock, eager=True)
        # Ten requests read in one loop iteration: the first is answered at once, the other nine (the sign of
        # concurrency) form one batch at the end of the iteration.
        first = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert first == [i * 10 for i in range(10)]
        assert rec.batches == [[0], list(range(1, 10))]
        # Now the recent batches show concurrency: the next arrivals wait for company instead of going alone.
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await settle()
        assert batcher.pending == 3 and clock.timers
        await clock.advance(0.05)
        assert [t.result() for t in tasks] == [0, 10, 20]
        assert rec.batches[-1] == [0, 1, 2]

    run(main())


def test_eager_refuses_once_closed() -> None:
    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(Recorder(), eager=True)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(1)

    run(main())
