"""TrainingRun decisions: may it start, which Job trains it, what did the Job report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kultivar.api.contracts import (
    HoldoutRef,
    ProductionRef,
    TrainingFeature,
    TrainingInput,
    TrainingResult,
    estimator_not_allowed,
    failure,
    success,
)
from kultivar.api.dataset import missing_tokens
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.config import OperatorConfig
from kultivar.domain.conditions import READY, Cond, get_condition, now_rfc3339, parse_time
from kultivar.domain.jobs import JobOutcome, job_finished, limit_failure, store_problem, workload_job
from kultivar.domain.labels import DATASET_DIGEST_ANNOTATION, GENERATION_ANNOTATION, REFRESH_ANNOTATION, WORKLOAD
from kultivar.domain.plan import Event, Plan, invalid_spec

SUCCEEDED = "Succeeded"
# Job failure reasons that Kubernetes reports, mapped to what a user reads.
JOB_REASONS = {
    "BackoffLimitExceeded": "BackoffLimitExceeded",
    "DeadlineExceeded": "DeadlineExceeded",
    "PodFailurePolicy": "TrainingFailed",
}


def training_job_name(run: str, generation: int) -> str:
    return f"{run}-train-{generation}"


@dataclass(frozen=True)
class TrainingRunObserved:
    obj: dict[str, Any]
    dataset: dict[str, Any] | None
    model: dict[str, Any] | None
    job: JobOutcome | None  # the Job of status.jobName, or generation_job's when there is one
    registered_version: int | None  # the Model version that records this run, if any
    store_claim_found: bool | None = None  # None: the store needs no PVC
    holdout: dict[str, Any] | None = None  # the Dataset named by spec.evaluation.holdout
    # Why the estimator class cannot be imported in the operator (found by observing, only for permitted packages).
    estimator_problem: str | None = None
    # The Job of the current spec generation (its deterministic name, owned by this run) while the status does
    # not record it yet: the reconcile that created it left the status write to the next one (see adopt_job).
    generation_job: dict[str, Any] | None = None
    # This run's unfinished Jobs of earlier generations other than status.jobName (created by a reconcile whose
    # status write had not happened yet when the spec changed): superseded like the one status.jobName names.
    unrecorded_jobs: tuple[str, ...] = ()


def unrecorded_jobs(run: dict[str, Any], jobs: list[dict[str, Any]]) -> tuple[str, ...]:
    """Of jobs, the names of this run's unfinished training Jobs of earlier generations its status does not name."""
    meta = run["metadata"]
    generation = int(meta.get("generation") or 0)
    names = {training_job_name(meta["name"], g) for g in range(1, generation)} - {
        (run.get("status") or {}).get("jobName")}
    return tuple(sorted(
        j["metadata"]["name"] for j in jobs
        if j["metadata"].get("name") in names and not job_finished(j) and not j["metadata"].get("deletionTimestamp")
        and any(o.get("uid") == meta.get("uid") for o in j["metadata"].get("ownerReferences") or [])
    ))


def generation_job(run: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any] | None:
    """job when it is the run's Job for its current spec generation that the status does not record yet."""
    if job is None or started(run):
        return None
    meta = run["metadata"]
    if job["metadata"].get("name") != training_job_name(meta["name"], int(meta.get("generation") or 0)):
        return None
    owners = job["metadata"].get("ownerReferences") or []
    # A run deleted and created again under its name: the old run's Job waits for garbage collection.
    return job if any(o.get("uid") == meta.get("uid") for o in owners) else None


def registered_version(model: dict[str, Any] | None, run: dict[str, Any]) -> int | None:
    """The version of model that records run, if any."""
    for v in ((model or {}).get("status") or {}).get("versions") or []:
        if v.get("trainingRunUid") == run["metadata"]["uid"]:
            return int(v["version"])
    return None


def started(run: dict[str, Any]) -> bool:
    """Whether the run has a training Job for its current spec generation (running or finished)."""
    status = run.get("status") or {}
    return bool(status.get("jobName")) and status.get("specAttempt") == int(run["metadata"].get("generation") or 0)


