"""Drift of live inputs against the training profile, and when it should trigger retraining. Pure.

The inference server counts every input value into the bins of the training profile and exports both the
counts (kultivar_feature_bucket_total) and the profile's proportions (kultivar_feature_reference_ratio). Over
each window the operator computes the PSI per feature of the window's counts: with metricsSource pods the
difference of two scrapes (the first kept in status.drift.baseline), with metricsSource prometheus the
increase() since the window began (drift_since), read by kultivar.domain.promql.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kultivar.api.common import API_VERSION, parse_duration
from kultivar.api.deployment import Monitoring, Retrain
from kultivar.domain.conditions import Cond, now_rfc3339, parse_time
from kultivar.domain.labels import DEPLOYMENT_LABEL, MANAGED_BY, MANAGER, RETRAINED_FROM_LABEL, TRIGGER_LABEL
from kultivar.domain.metrics import Snapshot
from kultivar.domain.plan import Event
from kultivar.domain.profile import OTHER, psi
from kultivar.domain.reasons import Reason

TOP_FEATURES = 10
DRIFTED = "Drifted"
REFRESH_POLL_SECONDS = 5.0  # a Deployment does not watch Datasets: how often it looks at a refresh it waits for


def feature_psi(window: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, float]:
    """PSI per feature of the window's counts against the reference proportions, on the reference's buckets."""
    scores = {}
    for feature, expected in reference.items():
        counts = window.get(feature) or {}
        keys = sorted(expected)
        actual = [counts.get(k, 0.0) for k in keys]
        if sum(actual) <= 0:
            continue
        scores[feature] = float(psi([expected[k] for k in keys], actual))
    return scores


MISSING_BUCKET = "__missing__"  # the server's bucket of missing values (serving.monitoring.MISSING)


def unseen_shares(window: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per categorical (or boolean) feature: the share of the window's present values outside the training data's
    categories.

    The server counts a category it has no bucket for into __other__. When training folded no rare categories into
    __other__ (its training share is 0, as whenever the training data had at most the profile's maximum number of
    categories) that count is exactly the unseen values; otherwise only the excess over the training share can be
    told apart from rare known categories, and the excess is what is reported.
    """
    shares = {}
    for feature, expected in reference.items():
        if OTHER not in expected:
            continue  # a numeric feature: its buckets are bins, every value has one
        counts = window.get(feature) or {}
        present = sum(v for k, v in counts.items() if k != MISSING_BUCKET)
        if present <= 0:
            continue
        trained_present = sum(v for k, v in expected.items() if k != MISSING_BUCKET)
        trained = expected[OTHER] / trained_present if trained_present > 0 else 0.0
        shares[feature] = max(0.0, counts.get(OTHER, 0.0) / present - trained)
    return shares


def window_samples(window: dict[str, dict[str, float]]) -> int:
    """Requests (rows) in the window: every row lands in exactly one bucket of each feature."""
    return int(max((sum(b.values()) for b in window.values()), default=0))


Counts = dict[str, dict[str, float]]  # feature -> bucket -> count


def _minus(current: Counts, base: Counts | None) -> Counts:
    if not base:
        return current
    if window_samples(current) < window_samples(base):  # a pod restarted: its counters began again
        return current
    return {f: {k: max(0.0, v - (base.get(f) or {}).get(k, 0.0)) for k, v in b.items()} for f, b in current.items()}


@dataclass
class DriftDecision:
    status: dict[str, Any]  # the new status.drift
    evaluated: bool  # a window closed and was judged now
    drifted: bool
    message: str
    requeue_after: float
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def drift_since(previous: dict[str, Any] | None, version: int | None) -> datetime | None:
    """Where the open drift window of this version began (None: a new window starts now)."""
    prev = previous or {}
    if version is None or prev.get("version") != version:
        return None
    return parse_time(prev.get("windowStart"))


