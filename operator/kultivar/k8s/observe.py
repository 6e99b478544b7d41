"""Read everything one reconcile needs: from the watch cache where a stale read is safe, else from the API server.

From the cache (k8s/cache.py), falling back to a GET for what it has not seen: a TrainingRun itself (the cache
holds the operator's own last status write, so a reconcile never plans on a status older than that), the
Dataset, Model and Jobs a reconcile references, a Model's TrainingRuns. Fresh from the API server: each Model
(it hands out version numbers, written only if unchanged since read), Dataset and Deployment itself, the
Deployments that protect versions from retention, Secrets and claims, and the pods of a finished Job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from kultivar.config import OperatorConfig
from kultivar.domain.dataset import DatasetObserved
from kultivar.domain.deployment import MetricsRequest
from kultivar.domain.jobs import JobOutcome, job_finished, job_outcome
from kultivar.domain.performance import Feedback
from kultivar.domain.registry import ModelObserved
from kultivar.domain.rollout import server_failure_cause
from kultivar.domain.serving import DeploymentObserved, DriftObserved, PerformanceObserved, backends_needed
from kultivar.domain.shadow import ShadowObserved
from kultivar.domain.trainingrun import (
    TrainingRunObserved,
    generation_job,
    registered_version,
    training_job_name,
    unrecorded_jobs,
)
from kultivar.k8s import prometheus, serving
from kultivar.k8s.cache import ObjectCache
from kultivar.k8s.client import Api
from kultivar.k8s.estimators import estimator_problem

log = logging.getLogger(__name__)


def _live(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object unless it is absent or being deleted (then there is nothing to reconcile)."""
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    return obj


