"""Resyncs are spread so that objects created together do not resync together (controllers/runtime.py)."""

from __future__ import annotations

import random

from kultivar.controllers.runtime import next_reconcile


def test_a_plan_requeue_wins_when_sooner() -> None:
    assert next_reconcile(5.0, 300.0, 0.99) == 5.0


def test_resyncs_spread_below_the_configured_period() -> None:
    rng = random.Random(0)
    delays = [next_reconcile(None, 300.0, rng.random()) for _ in range(1000)]
    assert all(225.0 < d <= 300.0 for d in delays)  # "reconciled at least this often" still holds
    # 1,000 objects reconciled at once are spread over about a minute: no 10 s bucket holds more than a fifth.
    buckets = [sum(1 for d in delays if lo <= d < lo + 10) for lo in range(225, 300, 10)]
    assert max(buckets) < 200
    assert next_reconcile(400.0, 300.0, 0.0) == 300.0