def reference_matters(run: dict[str, Any], kind: str) -> bool:
    """Whether a change of the run's Dataset or Model (kind) can change what plan_training_run decides for it.

    The operator asks this for every run that references an object, on every event of that object: a Model
    writes its status for each run it registers, so reconciling every referring run each time cost ~250
    requests per run at 500 runs. What the run reads of them:
    - before its Job starts, both (does each exist, the data version, the production version the Job scores);
    - once succeeded, the Model, until the run has recorded the version it got (a recorded version stays the
      run's: version numbers are never handed out again, and retention removes old ones from the Model);
    - in between (its Job runs, or failed for this spec), neither: only the Job's events and a spec edit move it.
    The run's own events always reconcile it, so a decision taken on a run's stale state is taken again."""
    succeeded = get_condition((run.get("status") or {}).get("conditions"), SUCCEEDED)
    if succeeded and succeeded.get("status") == "True":
        return kind == "Model" and (run.get("status") or {}).get("modelVersion") is None
    return not started(run)


def dataset_version(dataset: dict[str, Any], pinned: str | None) -> dict[str, Any] | None:
    """The Dataset version to train on: the pinned digest or the latest valid one."""
    status = dataset.get("status") or {}
    versions = status.get("versions") or []
    if pinned:
        return next((v for v in versions if v.get("digest") == pinned), None)
    if not status.get("digest"):
        return None
    return next((v for v in versions if v.get("digest") == status["digest"]), None) or {
        "digest": status["digest"], "snapshotUri": status.get("snapshotUri"), "profileUri": status.get("profileUri"),
    }


def dataset_features(dataset: dict[str, Any]) -> list[TrainingFeature]:
    """The Dataset's features (declared, else as validation inferred them) as the training pod is told about them.

    A categorical feature carries its declared ``allowed`` values and the texts the source's reader takes as
    missing (:func:`kultivar.api.dataset.missing_tokens`): training writes both into the model manifest, so the
    server refuses what the Deployment asks it to and reads "None"/"nan" as missing exactly when training did.
    """
    spec = dataset.get("spec") or {}
    source = spec.get("source") or {}
    tokens = list(missing_tokens(str(source.get("uri") or ""), str(source.get("format") or "auto")))
    declared = (spec.get("schema") or {}).get("features") or []
    seen = (dataset.get("status") or {}).get("features") or []
    out = []
    for f in declared or seen:
        categorical = f["type"] == "categorical"
        out.append(TrainingFeature(name=f["name"], type=f["type"],
                                   allowed=f.get("allowed") if categorical else None,
                                   missingTokens=tokens if categorical else None))
    return out


def production_ref(model: dict[str, Any] | None) -> ProductionRef | None:
    """The Model's production version, which the training Job scores on the candidate's held-out rows."""
    status = (model or {}).get("status") or {}
    number = status.get("productionVersion")
    record = next((v for v in status.get("versions") or [] if v.get("version") == number), None)
    if number is None or record is None or not (record.get("artifact") or {}).get("uri"):
        return None
    return ProductionRef(version=int(number), uri=record["artifact"]["uri"], digest=record["artifact"]["digest"])


def segment_problem(spec: TrainingRunSpec, dataset: dict[str, Any]) -> str | None:
    """Why spec.evaluation.segments cannot be used with this Dataset (reason InvalidSegments), or None."""
    types = {f.name: f.type for f in dataset_features(dataset)}
    for name in spec.evaluation.segments:
        if name not in types:
            known = ", ".join(n for n, t in types.items() if t != "numeric") or "none"
            return (f"spec.evaluation.segments names {name!r}, which is not a feature of Dataset "
                    f"{spec.datasetRef.name!r} (its categorical features: {known})")
        if types[name] == "numeric":
            return (f"spec.evaluation.segments names {name!r}, a numeric feature: segments are the values of a "
                    "categorical or boolean feature; remove it or declare it categorical in the Dataset's schema")
    return None


