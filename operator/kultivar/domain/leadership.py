"""Who may reconcile: the decisions of leader election over a coordination.k8s.io/v1 Lease, without I/O.

The shape of client-go's leaderelection. One Lease names the active replica (`holderIdentity`); it renews
the Lease every few seconds and the others wait. A standby may take the Lease over only when it has seen
the record unchanged for a whole `leaseDurationSeconds` by its *own* clock: it never compares the
holder's timestamps with its own, so clock skew between nodes cannot make two leaders. The leader
steps down when it has not renewed within `renew_deadline` (shorter than the lease duration), so it has
stopped before any standby can consider the Lease expired. Every write carries the resourceVersion that
was read: of two replicas racing for an expired Lease, only one write succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum


@dataclass(frozen=True)
class Timing:
    """client-go's defaults, except that the leader renews every 5 s instead of every retry period."""

    lease_duration: float = 15.0  # a standby takes over after seeing no renewal for this long
    renew_deadline: float = 10.0  # the leader steps down when it could not renew for this long
    renew_period: float = 5.0  # how often the leader renews
    retry_period: float = 2.0  # how often a standby looks at the Lease

    def __post_init__(self) -> None:
        if not self.renew_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs renew_period < renew_deadline < lease_duration")


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease's spec leader election reads and writes, and the resourceVersion it was read at."""

    holder: str = ""
    duration_seconds: int = 15
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str = ""


class Action(Enum):
    CREATE = "create"  # no Lease yet: create it holding it
    ACQUIRE = "acquire"  # expired or released: take it over (optimistically)
    RENEW = "renew"  # ours: move renewTime forward (optimistically)
    WAIT = "wait"  # someone else holds it and has renewed recently


@dataclass(frozen=True)
class Decision:
    action: Action
    record: LeaseRecord | None = None  # what to write, for every action but WAIT


@dataclass(frozen=True)
class Sighting:
    """A standby's memory of the Lease: the last record it read and when (its clock) that record last changed."""

    record: LeaseRecord
    changed_at: datetime


def observe(previous: Sighting | None, record: LeaseRecord | None, now: datetime) -> Sighting | None:
    """Remember when the record was last seen changing: a renewal changes resourceVersion and renewTime."""
    if record is None:
        return None
    if previous is not None and previous.record == record:
        return previous
    return Sighting(record, now)


def decide(sighting: Sighting | None, identity: str, now: datetime, timing: Timing) -> Decision:
    if sighting is None:
        return Decision(Action.CREATE, LeaseRecord(
            holder=identity, duration_seconds=round(timing.lease_duration), acquire_time=now, renew_time=now))
    record = sighting.record
    if record.holder == identity:
        return Decision(Action.RENEW, replace(record, renew_time=now, duration_seconds=round(timing.lease_duration)))
    expired = now >= sighting.changed_at + timedelta(seconds=record.duration_seconds)
    if record.holder and not expired:
        return Decision(Action.WAIT)
    return Decision(Action.ACQUIRE, replace(
        record, holder=identity, duration_seconds=round(timing.lease_duration), acquire_time=now, renew_time=now,
        transitions=record.transitions + 1))


def must_step_down(last_renewed: datetime, now: datetime, timing: Timing) -> bool:
    """The leader could not renew for renew_deadline: a standby may soon take over, so stop reconciling."""
    return now - last_renewed >= timedelta(seconds=timing.renew_deadline)


def release(record: LeaseRecord, identity: str, now: datetime) -> LeaseRecord | None:
    """On a clean shutdown, hand the Lease back so a standby takes over at once; None when it is not ours."""
    if record.holder != identity:
        return None
    # client-go's ReleaseOnCancel: an empty holder and a 1 s duration.
    return replace(record, holder="", duration_seconds=1, renew_time=now)
