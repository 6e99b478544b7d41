"""Planned statuses as the API server would store them, checked against the *Status models.

The operator writes status as a JSON merge patch (RFC 7386); merge_patch below is an independent reading of
the RFC, so a patch that leaves stale nested keys behind fails here, not in a cluster.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from kultivar.api.resources import BY_KIND
from kultivar.domain.plan import Plan
from kultivar.k8s.apply import desired_status, status_patch

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, MergePatch(Target, Patch), transcribed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def without_nulls(value: Any) -> Any:
    """A null stored by an earlier writer (or a test fixture) means absent, as the models read it."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def validate_status(kind: str, status: dict[str, Any]) -> None:
    """Fail on a key or type that the kind's status model (and so its CRD schema) does not have."""
    BY_KIND[kind].status.model_validate(status)


def stored_status(obj: dict[str, Any], plan: Plan, now: datetime = NOW) -> dict[str, Any]:
    """The status on the server after apply_plan writes this plan: checked equal to the planned one and valid."""
    old = obj.get("status") or {}
    planned = desired_status(obj, plan, now)
    stored = merge_patch(old, status_patch(old, planned))
    assert without_nulls(stored) == planned, f"the merge patch leaves {stored} instead of {planned}"
    assert status_patch(stored, planned) == {}, "a second write of the same plan must be a no-op"
    stored = without_nulls(stored)
    validate_status(obj["kind"], stored)
    return stored


def plan_of(result: Any) -> Plan:
    """The Plan in what a planner returns (a Plan, or a tuple or dataclass holding one)."""
    if isinstance(result, Plan):
        return result
    if isinstance(result, tuple):
        return next(r for r in result if isinstance(r, Plan))
    return result.plan