def cached(api: Api, cache: ObjectCache | None, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object from the cache, or from the API server when the cache has not seen it."""
    if not name:
        return None
    found = cache.get(kind, namespace, name) if cache is not None else None
    return found if found is not None else api.get(kind, namespace, name)


def job(api: Api, namespace: str, name: str | None, cache: ObjectCache | None = None) -> JobOutcome | None:
    if not name:
        return None
    found = cache.get("Job", namespace, name) if cache is not None else None
    if found is None:
        found = api.get_job(namespace, name)
    if found is None:
        return None
    # Only a finished Job's pods say anything the planners read (the result in their termination message).
    return job_outcome(found, api.list_job_pods(namespace, name) if job_finished(found) else [])


CLAIM_SEEN_SECONDS = 60.0
_claims_seen: dict[tuple[str, str], float] = {}  # (namespace, claim) -> monotonic time it was last found


def store_claim(api: Api, config: OperatorConfig, namespace: str) -> bool | None:
    """Whether the artifact store's claim exists; a claim found in the last minute is not asked for again.

    Every reconcile of every Dataset and TrainingRun asked (one request in ~9 per run at 500 runs), for a claim
    that almost never goes away. A missing claim is always asked again, so creating it is noticed at once; one
    deleted within the minute is reported a minute late (its pods wait Pending meanwhile, as without the check).
    """
    if not (config.store_path and config.store_pvc):
        return None
    key, now = (namespace, config.store_pvc), time.monotonic()
    if now - _claims_seen.get(key, -CLAIM_SEEN_SECONDS) < CLAIM_SEEN_SECONDS:
        return True
    found = api.get_pvc(namespace, config.store_pvc) is not None
    if found:
        _claims_seen[key] = now
    else:
        _claims_seen.pop(key, None)
    return found


def dataset(api: Api, cache: ObjectCache | None, config: OperatorConfig, namespace: str, name: str
            ) -> DatasetObserved | None:
    obj = _live(api.get("Dataset", namespace, name))
    if obj is None:
        return None
    secret = ((obj.get("spec") or {}).get("source") or {}).get("secretRef")
    secret_found = None if not secret else api.get_secret(namespace, secret["name"]) is not None
    progress = (obj.get("status") or {}).get("validation") or {}
    return DatasetObserved(obj=obj, secret_found=secret_found, job=job(api, namespace, progress.get("job"), cache),
                           store_claim_found=store_claim(api, config, namespace))


def unrecorded_generation_job(cache: ObjectCache, run: dict[str, Any]) -> dict[str, Any] | None:
    """The Job of the run's current spec generation when its status does not record it yet: created by the
    reconcile before, which left the status to the next one. Only the cache is asked: a miss plans the create
    again, which finds the Job (409) and records it."""
    meta = run["metadata"]
    name = training_job_name(meta.get("name", ""), int(meta.get("generation") or 0))
    return generation_job(run, cache.peek("Job", meta.get("namespace", ""), name))


def training_run(api: Api, cache: ObjectCache | None, config: OperatorConfig, namespace: str, name: str
                 ) -> TrainingRunObserved | None:
    obj = _live(cached(api, cache, "TrainingRun", namespace, name))
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    model = cached(api, cache, "Model", namespace, (spec.get("modelRef") or {}).get("name", ""))
    holdout = ((spec.get("evaluation") or {}).get("holdout") or {}).get("name")
    adopted = unrecorded_generation_job(cache, obj) if cache is not None else None
    unrecorded: tuple[str, ...] = ()
    generation = int(obj["metadata"].get("generation") or 0)
    if cache is not None and generation > 1:  # a Job of an earlier spec may have been created and never recorded
        earlier = (cache.peek("Job", namespace, training_job_name(name, g)) for g in range(1, generation))
        unrecorded = unrecorded_jobs(obj, [j for j in earlier if j is not None])
    # The Job the plan reads: the one the status records, or this generation's when it is to be recorded.
    job_name = adopted["metadata"]["name"] if adopted else (obj.get("status") or {}).get("jobName")
    return TrainingRunObserved(
        obj=obj,
        dataset=cached(api, cache, "Dataset", namespace, (spec.get("datasetRef") or {}).get("name", "")),
        model=model,
        job=job(api, namespace, job_name, cache),
        registered_version=registered_version(model, obj),
        holdout=cached(api, cache, "Dataset", namespace, holdout) if holdout else None,
        store_claim_found=store_claim(api, config, namespace),
        estimator_problem=estimator_problem(str((spec.get("estimator") or {}).get("className") or ""),
                                            config.estimator_packages),
        generation_job=adopted,
        unrecorded_jobs=unrecorded,
    )


def model(api: Api, cache: ObjectCache | None, namespace: str, name: str) -> ModelObserved | None:
    obj = _live(api.get("Model", namespace, name))
    if obj is None:
        return None
    # A run missing here or older than it is registers on its next event (each one of a run enqueues its Model);
    # what lasts is decided on fresh reads (registry.lasting_decisions), and a version is only ever written
    # against this Model's fresh resourceVersion, so none is handed out twice.
    listed = api.list_objects("TrainingRun", namespace) if cache is None else cache.objects("TrainingRun", namespace)
    runs = [r for r in listed if ((r.get("spec") or {}).get("modelRef") or {}).get("name") == name]
    served: set[int] = set()
    rolled_back: dict[int, str] = {}
    server_failed: dict[int, str] = {}
    for d in api.list_objects("Deployment", namespace):
        spec = d.get("spec") or {}
        if (spec.get("modelRef") or {}).get("name") != name:
            continue
        for version in (d.get("status") or {}).get("rolledBack") or []:
            rolled_back[int(version)] = d["metadata"]["name"]
            if (cause := server_failure_cause(d.get("status") or {}, int(version))) is not None:
                server_failed[int(version)] = cause
        if (spec.get("modelRef") or {}).get("version"):
            served.add(int(spec["modelRef"]["version"]))
        for variant in (d.get("status") or {}).get("variants") or []:
            served.add(int(variant["version"]))
        if ((d.get("status") or {}).get("shadow") or {}).get("version"):  # a shadow is served too
            served.add(int(d["status"]["shadow"]["version"]))
    retiring = (obj.get("status") or {}).get("retiring") or []
    cleanup = {item["job"]: job(api, namespace, item["job"], cache) for item in retiring}
    return ModelObserved(obj=obj, runs=runs, served_versions=frozenset(served), cleanup_jobs=cleanup,
                         rolled_back=rolled_back, server_failed=server_failed)


def confirm_runs(api: Api, observed: ModelObserved, names: set[str]) -> ModelObserved:
    """observed with the named runs read fresh from the API server (dropped when gone, added when the cache
    had not seen them yet)."""
    namespace, model_name = observed.obj["metadata"]["namespace"], observed.obj["metadata"]["name"]
    fresh = {name: api.get("TrainingRun", namespace, name) for name in sorted(names)}
    runs = [r for r in observed.runs if r["metadata"]["name"] not in fresh]
    runs += [r for r in fresh.values()
             if r is not None and ((r.get("spec") or {}).get("modelRef") or {}).get("name") == model_name]
    return replace(observed, runs=runs)


def deployment(api: Api, config: OperatorConfig, namespace: str, name: str) -> DeploymentObserved | None:
    obj = _live(api.get("Deployment", namespace, name))
    if obj is None:
        return None
    ref = ((obj.get("spec") or {}).get("modelRef") or {}).get("name", "")
    # The shadow's Deployment is asked for only while one is wanted or was run (status.shadow says so).
    shadowed = ((obj.get("spec") or {}).get("strategy") or {}).get("shadow") or (obj.get("status") or {}).get("shadow")
    pods = serving.version_pods(api, namespace, name)
    # Once per version: what its pods run the model with (a refused compiled model becomes a Warning Event).
    needed = backends_needed(obj, pods)
    backends = serving.served_backends(api, namespace, name, ref, needed) if needed else None
    # Why a version's pods do not come up, only while one does not (its servers' termination messages).
    starting = any(p.ready < p.desired or not p.updated for p in pods.values())
    return DeploymentObserved(obj=obj, model=api.get("Model", namespace, ref), pods=pods,
                              server_failures=serving.server_failures(api, namespace, name) if starting else None,
                              store_claim_found=store_claim(api, config, namespace),
                              shadow=serving.shadow_pods(api, namespace, name) if shadowed else None,
                              backends=backends)


def retrain_dataset(api: Api, namespace: str, request: MetricsRequest) -> dict[str, Any] | None:
    """The Dataset metrics_needed named: a drift retraining compares its digest with the served version's data."""
    return api.get("Dataset", namespace, request.dataset) if request.dataset else None


def deployment_metrics(api: Api, observed: DeploymentObserved, request: MetricsRequest,
                       now: datetime) -> DeploymentObserved:
    """Read what metrics_needed asked for: the serving window's counts and the drifting version's inputs (with
    the namespace's TrainingRuns), from the pods' own /metrics or from Prometheus. A failing Prometheus is an
    observation too (metrics_error, drift.error): the planner decides what it means."""
    if not request.anything:
        return observed
    meta = observed.obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    runs = api.list_objects("TrainingRun", ns) if request.drift_version is not None or request.performance else []
    if request.source == "pods":  # one scrape of every version answers all
        scraped = serving.scrape(api, ns, name, request.serving)
        drift = None if request.drift_version is None else \
            DriftObserved(request.drift_version, scraped.get(request.drift_version), runs)
        performance = PerformanceObserved(Feedback.of(scraped.values()), runs) if request.performance else None
        observed = replace(observed, metrics=scraped, drift=drift, performance=performance)
        if request.shadow is not None:
            copies = serving.scrape(api, ns, name, [request.shadow], shadow=True)
            observed = replace(observed, shadow=replace(observed.shadow or ShadowObserved(),
                                                        metrics={**scraped, **copies}))
        return observed
    if request.serving:
        try:
            observed = replace(observed, metrics=prometheus.snapshots(
                request.url, ns, name, request.serving, request.serving_window, feedback=request.serving_feedback,
                at=now.timestamp()))
        except prometheus.PrometheusError as e:
            log.warning("Deployment %s/%s: %s", ns, name, e)
            observed = replace(observed, metrics_error=str(e))
    if request.drift_version is not None:
        version = request.drift_version
        try:
            counts = prometheus.snapshots(request.url, ns, name, [version], request.drift_window, features=True,
                                          at=now.timestamp())
            observed = replace(observed, drift=DriftObserved(version, counts.get(version), runs))
        except prometheus.PrometheusError as e:
            observed = replace(observed, drift=DriftObserved(version, None, runs, error=str(e)))
    if request.performance:
        try:
            counts = prometheus.snapshots(request.url, ns, name, request.performance, request.performance_window,
                                          feedback=True, at=now.timestamp())
            observed = replace(observed, performance=PerformanceObserved(Feedback.of(counts.values()), runs))
        except prometheus.PrometheusError as e:
            observed = replace(observed, performance=PerformanceObserved(None, runs, error=str(e)))
    if request.shadow is not None:  # the servers of every version forward and count feedback; the shadow's own
        versions = sorted({*(observed.pods or {}), request.shadow})
        try:
            counts = prometheus.snapshots(request.url, ns, name, versions, request.shadow_window, feedback=True,
                                          shadow=True, at=now.timestamp())
            shadow = replace(observed.shadow or ShadowObserved(), metrics=counts)
        except prometheus.PrometheusError as e:
            shadow = replace(observed.shadow or ShadowObserved(), error=str(e))
        observed = replace(observed, shadow=shadow)
    return observed