def check_drift(monitoring: Monitoring, previous: dict[str, Any] | None, version: int,
                counts: dict[str, dict[str, float]], reference: dict[str, dict[str, float]],
                now: datetime, windowed: bool = False) -> DriftDecision:
    """Advance the drift window; judge it when it is complete.

    counts are cumulative (a scrape: the window is their difference from the baseline kept at its start), or,
    when windowed, already the counts since the window's start (Prometheus increase(): no baseline is kept).
    """
    window = parse_duration(monitoring.window)
    prev = dict(previous or {})
    stamp = now_rfc3339(now)
    started = drift_since(prev, version)
    # The planned status.drift replaces the stored one whole (k8s/apply writes a patch that removes what it lacks).
    baseline: dict[str, Any] = {} if windowed else {"baseline": json.dumps(counts, sort_keys=True)}
    if started is None:
        # A new window for a newly served version (or the first one).
        status = {"checkedAt": stamp, "version": version, "samples": 0, "window": monitoring.window,
                  "drifted": False, "windowStart": stamp, **baseline}
        return DriftDecision(status, False, False, "drift window started", window.total_seconds())
    remaining = (started + window - now).total_seconds()
    if remaining > 0:
        return DriftDecision(prev, False, bool(prev.get("drifted")), "window open", remaining)

    delta = counts if windowed else _minus(counts, json.loads(prev.get("baseline") or "{}"))
    samples = window_samples(delta)
    status = {**{k: v for k, v in prev.items() if k != "baseline"}, "checkedAt": stamp, "version": version,
              "samples": samples, "window": monitoring.window, "windowStart": stamp, **baseline}
    status["unseenCategories"] = []  # filled in below when the window is judged
    if samples < monitoring.minSamples:
        for key in ("since", "driftedShare"):
            status.pop(key, None)
        status.update(drifted=False, topFeatures=[])
        return DriftDecision(status, True, False, f"{samples} requests in the window, {monitoring.minSamples} "
                             "needed to judge drift", window.total_seconds())
    scores = feature_psi(delta, reference)
    over = sorted((f for f, s in scores.items() if s > monitoring.threshold), key=lambda f: -scores[f])
    share = len(over) / len(scores) if scores else 0.0
    drifted = bool(scores) and share >= monitoring.driftedShare
    # Values the model has never seen are drift whatever the PSI says: a new category in one feature moves the
    # PSI of that feature only, which driftedShare alone would outvote.
    unseen = unseen_shares(delta, reference)
    unseen_over = sorted((f for f, s in unseen.items() if s > monitoring.maxUnseenShare), key=lambda f: -unseen[f])
    status["unseenCategories"] = [{"feature": f, "share": round(s, 4)}
                                  for f, s in sorted(unseen.items(), key=lambda kv: -kv[1])[:TOP_FEATURES] if s > 0]
    drifted = drifted or bool(unseen_over)
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:TOP_FEATURES]
    status.update(drifted=drifted, driftedShare=round(share, 4),
                  topFeatures=[{"feature": f, "psi": round(s, 4)} for f, s in top],
                  since=(prev.get("since") or stamp) if drifted else None)
    if drifted:
        message = (f"{len(over)}/{len(scores)} features drifted (PSI > {monitoring.threshold}): "
                   f"{', '.join(f'{f}={scores[f]:.2f}' for f in over[:5])}")
        if unseen_over:
            message += (f"; categories unseen in training (share > {monitoring.maxUnseenShare}): "
                        f"{', '.join(f'{f}={unseen[f]:.0%}' for f in unseen_over[:5])}")
        events = [] if prev.get("drifted") else [("Warning", "DriftDetected", message)]
    else:
        message = f"no drift: {len(over)}/{len(scores)} features over PSI {monitoring.threshold}"
        events = [("Normal", "DriftResolved", message)] if prev.get("drifted") else []
    return DriftDecision(status, True, drifted, message, window.total_seconds(), events)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    message: str


def retrain_gate(retrain: Retrain, last: dict[str, Any] | None, run_active: bool, now: datetime, what: str,
                 why: str) -> RetrainDecision:
    """Whether a finding (``what``: "drift", "performance") may start a retraining run now: retraining enabled,
    none of this Deployment's runs still going, and within the cooldown and the daily cap, which drift and
    performance runs share (status.lastRetrain)."""
    if not retrain.enabled:
        return RetrainDecision(False, "RetrainDisabled", f"{why}; retraining is disabled")
    if run_active:
        return RetrainDecision(False, "RetrainInProgress", f"{why}; a retraining run is still in progress")
    last = last or {}
    last_time = parse_time(last.get("time"))
    if last_time and now - last_time < parse_duration(retrain.cooldown):
        return RetrainDecision(False, "RetrainCooldown", f"{why}; next retraining after the cooldown "
                                                         f"{retrain.cooldown} since {last.get('time')}")
    recent = [t for t in (parse_time(x) for x in last.get("recent") or []) if t and now - t < timedelta(days=1)]
    if len(recent) >= retrain.maxRunsPerDay:
        return RetrainDecision(False, "RetrainBudgetExhausted",
                               f"{why}; {len(recent)} retraining runs in the last 24h (maxRunsPerDay "
                               f"{retrain.maxRunsPerDay})")
    return RetrainDecision(True, f"{what.capitalize()}Retrain", why)


