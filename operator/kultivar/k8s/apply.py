"""Apply a Plan: create Jobs and objects, annotate, write status (only when it changed), post Events."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kultivar.domain.conditions import READY, get_condition, set_conditions
from kultivar.domain.plan import Event, Plan
from kultivar.domain.reasons import Reason, is_progress
from kultivar.domain.refusal import refused
from kultivar.k8s.cache import ObjectCache
from kultivar.k8s.client import Api, ApiError, RefusedChild

log = logging.getLogger(__name__)



def _without_nulls(value: Any) -> Any:
    """The value as the API server stores it: a null in a merge patch deletes, so a planned null means absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def desired_status(obj: dict[str, Any], plan: Plan, now: datetime) -> dict[str, Any]:
    """The whole status after the plan: each planned top-level field replaces the old one (None removes it)."""
    status = dict(obj.get("status") or {})
    for key, value in plan.status.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    generation = obj["metadata"].get("generation")
    status["conditions"] = set_conditions(status.get("conditions"), plan.conditions, generation, now)
    status["observedGeneration"] = generation
    return _without_nulls(status)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns old into new, at every depth.

    A merge patch merges nested objects, so a key the new value lacks must be sent as null wherever it sits,
    or it survives on the server (e.g. status.drift.since of the previous version). Lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = status_patch(before, value)
            if nested:
                patch[key] = nested
        elif value is None:
            if before is not None:
                patch[key] = None
        elif key not in old or before != value:
            patch[key] = value
    patch.update({key: None for key, value in old.items() if key not in new and value is not None})
    return patch


def apply_plan(api: Api, obj: dict[str, Any], plan: Plan, *, optimistic: bool = False,
               cache: ObjectCache | None = None, status_after_new_job: bool = False) -> dict[str, Any]:
    """Make the plan true. With optimistic, the status write fails (409) if the object changed meanwhile.

    With a cache, the object the status write returns goes into it at once: the next reconcile, which may start
    before the watch reports the write, must not plan on the status from before it (it would start the same Job
    again, find it there, and post its Events twice).

    With status_after_new_job, a reconcile that created a Job stops there: the status and Events that record it
    are left to the reconcile the Job's watch event queues, which finds the Job by its deterministic name and
    plans them again (domain/trainingrun.generation_job). A run's start is then one request, not two, and its
    status write waits in the low lane behind the starts of other runs (controllers/workqueue.py)."""
    meta = obj["metadata"]
    ns, name, kind = meta["namespace"], meta["name"], obj["kind"]
    for job_name in plan.delete_jobs:
        api.delete_job(ns, job_name)
    created = False
    try:
        for job in plan.jobs:
            if api.create_job(ns, job):
                created = True
                log.info("%s %s/%s: created Job %s", kind, ns, name, job["metadata"]["name"])
        # Before the status that records them: a reconcile that fails in between plans the same names again.
        for note in plan.annotate:
            try:
                api.annotate(note.kind, ns, note.name, note.annotations)
            except ApiError as e:  # gone: whatever needed it reports that itself (e.g. DatasetNotFound)
                if e.status != 404:
                    raise
        for child in plan.create:
            try:
                if api.create_if_missing(child["kind"], ns, child):
                    log.info("%s %s/%s: created %s %s", kind, ns, name, child["kind"], child["metadata"]["name"])
            except RefusedChild as e:
                # One of our objects the owner starts now and then (a drift run): say so, but do not hold the
                # owner, whose own work (serving) is not what was refused. The status still records the attempt.
                plan.events.append(Event("Warning", Reason.CHILD_REJECTED, str(e)))
    except RefusedChild as e:
        log.warning("%s %s/%s: %s %s refused: %s", kind, ns, name, e.kind, e.name, e.message)
        refused(plan, e.kind, e.name, e.message)

    old = obj.get("status") or {}
    if created and status_after_new_job:
        return old
    new = desired_status(obj, plan, datetime.now(UTC))
    patch = status_patch(old, new)
    if patch:
        written = api.patch_status(kind, ns, name, patch, meta.get("resourceVersion") if optimistic else None)
        if cache is not None and isinstance(written, dict):
            cache.written(written)

    for event in plan.events:
        api.post_event(obj, event.type, event.reason, event.message)
    before, after = get_condition(old.get("conditions"), READY), get_condition(new.get("conditions"), READY)
    if after and (before or {}).get("reason") != after.get("reason"):
        # Ready=False that means "working on it" (domain/reasons.py) is news, not a warning.
        ok = after["status"] == "True" or is_progress(kind, after["reason"])
        api.post_event(obj, "Normal" if ok else "Warning", after["reason"], after.get("message", ""))
    return new