def holdout_ref(spec: TrainingRunSpec, dataset: dict[str, Any], holdout: dict[str, Any] | None
                ) -> tuple[HoldoutRef | None, tuple[str, str] | None]:
    """The holdout's validated version, or the (reason, message) why the run cannot use it yet."""
    if spec.evaluation.holdout is None:
        return None, None
    name = spec.evaluation.holdout.name
    if holdout is None:
        return None, ("HoldoutNotFound", f"spec.evaluation.holdout names Dataset {name!r}, which does not exist; "
                                         "create it or fix the name")
    waiting = ("WaitingForHoldout", f"waiting for holdout Dataset {name!r} to have a validated version")
    if not dataset_features(holdout):
        return None, waiting  # neither declared nor seen yet: nothing to compare the columns with
    mine, theirs = (((d.get("spec") or {}).get("schema") or {}) for d in (dataset, holdout))
    problems = []
    for key in ("target", "task"):
        if mine.get(key) != theirs.get(key):
            problems.append(f"its {key} is {theirs.get(key)!r}, not {mine.get(key)!r}")
    want = {f.name: f.type for f in dataset_features(dataset)}
    have = {f.name: f.type for f in dataset_features(holdout)}
    if missing := sorted(set(want) - set(have)):
        problems.append(f"it lacks the features {', '.join(missing)}")
    if extra := sorted(set(have) - set(want)):
        problems.append(f"it has features {', '.join(extra)} that Dataset {spec.datasetRef.name!r} does not")
    if typed := sorted(n for n in set(want) & set(have) if want[n] != have[n]):
        problems.append("types differ for " + ", ".join(f"{n} ({have[n]}, not {want[n]})" for n in typed))
    if problems:
        return None, ("HoldoutMismatch", f"holdout Dataset {name!r} does not have the columns of Dataset "
                                         f"{spec.datasetRef.name!r}: {'; '.join(problems)}")
    version = dataset_version(holdout, None)
    if version is None or not version.get("snapshotUri"):
        return None, waiting
    return HoldoutRef(name=name, snapshot=str(version["snapshotUri"]), digest=str(version["digest"])), None


def plan_training_job(
    obj: dict[str, Any], spec: TrainingRunSpec, dataset: dict[str, Any], version: dict[str, Any],
    config: OperatorConfig, model: dict[str, Any] | None = None, holdout: HoldoutRef | None = None,
) -> dict[str, Any]:
    meta = obj["metadata"]
    model_spec = (model or {}).get("spec") or {}
    schema = (dataset.get("spec") or {}).get("schema") or {}
    secret = ((dataset.get("spec") or {}).get("source") or {}).get("secretRef") or {}
    return workload_job(
        name=training_job_name(meta["name"], int(meta.get("generation") or 0)),
        owner=obj,
        command=["kultivar", "train"],
        env=TrainingInput(
            spec=obj["spec"], namespace=meta["namespace"], name=meta["name"], store=config.store_url,
            uid=meta["uid"], dataset_snapshot=str(version.get("snapshotUri") or ""),
            dataset_digest=str(version["digest"]), profile_uri=version.get("profileUri") or None,
            task=schema.get("task"), target=str(schema.get("target", "")), features=dataset_features(dataset),
            estimator_packages=config.estimator_packages, production=production_ref(model),
            promotion=model_spec.get("promotion"), model=spec.modelRef.name,
            model_description=model_spec.get("description"), holdout=holdout,
        ).to_env(),
        config=config,
        image=spec.image,
        resources=spec.resources.wire() if spec.resources else None,
        backoff_limit=spec.backoffLimit,
        active_deadline_seconds=spec.activeDeadlineSeconds,
        secret_names=tuple(s for s in (secret.get("name", ""), config.store_secret) if s),
        annotations={GENERATION_ANNOTATION: str(meta.get("generation", 0)),
                     DATASET_DIGEST_ANNOTATION: str(version["digest"])},
        extra_labels={WORKLOAD: "train"},
    )


def pending_message(job: str) -> str:
    return f"Job {job} is waiting for its pod to start"


def _rounded(score: object) -> float | None:
    """Four decimals for the printer column; status.metrics keeps full precision."""
    return round(float(score), 4) if isinstance(score, (int, float)) else None


def _failure(job: JobOutcome) -> tuple[str, str]:
    """Why the run failed: the Job's own limit if it hit one, else what the workload reported."""
    limited = limit_failure(job)
    if limited:
        return limited
    reported = failure(job.result)
    if reported:
        return reported.reason, reported.message
    reason = JOB_REASONS.get(job.reason, job.reason or "TrainingFailed")
    return reason, job.message or "the training Job failed; see the pod logs"