def should_retrain(monitoring: Monitoring, drift: DriftDecision, last: dict[str, Any] | None,
                   run_active: bool, now: datetime) -> RetrainDecision:
    """A drifted window starts one retraining run, within the cooldown and the daily budget."""
    if not (drift.evaluated and drift.drifted):
        return RetrainDecision(False, "NotDrifted", "")
    verdict = retrain_gate(monitoring.retrain, last, run_active, now, "drift", "drift persists")
    return RetrainDecision(True, verdict.reason, drift.message) if verdict.retrain else verdict


@dataclass
class Retraining:
    """A retraining run to create, and what it changes in status and Events."""

    run: dict[str, Any]
    last_retrain: dict[str, Any]  # the new status.lastRetrain
    event: Event
    refresh_dataset: str


def start_retraining(deployment: dict[str, Any], source_run: dict[str, Any], last: dict[str, Any] | None,
                     owner_ref: dict[str, Any], now: datetime, trigger: str, why: str) -> Retraining:
    """The run (numbered after every earlier drift and performance run), status.lastRetrain and the Event."""
    last = last or {}
    number = int(last.get("count") or 0) + 1
    run = retraining_run(deployment, source_run, number, owner_ref, trigger)
    stamp = now_rfc3339(now)
    recent = [t for t in last.get("recent") or [] if (p := parse_time(t)) and now - p < timedelta(days=1)]
    dataset = run["spec"]["datasetRef"]["name"]
    status = {"trainingRun": run["metadata"]["name"], "time": stamp, "reason": why, "trigger": trigger,
              "recent": [*recent, stamp], "count": number}
    event = Event("Normal", "RetrainingStarted", f"TrainingRun {run['metadata']['name']} on the newest data of "
                                                 f"Dataset {dataset}: {why}")
    return Retraining(run, status, event, dataset)


def retraining_run(deployment: dict[str, Any], source_run: dict[str, Any], number: int,
                   owner_reference: dict[str, Any], trigger: str = "drift") -> dict[str, Any]:
    """A TrainingRun cloned from the run behind the production version, on the Dataset's newest version."""
    spec = dict(source_run.get("spec") or {})
    name = deployment["metadata"]["name"]
    clone = {k: v for k, v in spec.items() if k in (
        "modelRef", "estimator", "search", "evaluation", "resources", "backoffLimit", "activeDeadlineSeconds",
        "image")}
    clone["datasetRef"] = {"name": spec["datasetRef"]["name"]}  # newest version, not the old pin
    clone["trigger"] = trigger
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRun",
        "metadata": {
            "name": f"{name}-{trigger}-{number}",
            "namespace": deployment["metadata"]["namespace"],
            "labels": {MANAGED_BY: MANAGER, TRIGGER_LABEL: trigger, DEPLOYMENT_LABEL: name,
                       RETRAINED_FROM_LABEL: source_run["metadata"]["name"]},
            "ownerReferences": [owner_reference],
        },
        "spec": clone,
    }


def drift_due(monitoring: Monitoring, previous: dict[str, Any] | None, version: int | None, now: datetime) -> bool:
    """Whether this reconcile must scrape for drift: a window to open, or one that has closed."""
    if not monitoring.enabled or version is None:
        return False
    prev = previous or {}
    started = parse_time(prev.get("windowStart"))
    return prev.get("version") != version or started is None or \
        now >= started + parse_duration(monitoring.window)


def drift_due_in(monitoring: Monitoring, previous: dict[str, Any] | None, version: int | None,
                 now: datetime) -> float | None:
    """Seconds until the open drift window closes (None: none is open). Every reconcile requeues by it, as any
    reconcile in between (a watch event) replaces the requeue of the one that opened the window."""
    started = drift_since(previous, version)
    if not monitoring.enabled or started is None:
        return None
    return max(0.0, (started + parse_duration(monitoring.window) - now).total_seconds())


@dataclass(frozen=True)
class RefreshedData:
    """Where the Dataset's refresh a drift retraining waits for stands."""

    state: str  # refreshing | new | unchanged | failed
    digest: str | None
    message: str


