"""What a reconcile decided: the pure result that the controllers apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kultivar.domain.conditions import READY, Cond
from kultivar.domain.reasons import Reason


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True)
class Annotate:
    """Set annotations on one of our objects in the same namespace (metadata only: never a user's spec)."""

    kind: str
    name: str
    annotations: dict[str, str]


@dataclass
class Plan:
    """The desired status of one object plus the side effects that get it there."""

    conditions: list[Cond] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # status fields to set (None deletes a field)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # Jobs that must exist
    delete_jobs: list[str] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)  # our objects that must exist (deterministic names)
    annotate: list[Annotate] = field(default_factory=list)  # applied before create: a refresh precedes the run
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def ready(self) -> Cond | None:
        return next((c for c in self.conditions if c.type == READY), None)

    def not_ready(self, reason: str, message: str, requeue_after: float | None = None) -> Plan:
        self.conditions.append(Cond(READY, False, reason, message))
        if requeue_after is not None:
            self.requeue_after = requeue_after
        return self


def blocked(reason: str, message: str, requeue_after: float | None = None) -> Plan:
    """A spec that passed the schema but cannot work yet: Ready=False naming why and what to do."""
    return Plan().not_ready(reason, message, requeue_after)


def invalid_spec(error: ValidationError) -> Plan:
    """A stored spec the models reject (e.g. a field from a newer CRD): Ready=False naming the field."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc") or ())
    return blocked(Reason.INVALID_SPEC, f"spec{'.' + where if where else ''} is invalid: {first.get('msg')}; "
                                  "fix the manifest")