def _registered(plan: Plan, status: dict[str, Any], spec: TrainingRunSpec, observed: TrainingRunObserved) -> Plan:
    version = observed.registered_version
    model = spec.modelRef.name
    if version is None and status.get("modelVersion") is not None:
        # Registered before; the Model has since dropped the version (retention) or was deleted. The number
        # stays this run's (never handed out again) and the Model will not register the run twice.
        version = int(status["modelVersion"])
    if version is None:
        if observed.model is None:
            return plan.not_ready("ModelNotFound", f"training succeeded but Model {model!r} does not exist; create "
                                                   "it and the run is registered", requeue_after=None)
        return plan.not_ready("Registering", f"training succeeded; waiting for Model {model!r} to register it")
    if status.get("modelVersion") != version:
        plan.status["modelVersion"] = version
        plan.events.append(Event("Normal", "Registered", f"registered as version {version} of Model {model}"))
    plan.conditions.append(Cond(READY, True, "Registered", f"version {version} of Model {model}"))
    return plan


def plan_training_run(observed: TrainingRunObserved, config: OperatorConfig, now: datetime) -> Plan:
    obj = observed.obj
    meta = obj["metadata"]
    generation = int(meta.get("generation") or 0)
    status = dict(obj.get("status") or {})
    try:
        spec = TrainingRunSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        return invalid_spec(e)

    succeeded = get_condition(status.get("conditions"), SUCCEEDED)
    if succeeded and succeeded.get("status") == "True":
        # Done: a version is immutable, so later spec edits change nothing.
        return _registered(Plan(), status, spec, observed)

    plan = Plan()
    plan.delete_jobs.extend(observed.unrecorded_jobs)
    job = observed.job
    current = status.get("specAttempt") == generation and status.get("jobName")
    stamp = now_rfc3339(now)

    if current and job and job.state in ("Succeeded", "Failed") and not status.get("completionTime"):
        result = success(TrainingResult, job.result)
        plan.status.update(completionTime=job.completion_time or stamp, attempts=job.attempts)
        if job.state == "Succeeded" and result is not None:
            plan.status.update(
                metric=result.metric, score=_rounded(result.score), metrics=result.metrics,
                artifact=result.artifact.wire(), bestParams=result.bestParams or None,
                manifestUri=result.manifestUri, evaluation=result.evaluation.wire() if result.evaluation else None,
                cardUri=result.cardUri,
                compiledArtifact=result.compiledArtifact.wire() if result.compiledArtifact else None,
            )
            plan.conditions.append(Cond(SUCCEEDED, True, "Trained",
                                        f"{result.metric}={result.score} on held-out data"))
            plan.events.append(Event("Normal", "Trained", f"{result.metric}={result.score}"))
            return _registered(plan, status, spec, observed)
        reason, message = _failure(job) if job.state == "Failed" else (
            "UnreadableResult", "training exited 0 without a readable result")
        plan.conditions.append(Cond(SUCCEEDED, False, reason, message))
        return plan.not_ready(reason, f"{message}. Fix the spec and the run starts again.")

    if current and status.get("completionTime"):
        return plan  # failed for this generation; wait for a fixed spec

    if current:
        if job is None:  # deleted by hand or not yet visible: create it again under the same name
            return _start(plan, obj, spec, observed, config, stamp, status.get("datasetDigest"))
        if job.state == "Running":
            return _running(plan, status["jobName"], job, status.get("startTime"))
        return plan.not_ready("Pending", pending_message(status["jobName"]))

    if observed.generation_job is not None:
        # Started already: record the Job and the data it trains on (its annotation), whatever the references
        # say now, as for any Job the status records.
        job_meta = observed.generation_job["metadata"]
        digest = str((job_meta.get("annotations") or {}).get(DATASET_DIGEST_ANNOTATION) or "")
        # Its pod may run already (the record waited behind other runs' starts): then one write says both.
        return _started(plan, obj, job_meta["name"], digest, job)

    # A new spec generation (or the first one): check references, then start a Job for it.
    if status.get("jobName") and not status.get("completionTime"):
        plan.delete_jobs.append(status["jobName"])  # superseded by the new spec
    if observed.dataset is None:
        return plan.not_ready("DatasetNotFound", f"Dataset {spec.datasetRef.name!r} does not exist in namespace "
                                                 f"{meta['namespace']}; create it or fix spec.datasetRef")
    if observed.model is None:
        return plan.not_ready("ModelNotFound", f"Model {spec.modelRef.name!r} does not exist in namespace "
                                               f"{meta['namespace']}; create it or fix spec.modelRef")
    not_allowed = estimator_not_allowed(spec.estimator.className, config.estimator_packages)
    if not_allowed:
        return plan.not_ready("EstimatorNotAllowed", not_allowed)
    if observed.estimator_problem:
        return plan.not_ready("EstimatorImportFailed", observed.estimator_problem)
    store = store_problem(config, observed.store_claim_found)
    if store:
        return plan.not_ready(*store, requeue_after=30)
    return _start(plan, obj, spec, observed, config, stamp, spec.datasetRef.digest)


