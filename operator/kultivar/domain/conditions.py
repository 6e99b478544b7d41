"""Conditions per the Kubernetes API conventions, computed without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"


def now_rfc3339(now: datetime) -> str:
    """RFC 3339 in UTC, to the second. `now` is required: the domain never reads the clock itself."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Cond:
    """A condition to set: the reconcile decides these; set_conditions merges them into status."""

    type: str
    status: bool | None  # None is "Unknown"
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def set_conditions(
    existing: list[dict[str, Any]] | None,
    wanted: list[Cond],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Merge wanted conditions into existing ones, keeping lastTransitionTime when the status is unchanged."""
    by_type = {c["type"]: dict(c) for c in existing or []}
    stamp = now_rfc3339(now)
    for cond in wanted:
        old = by_type.get(cond.type) or {}
        changed = old.get("status") != cond.status_text
        by_type[cond.type] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message[:32768],
            "lastTransitionTime": stamp if changed else old.get("lastTransitionTime") or stamp,
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    # Ready first: it is what people and tools look at.
    return sorted(by_type.values(), key=lambda c: (c["type"] != READY, c["type"]))


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for c in conditions or []:
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: list[dict[str, Any]] | None, type_: str = READY) -> bool:
    c = get_condition(conditions, type_)
    return bool(c and c.get("status") == "True")
