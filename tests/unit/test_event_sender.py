"""Events are posted off the reconcile path (k8s/events.py): all of them, unless the queue overflows."""

from __future__ import annotations

import threading
from typing import Any

from kultivar.k8s.events import EventSender


def test_every_queued_event_is_posted_before_close_returns() -> None:
    posted: list[dict[str, Any]] = []
    sender = EventSender(posted.append, threads=2, rate=1000)
    for i in range(100):
        sender.send({"reason": f"R{i}"})
    sender.close(timeout=10)
    assert sorted(e["reason"] for e in posted) == sorted(f"R{i}" for i in range(100))


def test_a_failing_post_does_not_stop_the_sender() -> None:
    posted: list[str] = []

    def post(event: dict[str, Any]) -> None:
        if event["reason"] == "Bad":
            raise OSError("connection refused")
        posted.append(event["reason"])

    sender = EventSender(post, threads=1)
    for reason in ("Bad", "Good"):
        sender.send({"reason": reason})
    sender.close(timeout=10)
    assert posted == ["Good"]


def test_a_full_queue_drops_and_counts_instead_of_blocking_a_reconcile() -> None:
    gate = threading.Event()
    sender = EventSender(lambda _event: gate.wait(10), threads=1, capacity=2)
    for i in range(5):  # one taken by the blocked thread, two queued, the rest dropped
        sender.send({"reason": f"R{i}"})
    assert sender.dropped >= 2
    gate.set()
    sender.close(timeout=10)


def test_posting_is_rate_limited_after_a_burst() -> None:
    from kultivar.k8s.events import TokenBucket

    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        bucket.take()
    assert slept == []  # the burst goes at once
    bucket.take()
    bucket.take()
    assert [round(s, 6) for s in slept] == [0.1, 0.1]  # then 10 a second
    now[0] += 10
    for _ in range(3):
        bucket.take()
    assert len(slept) == 2  # an idle while refills the burst, never beyond it
    bucket.take()
    assert len(slept) == 3
