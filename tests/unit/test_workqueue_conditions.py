from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kultivar.controllers.workqueue import WorkQueue
from kultivar.domain.conditions import Cond, set_conditions
from kultivar.domain.plan import Plan
from kultivar.k8s.apply import desired_status, status_patch


def test_queue_deduplicates_and_never_hands_out_a_key_twice() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add("a")
        q.add("a")
        q.add("b")
        assert len(q) == 2
        key = await q.get()
        assert key == "a"
        q.add("a")  # changed while being processed: queued again only after done()
        assert await q.get() == "b"
        assert len(q) == 0
        q.done("a")
        assert await q.get() == "a"

    asyncio.run(scenario())


def test_add_after_keeps_the_earliest_and_backoff_grows() -> None:
    async def scenario() -> None:
        q = WorkQueue(base_backoff=0.01, max_backoff=0.04)
        q.add_after("k", 10)
        q.add_after("k", 0.01)
        assert await asyncio.wait_for(q.get(), 1) == "k"
        assert [q.backoff("k") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
        q.forget("k")
        assert q.backoff("k") == 0.01

    asyncio.run(scenario())


def test_conditions_keep_transition_time_when_status_is_unchanged() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = set_conditions([], [Cond("Ready", False, "Training", "x")], 1, t0)
    second = set_conditions(first, [Cond("Ready", False, "Registering", "y")], 2, t0 + timedelta(minutes=1))
    assert second[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert second[0]["reason"] == "Registering" and second[0]["observedGeneration"] == 2
    third = set_conditions(second, [Cond("Ready", True, "Registered")], 2, t0 + timedelta(minutes=2))
    assert third[0]["lastTransitionTime"] == "2026-01-01T00:02:00Z" and third[0]["status"] == "True"


def test_status_write_is_skipped_when_nothing_changed() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    obj = {"metadata": {"generation": 3}, "status": {}}
    plan = Plan(conditions=[Cond("Ready", True, "Validated")], status={"rows": 3})
    obj["status"] = desired_status(obj, plan, t0)
    again = desired_status(obj, Plan(conditions=[Cond("Ready", True, "Validated")], status={"rows": 3}), t0)
    assert status_patch(obj["status"], again) == {}
    removed = desired_status(obj, Plan(status={"rows": None}), t0)
    assert status_patch(obj["status"], removed) == {"rows": None}


def test_the_low_lane_waits_for_the_other_and_a_key_moves_up_once() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add("status-1", low=True)
        q.add("start-1")
        q.add("status-2", low=True)
        q.add("start-2", low=True)
        q.add("start-2")  # moved up: handed out in the first lane, and only once
        q.add("start-1", low=True)  # already in the first lane: stays there
        assert len(q) == 4
        assert [await q.get() for _ in range(4)] == ["start-1", "start-2", "status-1", "status-2"]
        assert len(q) == 0
        q.add("later", low=True)
        assert await q.get() == "later"  # the stale low entry of start-2 was skipped
        q.add("status-1", low=True)  # while processing: again once done, in the lane it was asked for
        q.done("status-1")
        q.add("x")
        assert [await q.get() for _ in range(2)] == ["x", "status-1"]

    asyncio.run(scenario())
