"""The Model registry: version allocation, the promotion gate, production, retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kultivar.api.contracts import RetentionInput
from kultivar.api.model import ModelSpec, Promotion
from kultivar.api.trainingrun import LOWER_IS_BETTER
from kultivar.config import OperatorConfig
from kultivar.domain import history
from kultivar.domain.conditions import READY, Cond, get_condition, now_rfc3339
from kultivar.domain.jobs import JobOutcome, workload_job
from kultivar.domain.plan import Event, Plan, blocked


@dataclass(frozen=True)
class ModelObserved:
    obj: dict[str, Any]
    runs: list[dict[str, Any]]  # TrainingRuns whose modelRef names this Model
    served_versions: frozenset[int]  # versions some Deployment serves (never removed by retention)
    cleanup_jobs: dict[str, JobOutcome | None] = field(default_factory=dict)  # by name, for status.retiring
    rolled_back: dict[int, str] = field(default_factory=dict)  # version -> Deployment whose canary of it failed


def retire_job_name(model: str, version: int) -> str:
    return f"{model}-retire-v{version}"


def plan_retire_job(obj: dict[str, Any], retired: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    meta = obj["metadata"]
    return workload_job(
        name=retired["job"], owner=obj, command=["kultivar", "delete-artifacts"],
        env=RetentionInput(store=config.store_url, delete=[retired["artifactUri"]], namespace=meta["namespace"],
                           name=meta["name"]).to_env(),
        config=config, backoff_limit=3, active_deadline_seconds=600,
        secret_names=(config.store_secret,) if config.store_secret else (),
        extra_labels={"kultivar.io/workload": "delete-artifacts"},
    )


def _cleanup(plan: Plan, obj: dict[str, Any], retiring: list[dict[str, Any]],
             jobs: dict[str, JobOutcome | None], config: OperatorConfig) -> list[dict[str, Any]]:
    """Drive artifact deletion of retired versions; entries leave status once their Job finished."""
    still = []
    for item in retiring:
        job = jobs.get(item["job"])
        if job is not None and job.state == "Succeeded":
            plan.events.append(Event("Normal", "ArtifactsDeleted", f"artifacts of v{item['version']} deleted"))
            continue
        if job is not None and job.state == "Failed":
            plan.events.append(Event("Warning", "ArtifactCleanupFailed",
                                     f"could not delete the artifacts of v{item['version']} ({item['artifactUri']}): "
                                     f"{(job.result or {}).get('message') or job.message}; delete them by hand"))
            continue
        if job is None:
            plan.jobs.append(plan_retire_job(obj, item, config))
        still.append(item)
    return still


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    message: str

    def wire(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "message": self.message}


def better(metric: str, a: float, b: float, margin: float = 0.0) -> bool:
    """Whether a strictly beats b, by at least margin on metric: an exact tie is no improvement."""
    gain = b - a if metric in LOWER_IS_BETTER else a - b
    return gain > 0 and gain >= margin


def gate(promotion: Promotion, candidate: dict[str, Any], production: dict[str, Any] | None) -> GateDecision:
    """Decide whether candidate may replace production."""
    metric = promotion.metric or candidate.get("metric")
    value = (candidate.get("metrics") or {}).get(metric) if metric else None
    if metric is None or value is None:
        return GateDecision(False, "MetricMissing", f"the version has no {metric or 'headline'} metric to judge")
    if promotion.minimum is not None:
        ok = value <= promotion.minimum if metric in LOWER_IS_BETTER else value >= promotion.minimum
        if not ok:
            bound = "maximum" if metric in LOWER_IS_BETTER else "minimum"
            return GateDecision(False, "BelowMinimum", f"{metric}={value:.4g} misses the {bound} {promotion.minimum:g}")
    if production is not None:
        current = (production.get("metrics") or {}).get(metric)
        if current is not None and not better(metric, value, current, promotion.minImprovement):
            return GateDecision(
                False, "NoImprovement",
                f"{metric}={value:.4g} does not beat production v{production['version']} ({current:.4g})"
                + (f" by {promotion.minImprovement:g}" if promotion.minImprovement else ""),
            )
        if current is not None:
            return GateDecision(True, "Improved", f"{metric}={value:.4g} beats production v{production['version']} "
                                                  f"({current:.4g})")
    return GateDecision(True, "Passed", f"{metric}={value:.4g} passes the gate")


def _succeeded(run: dict[str, Any]) -> bool:
    cond = get_condition((run.get("status") or {}).get("conditions"), "Succeeded")
    return bool(cond and cond.get("status") == "True" and (run.get("status") or {}).get("artifact"))


def pending_registrations(runs: list[dict[str, Any]], versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Succeeded runs that no version records yet, in completion order (so numbering follows it)."""
    known = {v.get("trainingRunUid") for v in versions} | {v.get("trainingRun") for v in versions}
    fresh = [
        r for r in runs
        if _succeeded(r)
        and r["metadata"]["uid"] not in known
        and (r.get("status") or {}).get("modelVersion") is None
    ]
    return sorted(fresh, key=lambda r: ((r.get("status") or {}).get("completionTime") or "", r["metadata"]["name"]))


