"""The Model registry: version allocation, the promotion gate, production, retention."""

from __future__ import annotations

import math
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
from kultivar.domain.labels import WORKLOAD
from kultivar.domain.plan import Event, Plan, blocked
from kultivar.domain.stats import (
    SegmentMetric,
    SegmentRegression,
    improvement,
    worst_segment_regression,
)


@dataclass(frozen=True)
class ModelObserved:
    obj: dict[str, Any]
    runs: list[dict[str, Any]]  # TrainingRuns whose modelRef names this Model
    served_versions: frozenset[int]  # versions some Deployment serves (never removed by retention)
    cleanup_jobs: dict[str, JobOutcome | None] = field(default_factory=dict)  # by name, for status.retiring
    rolled_back: dict[int, str] = field(default_factory=dict)  # version -> Deployment whose canary of it failed
    # version -> its model server's reason and message, when that Deployment rolled it back for a server that
    # failed for good rather than for its analysis (kultivar.domain.rollout.server_failure_cause)
    server_failed: dict[int, str] = field(default_factory=dict)


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
        extra_labels={WORKLOAD: "delete-artifacts"},
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
    """Whether a beats b on metric by at least margin; an exact tie is never an improvement."""
    gain = improvement(metric, a, b)
    return gain > 0 and gain >= margin


def gate(promotion: Promotion, candidate: dict[str, Any], production: dict[str, Any] | None) -> GateDecision:
    """Decide whether candidate may replace production.

    With an ``evaluation`` block (the training Job scored candidate, production and a baseline on the same
    held-out rows) the gate decides on those numbers; records without one (trained by an older Kultivar) are
    compared by their own held-out scores.
    """
    metric = promotion.metric or candidate.get("metric")
    evaluation = candidate.get("evaluation")
    metrics = (evaluation or {}).get("candidate") if evaluation else candidate.get("metrics")
    value = (metrics or {}).get(metric) if metric else None
    if metric is None or value is None:
        return GateDecision(False, "MetricMissing", f"the version has no {metric or 'headline'} metric to judge")
    if promotion.minimum is not None:
        ok = value <= promotion.minimum if metric in LOWER_IS_BETTER else value >= promotion.minimum
        if not ok:
            bound = "maximum" if metric in LOWER_IS_BETTER else "minimum"
            return GateDecision(False, "BelowMinimum", f"{metric}={value:.4g} misses the {bound} {promotion.minimum:g}")
    if evaluation:
        return _same_data_gate(promotion, metric, value, evaluation, production)
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


def _rows_text(evaluation: dict[str, Any]) -> str:
    digest = str(evaluation.get("dataDigest") or "")
    short = digest[:19] + "…" if len(digest) > 19 else digest
    where = f"holdout Dataset {evaluation['dataset']} ({short})" if evaluation.get("dataset") else short
    return f"on the same {evaluation.get('rows')} held-out rows of {where}"


def _interval_text(interval: dict[str, Any] | None) -> str:
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return ""
    return (f", {interval['confidence'] * 100:g} % interval [{interval['low']:+.3g}, {interval['high']:+.3g}] "
            f"({interval['resamples']} bootstrap resamples)")


def _significant(metric: str, interval: dict[str, Any], margin: float) -> bool:
    """Whether the whole interval of candidate - other lies on the better side of ``margin``."""
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return False
    worst_gain = -high if metric in LOWER_IS_BETTER else low
    return bool(worst_gain > margin)


def _interval_for(evaluation: dict[str, Any], metric: str, against: str, confidence: float
                  ) -> dict[str, Any] | None:
    interval = evaluation.get("interval")
    if (not interval or interval.get("against") != against or interval.get("metric") != metric
            or not math.isclose(float(interval.get("confidence") or 0), confidence)):
        return None
    return dict(interval)