def refreshed_data(dataset: dict[str, Any] | None, name: str, requested: datetime | None,
                   production_digest: str, version: int) -> RefreshedData:
    """Whether the validation requested at ``requested`` has finished, and whether it found data the served version
    was not trained on (the Dataset's rule, in reverse: a refresh requested after the last start starts another)."""
    if dataset is None:
        return RefreshedData("failed", None, f"Dataset {name} no longer exists; not retraining")
    status = dataset.get("status") or {}
    progress = status.get("validation") or {}
    started = parse_time(progress.get("startedAt"))
    if started is None or (requested is not None and requested > started) or \
            progress.get("attempt") != progress.get("completedAttempt"):
        return RefreshedData("refreshing", None, f"validating Dataset {name} again before retraining")
    digest = status.get("digest")
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("status") == "False":
        return RefreshedData("failed", digest, f"the refresh of Dataset {name} failed ({ready.get('reason')}: "
                                               f"{ready.get('message')}); not retraining on the data v{version} "
                                               "was trained on")
    if digest == production_digest:
        return RefreshedData("unchanged", digest, f"the source has no new data since v{version} ({str(digest)[:19]}…): "
                                                  f"Dataset {name} validated again to the same content; waiting "
                                                  "for new data")
    return RefreshedData("new", digest, f"Dataset {name} has new data ({str(digest)[:19]}…)")


def awaiting_refresh(status: dict[str, Any], stable: int | None) -> bool:
    """Whether a drift retraining of the stable version waits for its Dataset's refresh (every reconcile looks)."""
    wait = status.get("retrainWait") or {}
    return bool(wait) and stable is not None and wait.get("version") == stable and not wait.get("skippedAt")


def skip_holds(wait: dict[str, Any], dataset: dict[str, Any] | None, cooldown: str, now: datetime) -> bool:
    """After a skip, the source is not validated again for the same drift until the Dataset has a new version (its
    own refresh schedule, or a user's refresh) or the cooldown has passed: waiting, not polling in a loop."""
    skipped = parse_time(wait.get("skippedAt"))
    if skipped is None:
        return False
    digest = ((dataset or {}).get("status") or {}).get("digest")
    return digest == wait.get("productionDigest") and now - skipped < parse_duration(cooldown)


@dataclass
class MonitoringPlan:
    """What the monitoring loop does in one reconcile of a Deployment."""

    status: dict[str, Any]  # status fields: drift, lastRetrain, retrainWait
    drifted: Cond | None  # the Drifted condition (None: leave it as it is)
    events: list[Event]
    create_run: dict[str, Any] | None = None
    refresh_dataset: str | None = None  # Dataset to validate again before the run trains
    requeue_after: float | None = None
    judged: bool = False  # a window closed with enough requests and was judged now (status.drift.history)


