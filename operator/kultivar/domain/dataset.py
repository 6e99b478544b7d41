"""Dataset decisions: is the spec usable, is a validation due, what did the last one find."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kultivar.api.common import parse_duration
from kultivar.api.contracts import ValidationInput, ValidationResult, failure, success
from kultivar.api.dataset import SKLEARN_DATASETS, DatasetSpec
from kultivar.config import OperatorConfig
from kultivar.domain.conditions import READY, Cond, now_rfc3339, parse_time
from kultivar.domain.jobs import JobOutcome, limit_failure, store_problem, workload_job
from kultivar.domain.labels import GENERATION_ANNOTATION, REFRESH_ANNOTATION, WORKLOAD
from kultivar.domain.plan import Event, Plan, blocked, invalid_spec

VALIDATED = "Validated"
KEEP_VERSIONS = 10
VALIDATION_BACKOFF_LIMIT = 2
VALIDATION_DEADLINE_SECONDS = 3600


def validation_job_name(name: str, attempt: int) -> str:
    return f"{name}-validate-{attempt}"


@dataclass(frozen=True)
class DatasetObserved:
    """What the controller read for one reconcile."""

    obj: dict[str, Any]
    secret_found: bool | None  # None: the spec names no Secret
    job: JobOutcome | None  # the current attempt's Job, None when there is no attempt or it is gone
    store_claim_found: bool | None = None  # None: the store needs no PVC


def spec_problem(spec: DatasetSpec) -> tuple[str, str] | None:
    """A reason and message when the spec is valid by schema but cannot work."""
    uri = spec.source.uri
    if uri.startswith("sklearn://"):
        name = uri[len("sklearn://"):]
        if name not in SKLEARN_DATASETS:
            return ("UnknownSklearnDataset",
                    f"sklearn://{name} is not a bundled scikit-learn dataset; use one of "
                    f"{', '.join('sklearn://' + n for n in SKLEARN_DATASETS)}")
    names = [f.name for f in spec.schema_.features]
    if spec.schema_.target in names:
        return ("TargetIsFeature",
                f"schema.target {spec.schema_.target!r} is also listed in schema.features; remove it from features")
    return None


# The most often a Dataset re-validates by itself, whatever spec.refresh.interval says (0s once started ~20 Jobs a
# minute): refreshes, timed or requested, start at least this long after the previous attempt started.
MIN_REFRESH_INTERVAL = timedelta(minutes=1)


def _refresh_interval(spec: DatasetSpec) -> timedelta | None:
    if not spec.refresh:
        return None
    return max(parse_duration(spec.refresh.interval), MIN_REFRESH_INTERVAL)


def _validation_due(spec: DatasetSpec, status: dict[str, Any], generation: int, now: datetime,
                    refresh_requested: datetime | None = None) -> str | None:
    """Why a new validation attempt should start now, or None."""
    progress = status.get("validation")
    if not progress:
        return "first validation"
    if progress.get("generation") != generation:
        return "the spec changed"
    if progress.get("completedAttempt") != progress.get("attempt"):
        return None  # the current attempt is still running
    started = parse_time(progress.get("startedAt"))
    if started is not None and now - started < MIN_REFRESH_INTERVAL:
        return None  # the floor: see _seconds_until_refresh
    if refresh_requested and (started is None or refresh_requested > started):
        return "a refresh was requested"
    interval = _refresh_interval(spec)
    if interval is not None:
        done = parse_time(progress.get("completedAt"))
        if done is None or now - done >= interval:
            return "refresh interval elapsed"
    return None


def _seconds_until_refresh(spec: DatasetSpec, status: dict[str, Any], now: datetime,
                           refresh_requested: datetime | None = None) -> float | None:
    """When the next refresh is due: the interval after the last attempt ended, never sooner than the floor after
    it started (a requested refresh held back by the floor too)."""
    progress = status.get("validation") or {}
    started, done = parse_time(progress.get("startedAt")), parse_time(progress.get("completedAt"))
    floor = None if started is None else (started + MIN_REFRESH_INTERVAL - now).total_seconds()
    interval = _refresh_interval(spec)
    if refresh_requested is not None and started is not None and refresh_requested > started:
        return max(1.0, floor or 0.0)
    if interval is None or done is None:
        return None
    remaining = (interval - (now - done)).total_seconds()
    return max(1.0, remaining, floor or 0.0)


PVC_ROOT = "/var/lib/kultivar/pvc"  # where pvc://<claim>/<path> sources are mounted (see workloads.data)


def source_volumes(uri: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A pvc:// source's claim, mounted read-only where the workload looks for it."""
    if not uri.startswith("pvc://"):
        return []
    claim = uri[len("pvc://"):].split("/", 1)[0]
    volume = {"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    return [(volume, {"name": "source", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})]


def plan_validation_job(obj: dict[str, Any], spec: DatasetSpec, attempt: int, config: OperatorConfig) -> dict[str, Any]:
    meta = obj["metadata"]
    secrets = tuple(s for s in (spec.source.secretRef.name if spec.source.secretRef else "", config.store_secret) if s)
    return workload_job(
        name=validation_job_name(meta["name"], attempt),
        owner=obj,
        command=["kultivar", "validate-dataset"],
        env=ValidationInput(spec=obj["spec"], namespace=meta["namespace"], name=meta["name"],
                            store=config.store_url).to_env(),
        config=config,
        backoff_limit=VALIDATION_BACKOFF_LIMIT,
        active_deadline_seconds=VALIDATION_DEADLINE_SECONDS,
        secret_names=secrets,
        annotations={GENERATION_ANNOTATION: str(meta.get("generation", 0))},
        extra_labels={WORKLOAD: "validate-dataset"},
        extra_volumes=source_volumes(spec.source.uri),
    )


def _record_success(status: dict[str, Any], result: ValidationResult, now: datetime
                    ) -> tuple[dict[str, Any], Plan]:
    stamp = now_rfc3339(now)
    version: dict[str, Any] = {
        "digest": result.digest,
        "rows": result.rows,
        "snapshotUri": result.snapshotUri,
        "profileUri": result.profileUri,
        "validatedAt": stamp,
    }
    versions = [v for v in status.get("versions") or [] if v.get("digest") != version["digest"]]
    versions = ([*versions, version])[-KEEP_VERSIONS:]
    fields: dict[str, Any] = {
        "digest": version["digest"],
        "rows": version["rows"],
        "columns": result.columns,
        "profileUri": version["profileUri"],
        "snapshotUri": version["snapshotUri"],
        "validatedAt": stamp,
        "versions": versions,
        "lastFailure": None,
    }
    if result.features:
        fields["features"] = [f.wire() for f in result.features]
    changed = status.get("digest") != version["digest"]
    short = version["digest"][:19]
    plan = Plan(events=[Event("Normal", "Validated",
                              f"{version['rows']} rows, digest {short}{' (new version)' if changed else ''}")])
    return fields, plan


def _failure_text(job: JobOutcome) -> tuple[str, str]:
    """Why validation failed: the Job's own limit if it hit one, else what the workload reported."""
    limited = limit_failure(job)
    if limited:
        return limited
    reported = failure(job.result)
    if reported:
        check = f" [{reported.check}]" if reported.check else ""
        return reported.reason, f"{reported.message}{check}".strip()
    return job.reason or "ValidationJobFailed", job.message or "the validation Job failed; see its pod logs"


def plan_dataset(observed: DatasetObserved, config: OperatorConfig, now: datetime) -> Plan:
    obj = observed.obj
    meta = obj["metadata"]
    generation = int(meta.get("generation") or 0)
    status = dict(obj.get("status") or {})
    try:
        spec = DatasetSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        return invalid_spec(e)
    problem = spec_problem(spec)
    if problem:
        return blocked(*problem)
    if observed.secret_found is False and spec.source.secretRef:
        return blocked("SecretNotFound",
                       f"Secret {spec.source.secretRef.name!r} named in spec.source.secretRef does not exist in "
                       f"namespace {meta['namespace']}; create it", requeue_after=30)

    store = store_problem(config, observed.store_claim_found)
    if store:
        return blocked(*store, requeue_after=30)

    plan = Plan()
    progress = dict(status.get("validation") or {})
    job = observed.job
    has_version = bool(status.get("digest"))
    stamp = now_rfc3339(now)

    # A finished attempt whose result is not recorded yet: record it first.
    if progress and progress.get("completedAttempt") != progress.get("attempt") and job and job.state in (
        "Succeeded", "Failed"
    ):
        result = success(ValidationResult, job.result)
        progress.update(completedAttempt=progress["attempt"], completedAt=stamp)
        if job.state == "Succeeded" and result is not None:
            fields, outcome = _record_success(status, result, now)
            plan.status.update(fields)
            plan.events.extend(outcome.events)
            plan.conditions += [
                Cond(VALIDATED, True, "Validated", f"attempt {progress['attempt']} passed every check"),
                Cond(READY, True, "Validated", f"{fields['rows']} rows, digest {fields['digest']}"),
            ]
        else:
            reason, message = _failure_text(job)
            if job.state == "Succeeded":  # exit 0 but no usable result: treat as a workload bug
                reason, message = "UnreadableResult", f"validation finished without a readable result: {message}"
            keep = f"; the last valid version {status['digest']} stays usable" if has_version else ""
            plan.status["lastFailure"] = f"{reason}: {message}"
            plan.conditions += [
                Cond(VALIDATED, False, reason, message),
                Cond(READY, False, reason, f"{message}{keep}. Fix the data or spec; validation runs again on "
                                           "every spec change."),
            ]
        plan.status["validation"] = progress
        status = {**status, **plan.status}
        has_version = bool(status.get("digest"))

    requested = parse_time((meta.get("annotations") or {}).get(REFRESH_ANNOTATION))
    due = _validation_due(spec, {**status, "validation": progress or None}, generation, now, requested)
    if due:
        attempt = int(progress.get("attempt") or 0) + 1
        job_obj = plan_validation_job(obj, spec, attempt, config)
        job_name = job_obj["metadata"]["name"]
        plan.jobs.append(job_obj)
        if progress and progress.get("completedAttempt") != progress.get("attempt"):
            plan.delete_jobs.append(progress["job"])  # superseded by the new spec
        plan.status["validation"] = {
            **progress,
            "attempt": attempt,
            "generation": generation,
            "job": job_name,
            "startedAt": stamp,
        }
        plan.events.append(Event("Normal", "ValidationStarted", f"validating ({due}) in Job {job_name}"))
        plan.conditions.append(Cond(VALIDATED, None, "Validating", f"attempt {attempt}: {due}"))
        if not has_version:
            plan.conditions.append(Cond(READY, False, "Validating", "validating the data for the first time"))
        return plan

    if progress and progress.get("completedAttempt") != progress.get("attempt"):
        # Running. A Job that vanished (deleted by hand) is re-created under the same name.
        if job is None:
            plan.jobs.append(plan_validation_job(obj, spec, int(progress["attempt"]), config))
        if not has_version:
            plan.conditions.append(Cond(READY, False, "Validating", "validating the data for the first time"))
        return plan

    plan.requeue_after = _seconds_until_refresh(spec, {**status, "validation": progress or None}, now, requested)
    return plan
