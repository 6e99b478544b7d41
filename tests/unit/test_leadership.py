"""Leader election's decisions (domain/leadership.py): create, renew, wait, take over, step down, release."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from kultivar.domain.leadership import (
    Action,
    LeaseRecord,
    Sighting,
    Timing,
    decide,
    must_step_down,
    observe,
    release,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = Timing()


def held_by(holder: str, rv: str = "1", renewed: datetime = T0) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=15, acquire_time=T0, renew_time=renewed, transitions=2,
                       resource_version=rv)


def test_no_lease_is_created_holding_it() -> None:
    decision = decide(None, "a", T0, TIMING)
    assert decision.action is Action.CREATE
    assert decision.record == LeaseRecord(holder="a", duration_seconds=15, acquire_time=T0, renew_time=T0)


def test_the_holder_renews_at_the_read_resource_version() -> None:
    later = T0 + timedelta(seconds=5)
    decision = decide(Sighting(held_by("a", rv="7"), T0), "a", later, TIMING)
    assert decision.action is Action.RENEW
    assert decision.record is not None
    assert (decision.record.renew_time, decision.record.resource_version) == (later, "7")
    assert (decision.record.acquire_time, decision.record.transitions) == (T0, 2)  # a renewal is no transition


def test_a_standby_waits_while_the_record_keeps_changing() -> None:
    sighting = None
    for i in range(10):  # the holder renews every 5 s: the standby sees a new record every time
        now = T0 + timedelta(seconds=5 * i)
        sighting = observe(sighting, held_by("a", rv=str(i), renewed=now), now)
        assert decide(sighting, "b", now + timedelta(seconds=4), TIMING).action is Action.WAIT


def test_a_standby_takes_over_only_after_a_whole_lease_duration_unchanged_by_its_own_clock() -> None:
    # The holder's renewTime is far in the past by the standby's clock (skew): that alone must not count.
    stale = held_by("a", renewed=T0 - timedelta(hours=1))
    sighting = observe(None, stale, T0)
    assert decide(sighting, "b", T0, TIMING).action is Action.WAIT
    sighting = observe(sighting, stale, T0 + timedelta(seconds=14))
    assert sighting is not None and sighting.changed_at == T0  # unchanged record: first sighting kept
    assert decide(sighting, "b", T0 + timedelta(seconds=14.9), TIMING).action is Action.WAIT
    takeover = decide(sighting, "b", T0 + timedelta(seconds=15), TIMING)
    assert takeover.action is Action.ACQUIRE
    assert takeover.record is not None
    assert takeover.record.holder == "b"
    assert takeover.record.transitions == 3
    assert takeover.record.acquire_time == T0 + timedelta(seconds=15)
    assert takeover.record.resource_version == "1"  # optimistic: only one of two racing standbys wins


def test_a_released_lease_is_taken_at_once() -> None:
    released = release(held_by("a"), "a", T0)
    assert released is not None and released.holder == "" and released.duration_seconds == 1
    decision = decide(observe(None, released, T0), "b", T0, TIMING)
    assert decision.action is Action.ACQUIRE


def test_only_the_holder_releases() -> None:
    assert release(held_by("a"), "b", T0) is None


def test_the_leader_steps_down_before_a_standby_can_take_over() -> None:
    assert not must_step_down(T0, T0 + timedelta(seconds=9.9), TIMING)
    assert must_step_down(T0, T0 + timedelta(seconds=TIMING.renew_deadline), TIMING)
    # The last renewal a standby can have seen is the leader's last success: the leader has stopped
    # (renew_deadline) strictly before a standby's lease_duration runs out.
    assert TIMING.renew_deadline < TIMING.lease_duration


def test_timings_that_could_give_two_leaders_are_refused() -> None:
    with pytest.raises(ValueError):
        Timing(lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError):
        Timing(renew_period=10, renew_deadline=10)


def test_a_record_seen_again_after_a_change_restarts_the_clock() -> None:
    first = observe(None, held_by("a", rv="1"), T0)
    second = observe(first, replace(held_by("a", rv="2")), T0 + timedelta(seconds=10))
    assert second is not None and second.changed_at == T0 + timedelta(seconds=10)
    assert observe(second, None, T0) is None
