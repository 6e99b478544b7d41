"""The operator's own Prometheus metrics, served on the metrics port."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from kultivar.domain.labels import WORKLOAD
from kultivar.domain.plan import Plan
from kultivar.k8s.client import Api

REGISTRY = CollectorRegistry()

RECONCILES = Counter("kultivar_reconciles", "Reconciles by kind and result (success, conflict, error).",
                     ["kind", "result"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("kultivar_reconcile_duration_seconds", "Time one reconcile takes.", ["kind"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
JOBS = Gauge("kultivar_jobs", "Jobs Kultivar created, by workload and state.", ["workload", "state"],
             registry=REGISTRY)
VERSIONS = Counter("kultivar_model_versions_registered", "Model versions registered.", ["namespace", "model"],
                   registry=REGISTRY)
PROMOTIONS = Counter("kultivar_promotions", "Versions made production by the gate or a pin, and canaries "
                     "promoted.", ["namespace", "kind", "name"], registry=REGISTRY)
ROLLBACKS = Counter("kultivar_rollbacks", "Canaries rolled back.", ["namespace", "deployment"], registry=REGISTRY)
DRIFT = Gauge("kultivar_drift_psi", "PSI of live inputs against the training profile, per feature.",
              ["namespace", "deployment", "feature"], registry=REGISTRY)
DRIFTED_SHARE = Gauge("kultivar_drift_drifted_share", "Share of features past the drift threshold.",
                      ["namespace", "deployment"], registry=REGISTRY)
RETRAINING = Counter("kultivar_retraining_runs", "TrainingRuns Kultivar created, by trigger.", ["trigger"],
                     registry=REGISTRY)
LEADER = Gauge("kultivar_leader", "1 while this replica holds the leader-election Lease and reconciles.",
               registry=REGISTRY)

HISTORY = Counter("kultivar_model_history_entries", "Entries added to a Model's status.history, by type "
                  "(Registered, Promoted, Pinned, RolledBack, TrainingStarted) and who caused them.",
                  ["namespace", "model", "type", "actor"], registry=REGISTRY)

_job_states: dict[str, tuple[str, str]] = {}  # Job uid -> (workload, state)


class _ApiCalls(Collector):
    def __init__(self, api: Api) -> None:
        self.api = api

    def collect(self) -> Any:
        family = CounterMetricFamily("kultivar_api_requests", "Requests the reconciles sent to the API server "
                                     "(kopf's watches excluded), by method.", labels=["method"])
        for method, count in sorted(self.api.calls.items()):
            family.add_metric([method], count)
        yield family


def count_api_calls(api: Api) -> None:
    REGISTRY.register(_ApiCalls(api))


def serve(port: int, address: str) -> None:
    start_http_server(port, addr=address, registry=REGISTRY)


def observe_job(job: dict[str, Any], deleted: bool = False) -> None:
    """Keep the per-state Job gauge in step with the watch stream."""
    meta = job.get("metadata") or {}
    uid = meta.get("uid", "")
    workload = (meta.get("labels") or {}).get(WORKLOAD, "unknown")
    status = job.get("status") or {}
    state = "active"
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            state = "succeeded" if cond["type"] == "Complete" else "failed"
    old = _job_states.pop(uid, None)
    if old:
        JOBS.labels(*old).dec()
    if not deleted:
        _job_states[uid] = (workload, state)
        JOBS.labels(workload, state).inc()


def observe_plan(obj: dict[str, Any], plan: Plan) -> None:
    """Count what a reconcile did, from the Events it posted and the status it wrote."""
    meta = obj["metadata"]
    ns, name, kind = meta["namespace"], meta["name"], obj["kind"]
    for event in plan.events:
        if event.reason == "VersionRegistered":
            VERSIONS.labels(ns, name).inc()
        elif event.reason == "Promoted":
            PROMOTIONS.labels(ns, kind, name).inc()
        elif event.reason == "RolledBack":
            ROLLBACKS.labels(ns, name).inc()
        elif event.reason == "RetrainingStarted":
            RETRAINING.labels((plan.status.get("lastRetrain") or {}).get("trigger") or "drift").inc()
    if kind == "Model" and plan.status.get("history"):
        before = (obj.get("status") or {}).get("history") or []
        for item in plan.status["history"]:
            if item not in before:
                HISTORY.labels(ns, name, item.get("type", ""), item.get("actor", "")).inc()
    drift = plan.status.get("drift")
    if kind == "Deployment" and drift and drift.get("topFeatures") is not None:
        for feature in drift.get("topFeatures") or []:
            DRIFT.labels(ns, name, feature["feature"]).set(feature["psi"])
        if drift.get("driftedShare") is not None:
            DRIFTED_SHARE.labels(ns, name).set(drift["driftedShare"])