def _version_record(number: int, run: dict[str, Any], now: datetime) -> dict[str, Any]:
    st = run.get("status") or {}
    spec = run.get("spec") or {}
    record = {
        "version": number,
        "trainingRun": run["metadata"]["name"],
        "trainingRunUid": run["metadata"]["uid"],
        "datasetDigest": st.get("datasetDigest") or "",
        "dataset": (spec.get("datasetRef") or {}).get("name"),
        "artifact": st["artifact"],
        "manifestUri": st.get("manifestUri"),
        "metric": st.get("metric"),
        "metrics": st.get("metrics") or {},
        "image": spec.get("image"),
        "createdAt": now_rfc3339(now),
    }
    return {k: v for k, v in record.items() if v is not None}


def _retention(versions: list[dict[str, Any]], keep: int, protected: set[int], runs_by_name: dict[str, Any]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split versions into kept and dropped: the newest `keep`, plus every protected one.

    A version is only dropped once its run has recorded the number (or is gone); otherwise the run would
    look unregistered and be registered again.
    """
    newest = {v["version"] for v in sorted(versions, key=lambda v: v["version"])[-keep:]}
    kept, dropped = [], []
    for v in versions:
        run = runs_by_name.get(v.get("trainingRun", ""))
        run_settled = run is None or (run.get("status") or {}).get("modelVersion") == v["version"]
        if v["version"] in newest or v["version"] in protected or not run_settled:
            kept.append(v)
        else:
            dropped.append(v)
    return kept, dropped


def plan_model(observed: ModelObserved, now: datetime, config: OperatorConfig | None = None
               ) -> tuple[Plan, list[dict[str, Any]]]:
    """The Model's new status, and the versions retention removed (a Job deletes their artifacts)."""
    config = config or OperatorConfig()
    obj = observed.obj
    status = dict(obj.get("status") or {})
    try:
        spec = ModelSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        return blocked("InvalidSpec", f"spec is invalid: {e.errors()[0].get('msg')}; fix the manifest"), []

    plan = Plan()
    versions = [dict(v) for v in status.get("versions") or []]
    latest = int(status.get("latestVersion") or 0)
    production = status.get("productionVersion")
    by_number = {v["version"]: v for v in versions}
    happened = history.started_runs(status.get("history"), observed.runs,
                                    {v.get("trainingRun", "") for v in versions}, now)

    for run in pending_registrations(observed.runs, versions):
        latest += 1
        record = _version_record(latest, run, now)
        decision = gate(spec.promotion, record, by_number.get(production) if production else None)
        record["gate"] = decision.wire()
        versions.append(record)
        by_number[latest] = record
        plan.events.append(Event("Normal", "VersionRegistered",
                                 f"v{latest} from TrainingRun {record['trainingRun']}: {decision.message}"))
        happened.append(history.entry(now, "Registered", f"from TrainingRun {record['trainingRun']}: "
                                      f"{decision.message}", version=latest, training_run=record["trainingRun"]))
        if spec.promotion.policy == "Automatic":
            if decision.passed:
                plan.events.append(Event("Normal", "Promoted", f"v{latest} is now production ({decision.message})"))
                happened.append(history.entry(now, "Promoted", decision.message, version=latest))
                production = latest
            else:
                plan.events.append(Event("Warning", "GateFailed",
                                         f"v{latest} stays out of production: {decision.message}"))

    if spec.promotion.policy == "Manual":
        if spec.production is None:
            production = None
        elif spec.production not in by_number:
            plan.status.update(versions=versions, latestVersion=latest or None,
                               history=history.appended(status.get("history"), happened))
            return plan.not_ready(
                "VersionNotFound",
                f"spec.production pins v{spec.production}, which is not registered (known: "
                f"{', '.join(f'v{n}' for n in sorted(by_number)) or 'none'}); pin an existing version",
            ), []
        else:
            if production != spec.production:
                plan.events.append(Event("Normal", "Promoted", f"v{spec.production} pinned as production"))
                happened.append(history.entry(
                    now, "Pinned", f"spec.production pins v{spec.production}" +
                    (f" (was v{production})" if production else ""),
                    history.field_manager(obj, ["spec", "production"]) or "unknown", version=spec.production))
            production = spec.production
    elif production is not None and production not in by_number:
        production = None

    for number, deployment in observed.rolled_back.items():
        rolled = by_number.get(number)
        if rolled is not None and not rolled.get("rolledBack"):
            rolled["rolledBack"] = True
            rolled["rollbackReason"] = f"its canary in Deployment {deployment} failed analysis"
            plan.events.append(Event("Warning", "VersionRolledBack", f"v{number}: {rolled['rollbackReason']}"))
            happened.append(history.entry(now, "RolledBack", rolled["rollbackReason"], version=number))

    # A rolled-back production version is not what is served: under Automatic, production returns to the
    # newest version that passed the gate and was not rolled back itself.
    if spec.promotion.policy == "Automatic" and production is not None and by_number[production].get("rolledBack"):
        fallback = last_good_version(versions, production)
        why = f"v{production} was rolled back: {by_number[production].get('rollbackReason')}"
        plan.events.append(Event("Warning", "ProductionRolledBack",
                                 f"{why}; production is {f'v{fallback} again' if fallback else 'unset'}"))
        if fallback is not None:
            happened.append(history.entry(now, "Promoted", f"production again: {why}", version=fallback))
        production = fallback

    protected = set(observed.served_versions) | ({production} if production else set())
    runs_by_name = {r["metadata"]["name"]: r for r in observed.runs}
    versions, dropped = _retention(versions, spec.retention.keepVersions, protected, runs_by_name)
    retiring = list(status.get("retiring") or [])
    for v in dropped:
        plan.events.append(Event("Normal", "VersionRetired", f"v{v['version']} removed by retention"))
        retiring.append({"version": v["version"], "artifactUri": v["artifact"]["uri"],
                         "job": retire_job_name(obj["metadata"]["name"], v["version"])})
    plan.status["retiring"] = _cleanup(plan, obj, retiring, observed.cleanup_jobs, config)

    prod_record = by_number.get(production) if production else None
    metric = spec.promotion.metric or (prod_record or {}).get("metric")
    plan.status.update(
        versions=sorted(versions, key=lambda v: v["version"]),
        latestVersion=latest or None,
        productionVersion=production,
        productionMetric=(prod_record or {}).get("metrics", {}).get(metric) if metric else None,
    )
    if happened:
        plan.status["history"] = history.appended(status.get("history"), happened)
    if production is None:
        if spec.promotion.policy == "Manual":
            why = "set spec.production to a registered version"
        else:
            why = _why_none_passed(versions)
        return plan.not_ready("NoProductionVersion", f"{len(versions)} version(s) registered; {why}"), dropped
    prod = by_number[production]
    if prod.get("rolledBack"):  # Manual: the pin stands, but nothing serves it; say so where users look
        return plan.not_ready(
            "ProductionRolledBack",
            f"spec.production pins v{production}, but {prod.get('rollbackReason')} and it was rolled back, so the "
            "Deployment keeps serving its stable version; pin another version",
        ), dropped
    newer_rolled_back = [v for v in sorted(by_number) if v > production and by_number[v].get("rolledBack")]
    message = f"v{production} is production"
    if newer_rolled_back:
        last = by_number[newer_rolled_back[-1]]
        message += f" (v{last['version']} was rolled back: {last.get('rollbackReason')})"
    plan.conditions.append(Cond(READY, True, "ProductionSet", message))
    return plan, dropped


def last_good_version(versions: list[dict[str, Any]], instead_of: int) -> int | None:
    """The newest version other than instead_of that passed the gate and was never rolled back."""
    good = [v["version"] for v in versions
            if v["version"] != instead_of and (v.get("gate") or {}).get("passed") and not v.get("rolledBack")]
    return max(good, default=None)


def _why_none_passed(versions: list[dict[str, Any]], shown: int = 3) -> str:
    """Why no version is production under Automatic, from the newest versions' own records."""
    if not versions:
        return "no version has passed the gate yet"
    newest = sorted(versions, key=lambda v: v["version"])[-shown:]
    details = "; ".join(f"v{v['version']}: {_why_not_production(v)}" for v in newest)
    older = len(versions) - len(newest)
    return f"none can be production ({details}{f'; and {older} older' if older else ''})"


def _why_not_production(version: dict[str, Any]) -> str:
    gate_result = version.get("gate") or {}
    if version.get("rolledBack"):
        return f"rolled back, {version.get('rollbackReason')}"
    return str(gate_result.get("message") or "not judged by the gate")