def plan_monitoring(deployment: dict[str, Any], monitoring: Monitoring, stable: int | None,
                    metrics: Snapshot | None, source_run: dict[str, Any] | None, run_active: bool,
                    owner_ref: dict[str, Any], now: datetime, windowed: bool = False,
                    dataset: dict[str, Any] | None = None, production_digest: str | None = None
                    ) -> MonitoringPlan | None:
    """Advance drift detection on the stable version and start a retraining run when it persists.

    A retraining first validates the Dataset again (a refresh), and starts a run only if the refreshed data is not
    the data the stable version was trained on (production_digest): retraining on the same data cannot learn the
    drift, so it is skipped (RetrainSkipped) until the Dataset changes.

    metrics: the stable version's scrape, or with windowed its counts since drift_since() (Prometheus).
    dataset: the Dataset of the run behind the stable version, as observed now."""
    status = deployment.get("status") or {}
    if stable is None or not monitoring.enabled:
        return None
    wait = status.get("retrainWait") or None
    if metrics is None:  # nothing read for drift: only a retraining waiting for its refresh moves on
        if not awaiting_refresh(status, stable):
            return None
        return _await_refresh(MonitoringPlan({}, None, []), deployment, wait or {}, dataset, source_run, stable,
                              status.get("lastRetrain") or {}, owner_ref, now)
    if not metrics.reference:
        why = f"v{stable} exports no training profile; drift cannot be measured"
        return MonitoringPlan({}, Cond(DRIFTED, None, Reason.NO_REFERENCE_PROFILE, why), [], requeue_after=None)
    decision = check_drift(monitoring, status.get("drift"), stable, metrics.features, metrics.reference, now,
                           windowed)
    out = MonitoringPlan({"drift": decision.status}, Cond(DRIFTED, None, Reason.MEASURING, decision.message),
                         [Event(*e) for e in decision.events], requeue_after=decision.requeue_after,
                         judged=decision.evaluated and decision.status.get("driftedShare") is not None)
    if decision.evaluated:
        verdict_reason = Reason.DRIFT_DETECTED if decision.drifted else Reason.NO_DRIFT
        out.drifted = Cond(DRIFTED, decision.drifted, verdict_reason, decision.message)
    elif status.get("drift"):
        was = bool((status.get("drift") or {}).get("drifted"))
        out.drifted = Cond(DRIFTED, was, Reason.DRIFT_DETECTED if was else Reason.NO_DRIFT, decision.message)
    last = status.get("lastRetrain") or {}
    if wait and (wait.get("version") != stable or (decision.evaluated and not decision.drifted)):
        out.status["retrainWait"] = wait = None  # another version serves, or the drift is gone
    if wait and not wait.get("skippedAt"):
        return _await_refresh(out, deployment, wait, dataset, source_run, stable, last, owner_ref, now)
    if wait and skip_holds(wait, dataset, monitoring.retrain.cooldown, now):
        if out.drifted is not None and out.drifted.status:
            out.drifted = Cond(DRIFTED, True, Reason.RETRAIN_SKIPPED, wait.get("message") or "")
        return out
    verdict = should_retrain(monitoring, decision, last, run_active, now)
    if not verdict.retrain:
        if decision.evaluated and decision.drifted and verdict.message:
            out.events.append(Event("Normal", verdict.reason, verdict.message))
        return out
    if source_run is None:
        out.events.append(Event("Warning", "RetrainSourceMissing", f"drift persists but the TrainingRun behind "
                                f"v{stable} no longer exists; create a TrainingRun by hand"))
        return out
    if production_digest and dataset is not None:  # validate the source again first; run only on new data
        name = source_run["spec"]["datasetRef"]["name"]
        out.refresh_dataset = name
        out.status["retrainWait"] = {"version": stable, "dataset": name, "productionDigest": production_digest,
                                     "requestedAt": now_rfc3339(now), "skippedAt": None, "message": verdict.message}
        out.events.append(Event("Normal", "RetrainRequested", f"{verdict.message}; validating Dataset {name} again, "
                                f"to retrain only on data v{stable} was not trained on"))
        out.requeue_after = min(out.requeue_after or REFRESH_POLL_SECONDS, REFRESH_POLL_SECONDS)
        return out
    # Nothing to compare with (a record without a digest) or no Dataset to refresh (the run says DatasetNotFound).
    _start_run(out, deployment, source_run, last, verdict.message, owner_ref, now)
    out.refresh_dataset = source_run["spec"]["datasetRef"]["name"]
    return out


def _await_refresh(out: MonitoringPlan, deployment: dict[str, Any], wait: dict[str, Any],
                   dataset: dict[str, Any] | None, source_run: dict[str, Any] | None, stable: int,
                   last: dict[str, Any], owner_ref: dict[str, Any], now: datetime) -> MonitoringPlan:
    """A retraining waits for its Dataset's refresh: then it starts a run on new data, or is skipped."""
    data = refreshed_data(dataset, wait["dataset"], parse_time(wait.get("requestedAt")), wait["productionDigest"],
                          stable)
    if data.state == "refreshing":
        out.requeue_after = min(out.requeue_after or REFRESH_POLL_SECONDS, REFRESH_POLL_SECONDS)
        return out
    if data.state != "new" or source_run is None:
        message = data.message if source_run is not None else \
            f"the TrainingRun behind v{stable} no longer exists; create a TrainingRun by hand"
        out.status["retrainWait"] = {**wait, "skippedAt": now_rfc3339(now), "message": message}
        out.drifted = Cond(DRIFTED, True, Reason.RETRAIN_SKIPPED, message)
        out.events.append(Event("Normal" if data.state == "unchanged" else "Warning", Reason.RETRAIN_SKIPPED, message))
        return out
    out.status["retrainWait"] = None
    # The run trains on the Dataset's newest version, the one this refresh validated: no further refresh.
    _start_run(out, deployment, source_run, last, f"{wait.get('message') or 'drift'}; {data.message}",
               owner_ref, now)
    return out


def _start_run(out: MonitoringPlan, deployment: dict[str, Any], source_run: dict[str, Any], last: dict[str, Any],
               reason: str, owner_ref: dict[str, Any], now: datetime) -> None:
    started = start_retraining(deployment, source_run, last, owner_ref, now, "drift", reason)
    out.create_run = started.run
    out.status["lastRetrain"] = started.last_retrain
    out.events.append(started.event)