def _start(
    plan: Plan, obj: dict[str, Any], spec: TrainingRunSpec, observed: TrainingRunObserved,
    config: OperatorConfig, stamp: str, digest: str | None,
) -> Plan:
    dataset = observed.dataset
    if dataset is None:
        return plan.not_ready("DatasetNotFound", f"Dataset {spec.datasetRef.name!r} does not exist")
    progress = (dataset.get("status") or {}).get("validation") or {}
    requested = parse_time(((dataset.get("metadata") or {}).get("annotations") or {}).get(REFRESH_ANNOTATION))
    started = parse_time(progress.get("startedAt"))
    if not digest and requested and (started is None or requested > started):
        return plan.not_ready("WaitingForDataset", f"waiting for Dataset {spec.datasetRef.name!r}: a refresh "
                                                   "was requested and has not started yet")
    if not digest and progress and progress.get("attempt") != progress.get("completedAttempt"):
        # A newer version of the data is being validated: train on it, not on the one it replaces.
        return plan.not_ready("WaitingForDataset", f"waiting for Dataset {spec.datasetRef.name!r}: validation "
                                                   f"attempt {progress.get('attempt')} is in progress")
    version = dataset_version(dataset, digest)
    if version is None:
        if digest:
            return plan.not_ready("DatasetVersionNotFound",
                                  f"Dataset {spec.datasetRef.name!r} has no validated version {digest}; "
                                  "pick one from its status.versions or remove the pin")
        ready = get_condition((dataset.get("status") or {}).get("conditions"), READY) or {}
        why = ready.get("message") or "it has not been validated yet"
        return plan.not_ready("WaitingForDataset", f"waiting for Dataset {spec.datasetRef.name!r}: {why}")
    segments = segment_problem(spec, dataset)
    if segments:
        return plan.not_ready("InvalidSegments", segments)
    holdout, waiting = holdout_ref(spec, dataset, observed.holdout)
    if waiting:
        return plan.not_ready(*waiting)
    job = plan_training_job(obj, spec, dataset, version, config, observed.model, holdout)
    plan.jobs.append(job)
    return _started(plan, obj, job["metadata"]["name"], str(version["digest"]))


def _running(plan: Plan, name: str, job: JobOutcome, recorded_start: str | None) -> Plan:
    plan.status["attempts"] = job.attempts
    if job.start_time and not recorded_start:
        plan.status["startTime"] = job.start_time
    plan.conditions.append(Cond(SUCCEEDED, None, "Training", f"attempt {job.attempts} running"))
    return plan.not_ready("Training", f"training in Job {name} (attempt {job.attempts})")


def _started(plan: Plan, obj: dict[str, Any], name: str, digest: str, job: JobOutcome | None = None) -> Plan:
    """The status, conditions and Event of a run whose Job for this generation is name (created, or found with
    its state job)."""
    plan.status.update(
        jobName=name, specAttempt=int(obj["metadata"].get("generation") or 0), datasetDigest=digest or None,
        startTime=None, completionTime=None, metric=None, score=None, metrics=None, artifact=None, manifestUri=None,
        bestParams=None, attempts=0, evaluation=None, cardUri=None, compiledArtifact=None,
    )
    plan.events.append(Event("Normal", "TrainingStarted", f"Job {name} trains on {digest[:19]}"))
    if job is not None and job.state == "Running":
        return _running(plan, name, job, None)
    plan.conditions.append(Cond(SUCCEEDED, None, "Training", f"Job {name} created"))
    # Pending, as the next reconcile finds the new Job: "Training" here flapped Training -> Pending -> Training
    # (two status writes and two Events per run more, for nothing).
    return plan.not_ready("Pending", pending_message(name))