def _same_data_gate(promotion: Promotion, metric: str, value: float, evaluation: dict[str, Any],
                    production: dict[str, Any] | None) -> GateDecision:
    rows = _rows_text(evaluation)
    confidence = promotion.significance.confidence if promotion.significance else None
    base = (evaluation.get("baseline") or {}).get(metric)
    if base is not None and not better(metric, value, base):
        return GateDecision(False, "NotBetterThanBaseline",
                            f"{metric} {value:.4g} does not beat the baseline {evaluation.get('baselineStrategy')} "
                            f"({base:.4g}) {rows}")
    compared = evaluation.get("production")
    if production is None:
        summary = f"{metric} {value:.4g} vs baseline {base:.4g} {rows}" if base is not None else f"{metric} {value:.4g}"
        if confidence is not None:
            interval = _interval_for(evaluation, metric, "baseline", confidence)
            if interval is None or not _significant(metric, interval, 0.0):
                return GateDecision(False, "NotSignificant",
                                    f"{summary}{_interval_text(interval)}: the gain over the baseline is not "
                                    f"significant at {confidence * 100:g} %")
            summary += _interval_text(interval)
        return GateDecision(True, "Passed", f"{summary}; no production version to compare with")

    number = production["version"]
    if evaluation.get("productionError"):
        return GateDecision(False, "ComparisonFailed",
                            f"could not compare with production v{number}: {evaluation['productionError']}; "
                            "not promoted")
    if not compared or compared.get("version") != number:
        was = f"v{compared['version']}" if compared else "no version"
        # The numbers are for another champion: promoting on them would skip the comparison that matters.
        return GateDecision(False, "ProductionChanged",
                            f"the training Job compared with {was}, but production is now v{number}; not promoted "
                            f"(retrain to compare with v{number})")
    current = (compared.get("metrics") or {}).get(metric)
    if current is None:
        return GateDecision(False, "MetricMissing", f"production v{number} has no {metric} {rows}")
    summary = f"{metric} {value:.4g} vs v{number} {current:.4g} {rows}: {value - current:+.3g}"
    margin = promotion.minImprovement
    if confidence is not None:
        interval = _interval_for(evaluation, metric, "production", confidence)
        summary += _interval_text(interval)
        if interval is None:
            return GateDecision(False, "NotSignificant",
                                f"{summary}: no {confidence * 100:g} % interval on {metric} was computed; "
                                "not promoted (retrain with this promotion policy)")
        if not _significant(metric, interval, margin):
            gain = f"a gain of more than {margin:g}" if margin else "a gain"
            return GateDecision(False, "NotSignificant",
                                f"{summary}: not significant (the interval does not show {gain}); not promoted")
    else:
        summary += _interval_text(evaluation.get("interval") if (evaluation.get("interval") or {}).get(
            "against") == "production" else None)
        if not better(metric, value, current, margin):
            tie = " (a tie is not an improvement)" if value == current else ""
            return GateDecision(False, "NoImprovement",
                                f"{summary}: does not beat production by more than {margin:g}{tie}")
    if promotion.segmentMargin is not None and evaluation.get("segments"):
        worse = _segment_regressions(metric, evaluation["segments"], promotion.segmentMargin,
                                     promotion.segmentMinRows)
        if worse:
            return GateDecision(False, "SegmentRegression",
                                f"{summary}, but worse than production by more than {promotion.segmentMargin:g} "
                                f"in {len(worse)} segment(s): {'; '.join(w.message for w in worse[:3])}")
    return GateDecision(True, "Improved", summary)


def _segment_regressions(metric: str, rows: list[dict[str, Any]], margin: float, min_rows: int
                         ) -> list[SegmentRegression]:
    def side(key: str) -> list[SegmentMetric]:
        return [SegmentMetric(r["feature"], str(r["value"]), int(r["rows"]), metric, float(r[key]))
                for r in rows if r.get(key) is not None]

    return worst_segment_regression(side("candidate"), side("production"), margin, min_rows)


def _succeeded(run: dict[str, Any]) -> bool:
    cond = get_condition((run.get("status") or {}).get("conditions"), "Succeeded")
    return bool(cond and cond.get("status") == "True" and (run.get("status") or {}).get("artifact"))


def registry_view(run: dict[str, Any]) -> tuple[Any, ...]:
    """What plan_model reads of a run that changes during the run's life: when this changes, the Model has
    something to do (record that it started, register it, let retention drop a version it settled); when only
    the rest changes (Pending -> Training, attempts), it does not, and is not reconciled for it."""
    status = run.get("status") or {}
    succeeded = get_condition(status.get("conditions"), "Succeeded") or {}
    return ((run.get("spec") or {}).get("modelRef") or {}).get("name"), status.get("completionTime"), \
        succeeded.get("status"), bool(status.get("artifact")), status.get("modelVersion")


def lasting_decisions(observed: ModelObserved, dropped: list[dict[str, Any]]) -> set[str]:
    """The runs that a plan's lasting decisions rest on: those it registers as new versions, and those whose
    versions retention drops. When the runs came from a cache, these are read again fresh and the Model is
    planned again, so a stale run can only delay a version, never register one twice or drop one early."""
    versions = ((observed.obj.get("status") or {}).get("versions")) or []
    names = {r["metadata"]["name"] for r in pending_registrations(observed.runs, versions)}
    return names | {str(v["trainingRun"]) for v in dropped if v.get("trainingRun")}


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
        "compiledArtifact": st.get("compiledArtifact"),
        "metric": st.get("metric"),
        "metrics": st.get("metrics") or {},
        "evaluation": st.get("evaluation"),
        "cardUri": st.get("cardUri"),
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
            cause = observed.server_failed.get(number)
            rolled["rollbackReason"] = f"its canary in Deployment {deployment} failed analysis" if cause is None \
                else f"its model server failed in Deployment {deployment} ({cause})"
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
