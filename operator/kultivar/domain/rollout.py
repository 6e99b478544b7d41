"""The rollout state machine: which versions run with how many replicas and how much traffic, and when a
canary advances, is promoted or rolled back. Pure: every input is observed state, every output a decision.

States (status.rollout.state) of a canary of version C while version S is stable:
  Starting  -> C's pods are coming up at the first step's size; S keeps all its replicas (no 503 window).
  Stepping  -> C takes steps[i].weight; after steps[i].pause an analysis of C's requests in this step decides:
               Pass -> next step (or Promoting after the last), Fail -> rolled back, Inconclusive -> wait.
  Promoting -> C scales to the full replica count; once Ready, C becomes stable and S is removed.
spec.strategy.canary.paused holds Starting and Stepping where they are (the user's pause); Promoting finishes.
A canary whose model server failed for good (its termination message, kultivar.domain.server_failures) is rolled
back in any state, paused or not, like a failed analysis (failedCheck ServerFailed): waiting would wait forever.
A rolled-back version is remembered (status.rolledBack) and never rolled out again by itself.
The prediction-shift check is reported but not enforced when stable's predictions are no reference for the
canary's (see stale_reference()): a canary retrained on new data after its stable drifted must predict otherwise.

An ABTest runs fixed variants; every analysis interval it measures each version's requests, error rate and p95
latency since the test began (status.abTest, status.variants).

Metrics are counts over a window. With metricsSource pods they are cumulative scrapes, and the window is their
difference from a baseline snapshot kept in status (rollout.baseline, abTest.baseline). With metricsSource
prometheus they already are the window's counts (increase() since metrics_since()), and no baseline is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kultivar.api.common import parse_duration
from kultivar.api.deployment import ABTestDecision, DeploymentSpec
from kultivar.domain.abtest import judge_ab_test
from kultivar.domain.conditions import now_rfc3339, parse_time
from kultivar.domain.metrics import Snapshot, Verdict, analyse, summarize
from kultivar.domain.performance import Feedback, canary_outcome
from kultivar.domain.plan import Event
from kultivar.domain.reasons import Reason
from kultivar.domain.server_failures import ServerFailure

# The Progressing reason of each canary state: explicit, so a reason seen in `kubectl describe` is greppable.
# status.lastAnalysis.failedCheck of a rollout ended because the canary's model server failed for good.
SERVER_FAILED_CHECK = Reason.SERVER_FAILED.value

CANARY_REASONS = {"Starting": Reason.CANARY_STARTING, "Stepping": Reason.CANARY_STEPPING,
                  "Promoting": Reason.CANARY_PROMOTING}


@dataclass(frozen=True)
class Pods:
    """Observed state of one version's apps/v1 Deployment."""

    desired: int
    ready: int
    updated: bool = True  # the Deployment's pod template matches what we want (rollout of it finished)

    @property
    def is_ready(self) -> bool:
        return self.updated and self.ready >= self.desired


@dataclass
class RolloutInput:
    spec: DeploymentSpec
    target: int  # the version that should end up serving (pinned, or the Model's production version)
    stable: int | None  # status.stableVersion
    rollout: dict[str, Any] | None  # status.rollout
    rolled_back: list[int]  # status.rolledBack: versions whose canary failed
    pods: dict[int, Pods]  # per version with a Deployment
    metrics: dict[int, Snapshot] | None  # per version (see windowed()), None when not read this time
    now: datetime
    last_analysis: dict[str, Any] | None = None  # status.lastAnalysis: why the last rollback happened
    ab_test: dict[str, Any] | None = None  # status.abTest
    metrics_error: str | None = None  # the metrics source could not be read this time (why)
    stale_reference: str | None = None  # why stable's predictions are no reference for the canary's
    # With spec.autoscaling: the count the rollout sizes versions from (kultivar.domain.autoscaling.scale_base,
    # from the stable version's current, autoscaled count) instead of spec.replicas.
    scale_base: int | None = None
    # Per version, a server that refused to start for good (read from its pods while a version is not ready).
    server_failures: dict[int, ServerFailure] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.spec.replicas if self.scale_base is None else self.scale_base

    def sized(self, pods: Pods | None, count: int) -> bool:
        """Whether a version's Deployment is at its planned size and ready. An autoscaled one may be above it:
        its autoscaler's minReplicas is the planned count, load may ask for more."""
        if pods is None or not pods.is_ready:
            return False
        return pods.desired >= count if self.scale_base is not None else pods.desired == count

    def canary_count(self, weight: int) -> int:
        """The canary's replicas at weight percent; with autoscaling never above maxReplicas."""
        c = canary_replicas(self.n, weight, self.spec.traffic.router)
        scaling = self.spec.autoscaling
        return min(c, scaling.maxReplicas) if scaling is not None and self.scale_base is not None else c


@dataclass
class RolloutDecision:
    replicas: dict[int, int]  # versions that must have a Deployment, and its replica count
    weights: dict[int, int]  # traffic percent per version
    stable: int | None
    canary: int | None
    rollout: dict[str, Any] | None
    rolled_back: list[int]
    progressing: tuple[bool, str, str] = (False, Reason.STABLE, "")  # status, reason, message
    degraded: tuple[bool, str, str] = (False, Reason.AS_EXPECTED, "")
    analysis: dict[str, Any] | None = None
    needs_metrics: bool = False  # analysis is due: scrape and decide again
    requeue_after: float | None = None
    events: list[Event] = field(default_factory=list)
    ab_test: dict[str, Any] | None = None  # the new status.abTest
    measured: dict[int, dict[str, Any]] = field(default_factory=dict)  # version -> numbers measured now


def windowed(spec: DeploymentSpec) -> bool:
    """Whether metrics arrive as the window's counts (Prometheus increase()) rather than cumulative scrapes."""
    return spec.strategy.canary.analysis.metricsSource == "prometheus"


def metrics_since(spec: DeploymentSpec, status: dict[str, Any]) -> datetime | None:
    """Where the window that serving metrics must cover begins now: the canary step, or the A/B test."""
    if spec.strategy.type == "ABTest" and spec.strategy.abTest:
        return parse_time((status.get("abTest") or {}).get("startedAt"))
    rollout = status.get("rollout") or {}
    if rollout.get("state") == "Stepping":
        return parse_time(rollout.get("stepStartedAt"))
    return None


def stale_reference(model: dict[str, Any] | None, status: dict[str, Any], stable: int | None,
                    canary: int) -> str | None:
    """Why the stable version's predictions are no reference for the canary's (None: they are one).

    The prediction-shift check assumes both versions should predict alike on the same requests. That does not hold
    once this Deployment's monitoring found the stable's live inputs drifted away from its training data and the
    canary learned from another (typically newer) version of the data, as the drift retraining run does: predicting
    differently is then why the canary exists, and a stable that predicts nearly one class on the drifted inputs
    would roll back every retrained version. Such a canary's shift is still measured and reported; its error rate
    and latency are still enforced, and the Model's gate has judged it on held-out rows of the newer data.
    A canary trained on the same data as the stable (say, other parameters) is held to the check even then.
    """
    records = {v.get("version"): v for v in ((model or {}).get("status") or {}).get("versions") or []}
    old, new = records.get(stable), records.get(canary)
    if stable is None or not old or not new or not new.get("datasetDigest") \
            or new.get("datasetDigest") == old.get("datasetDigest"):
        return None
    drift = status.get("drift") or {}
    drifted = drift.get("version") == stable and bool(drift.get("drifted"))
    retrained = bool(new.get("trainingRun")) and (status.get("lastRetrain") or {}).get("trainingRun") == \
        new.get("trainingRun")
    if not (drifted or retrained):
        return None
    return (f"prediction shift not enforced: v{canary} was trained on other data than v{stable}, whose inputs "
            f"drifted, so v{stable}'s predictions are no reference")


def canary_replicas(total: int, weight: int, router: str) -> int:
    """Replicas for the canary at weight percent. With the replicas router the share is c / (total + c)."""
    if router == "gatewayAPI":
        return max(1, round(total * weight / 100))
    return max(1, round(total * weight / max(1, 100 - weight)))


def _step_due(rollout: dict[str, Any], pause: str, now: datetime) -> float:
    """Seconds until the current step's pause is over (<= 0: due)."""
    started = parse_time(rollout.get("stepStartedAt")) or now
    return (started + parse_duration(pause) - now).total_seconds()


def _baseline(metrics: dict[int, Snapshot] | None, spec: DeploymentSpec) -> str | None:
    if not metrics or windowed(spec):
        return None
    return json.dumps({str(v): s.wire(features=False) for v, s in metrics.items()}, sort_keys=True)


def _baseline_of(rollout: dict[str, Any], version: int) -> Snapshot | None:
    raw = rollout.get("baseline")
    if not raw:
        return None
    return Snapshot.from_wire(json.loads(raw).get(str(version)))


def _feedback_window(inp: RolloutInput, state: dict[str, Any]) -> Feedback:
    """The feedback counted in the current window about every version (any pod counts any version's)."""
    current = Feedback.of((inp.metrics or {}).values())
    if windowed(inp.spec):
        return current
    raw = state.get("baseline")
    base = [s for s in (Snapshot.from_wire(d) for d in json.loads(raw).values()) if s] if raw else []
    return current.since(Feedback.of(base))


def _judge_outcomes(inp: RolloutInput, verdict: Verdict, state: dict[str, Any], stable: int, target: int
                    ) -> Verdict:
    """With monitoring.performance, a canary that passed the serving checks is judged on outcomes too: worse is a
    Fail (rolled back), too few labels Inconclusive (the step waits for them)."""
    performance = inp.spec.monitoring.performance
    if performance is None or verdict.verdict != "Pass":
        return verdict
    outcome = canary_outcome(performance, _feedback_window(inp, state), target, stable)
    if outcome.verdict == "worse":
        return replace(verdict, verdict="Fail", failed_check="LiveMetric", message=f"{outcome.message}; "
                                                                                   f"{verdict.message}")
    if outcome.verdict == "inconclusive":
        return replace(verdict, verdict="Inconclusive", message=f"{outcome.message}; {verdict.message}")
    return replace(verdict, message=f"{verdict.message}; {outcome.message}")


def _window(inp: RolloutInput, state: dict[str, Any], version: int) -> Snapshot:
    """The version's counts in the current window (canary step or A/B test)."""
    current = (inp.metrics or {}).get(version, Snapshot())
    return current if windowed(inp.spec) else current.minus(_baseline_of(state, version))


def decide(inp: RolloutInput) -> RolloutDecision:
    spec, n = inp.spec, inp.n
    strategy = spec.strategy
    if strategy.type == "ABTest" and strategy.abTest:
        return _ab_test(inp)
    stable, target = inp.stable, inp.target

    if stable is None:  # nothing serves yet: no canary, bring the target up directly
        pods = inp.pods.get(target)
        if pods and pods.is_ready:
            return RolloutDecision({target: n}, {target: 100}, target, None, None, inp.rolled_back,
                                   events=[Event("Normal", "Deployed", f"v{target} serves all traffic")])
        return RolloutDecision({target: n}, {target: 100}, None, None, None, inp.rolled_back,
                               progressing=(True, Reason.DEPLOYING, f"starting v{target}"))

    if target == stable:
        if inp.rollout and inp.rollout.get("version") != stable:
            # The target moved back to stable during a canary (e.g. the Git pin was reverted): abort it.
            ev = Event("Normal", "CanaryAborted", f"v{inp.rollout['version']} canary stopped: v{stable} is wanted")
            return RolloutDecision({stable: n}, {stable: 100}, stable, None, None, inp.rolled_back, events=[ev])
        return RolloutDecision({stable: n}, {stable: 100}, stable, None, None, inp.rolled_back)

    if target in inp.rolled_back:
        why = inp.last_analysis or {}
        return RolloutDecision({stable: n}, {stable: 100}, stable, None, None, inp.rolled_back,
                               degraded=(True, Reason.ROLLED_BACK, _rolled_back_message(target, stable, why)))

    failure = _server_failed(inp, stable, target)
    if failure is not None:
        return _server_rollback(inp, stable, target, failure)

    if strategy.type == "Immediate":
        pods = inp.pods.get(target)
        if pods and pods.is_ready:
            return RolloutDecision({target: n}, {target: 100}, target, None, None, inp.rolled_back,
                                   events=[Event("Normal", "Promoted", f"v{target} replaced v{stable}")])
        return RolloutDecision({stable: n, target: n}, {stable: 100, target: 0}, stable, target, None,
                               inp.rolled_back, progressing=(True, Reason.REPLACING, f"starting v{target}"))
    return _canary(inp, stable, target)


def _server_failed(inp: RolloutInput, stable: int, target: int) -> ServerFailure | None:
    """The target's permanent server failure, when it is the version's own: a stable failing for good too (its
    pods restarted with the same new settings, say spec.serving.unknownCategories) means the Deployment's spec is
    the cause, which Ready=False ServerFailed reports, and rolling the version back would blame it for that."""
    failure = inp.server_failures.get(target)
    return failure if failure is not None and stable not in inp.server_failures else None


def server_failure_cause(status: dict[str, Any], version: int) -> str | None:
    """The server's reason and message when a Deployment rolled version back because its server failed for good
    (None: another cause). status.lastAnalysis describes the newest rollback, the last entry of status.rolledBack,
    until a later analysis replaces it: the Model reads this as the rollback appears."""
    rolled, last = status.get("rolledBack") or [], status.get("lastAnalysis") or {}
    if rolled and rolled[-1] == version and last.get("failedCheck") == SERVER_FAILED_CHECK:
        return str(last.get("message") or "")
    return None


def _server_message(target: int, failure: ServerFailure) -> str:
    return f"v{target}'s model server failed: {failure.reason}: {failure.message}"


def _rolled_back_message(target: int, stable: int, why: dict[str, Any]) -> str:
    """Degraded's message while a rolled-back version is wanted: the same on every reconcile (from status)."""
    retry = f"is not retried; register a new version or pin another one (stable stays v{stable})"
    if why.get("failedCheck") == SERVER_FAILED_CHECK:
        return f"v{target}'s model server failed: {why.get('message', '')}; rolled back to v{stable}; v{target} {retry}"
    cause = f" after failing {why['failedCheck']} ({why.get('message', '')})" if why.get("failedCheck") else ""
    return f"v{target} was rolled back{cause} and {retry}"


def _server_rollback(inp: RolloutInput, stable: int, target: int, failure: ServerFailure) -> RolloutDecision:
    """End the rollout of a version whose server cannot start, as a failed analysis ends it (status.rolledBack,
    which the Model reads to move production back under Automatic): traffic never reached it, stable serves on."""
    analysis = {"time": now_rfc3339(inp.now), "verdict": "Fail", "failedCheck": SERVER_FAILED_CHECK,
                "message": f"{failure.reason}: {failure.message}"}
    event = Event("Warning", Reason.ROLLED_BACK, f"{_server_message(target, failure)}; rolled back to v{stable} "
                                                 f"(pod {failure.pod})")
    return RolloutDecision({stable: inp.n}, {stable: 100}, stable, None, None, [*inp.rolled_back, target],
                           degraded=(True, Reason.ROLLED_BACK, _rolled_back_message(target, stable, analysis)),
                           analysis=analysis, events=[event])


def _canary(inp: RolloutInput, stable: int, target: int) -> RolloutDecision:
    spec, n, now = inp.spec, inp.n, inp.now
    canary = spec.strategy.canary
    steps, analysis = canary.steps, canary.analysis
    rollout = dict(inp.rollout or {})
    stamp = now_rfc3339(now)
    events: list[Event] = []

    if rollout.get("version") != target:  # a new canary (or a newer version replacing a running canary)
        rollout = {"version": target, "step": 0, "stepStartedAt": stamp, "state": "Starting"}
        events.append(Event("Normal", "CanaryStarted", f"rolling out v{target} as a canary (stable v{stable})"))
    if not steps:
        rollout["state"] = "Promoting"

    state = rollout["state"]
    step = int(rollout.get("step", 0))
    weight = steps[step].weight if steps else 100

    def decision(replicas: dict[int, int], weights: dict[int, int], message: str, reason: str | None = None,
                 **kw: Any) -> RolloutDecision:
        why = reason or CANARY_REASONS[rollout["state"]]
        return RolloutDecision(replicas, weights, stable, target, rollout, inp.rolled_back,
                               progressing=(True, why, message), events=events, **kw)

    if canary.paused and state in ("Starting", "Stepping"):
        # The user holds the canary (spec.strategy.canary.paused): traffic stays where it is, nothing is analysed
        # or advanced; resuming is a spec change, which reconciles again, so no requeue is needed.
        c = inp.canary_count(weight)
        live = state == "Stepping"
        where = f"step {step + 1}/{len(steps)} (v{target} at {weight}%)" if live else f"before step 1 (v{target} at 0%)"
        return decision({stable: n, target: c}, {stable: 100 - weight, target: weight} if live else
                        {stable: 100, target: 0},
                        f"paused by spec.strategy.canary.paused at {where}; set it to false "
                        f"(kubectl kultivar resume deployment) to continue", reason=Reason.CANARY_PAUSED_BY_USER)

    if state == "Starting":
        c = inp.canary_count(weight)
        pods = inp.pods.get(target)
        if inp.sized(pods, c):
            rollout.update(state="Stepping", stepStartedAt=stamp, baseline=_baseline(inp.metrics, spec))
            events.append(Event("Normal", "CanaryStep", f"v{target} takes {weight}% (step 1/{len(steps)})"))
            return decision({stable: n, target: c}, {stable: 100 - weight, target: weight},
                            f"step 1/{len(steps)}: v{target} at {weight}%",
                            needs_metrics=inp.metrics is None and not windowed(spec),
                            requeue_after=parse_duration(steps[0].pause).total_seconds())
        return decision({stable: n, target: c}, {stable: 100, target: 0}, f"waiting for v{target}'s pods")

    if state == "Stepping":
        c = inp.canary_count(weight)
        weights = {stable: 100 - weight, target: weight}
        due = _step_due(rollout, steps[step].pause, now)
        if due > 0:
            return decision({stable: n, target: c}, weights,
                            f"step {step + 1}/{len(steps)}: v{target} at {weight}%", requeue_after=due)
        if inp.metrics is None and not inp.metrics_error:
            return decision({stable: n, target: c}, weights, "analysing", needs_metrics=True)
        if inp.metrics is None:  # the source failed: neither pass nor fail on no numbers; try again later
            verdict = Verdict("Inconclusive", None, f"metrics unavailable ({analysis.metricsSource}): "
                              f"{inp.metrics_error}", 0, None, None, None)
            return _after_analysis(inp, verdict, rollout, stable, target, c, weights, events, {})
        canary_window, stable_window = _window(inp, rollout, target), _window(inp, rollout, stable)
        verdict = analyse(
            canary_window, stable_window,
            min_requests=analysis.minRequests, max_error_rate=analysis.maxErrorRate,
            max_latency_p95=analysis.maxLatencyP95Seconds,
            max_prediction_shift=math.inf if inp.stale_reference else analysis.maxPredictionShift,
        )
        if inp.stale_reference and verdict.prediction_shift is not None:
            verdict = replace(verdict, message=f"{verdict.message}; {inp.stale_reference}")
        verdict = _judge_outcomes(inp, verdict, rollout, stable, target)
        measured = {target: summarize(canary_window).wire(), stable: summarize(stable_window).wire()}
        return _after_analysis(inp, verdict, rollout, stable, target, c, weights, events, measured)

    # Promoting: the canary grows to the full size first; the old stable goes only once it is Ready.
    pods = inp.pods.get(target)
    if inp.sized(pods, n):
        events.append(Event("Normal", "Promoted", f"v{target} passed every step and replaced v{stable}"))
        return RolloutDecision({target: n}, {target: 100}, target, None, None, inp.rolled_back, events=events)
    return decision({stable: n, target: n}, {stable: 100 - weight, target: weight},
                    f"promoting v{target}: scaling to {n} replicas")


def _after_analysis(inp: RolloutInput, verdict: Verdict, rollout: dict[str, Any], stable: int, target: int,
                    c: int, weights: dict[int, int], events: list[Event],
                    measured: dict[int, dict[str, Any]]) -> RolloutDecision:
    n, steps = inp.n, inp.spec.strategy.canary.steps
    interval = parse_duration(inp.spec.strategy.canary.analysis.interval).total_seconds()
    stamp = now_rfc3339(inp.now)
    result = {**verdict.wire(stamp), "metricsSource": inp.spec.strategy.canary.analysis.metricsSource}
    step = int(rollout["step"])
    if verdict.verdict == "Fail":
        events.append(Event("Warning", "RolledBack", f"v{target} rolled back: {verdict.message}"))
        return RolloutDecision(
            {stable: n}, {stable: 100}, stable, None, None, [*inp.rolled_back, target],
            degraded=(True, Reason.ROLLED_BACK, f"v{target} failed {verdict.failed_check}: {verdict.message}"),
            analysis=result, events=events, measured=measured)
    if verdict.verdict == "Inconclusive":
        return RolloutDecision({stable: n, target: c}, weights, stable, target, rollout, inp.rolled_back,
                               progressing=(True, Reason.CANARY_PAUSED, verdict.message), analysis=result,
                               requeue_after=interval, events=events, measured=measured)
    if step + 1 < len(steps):
        nxt = steps[step + 1]
        rollout.update(step=step + 1, stepStartedAt=stamp, baseline=_baseline(inp.metrics, inp.spec))
        c = inp.canary_count(nxt.weight)
        events.append(Event("Normal", "CanaryStep", f"v{target} passed step {step + 1}; now {nxt.weight}% "
                                                    f"(step {step + 2}/{len(steps)})"))
        return RolloutDecision({stable: n, target: c}, {stable: 100 - nxt.weight, target: nxt.weight}, stable,
                               target, rollout, inp.rolled_back,
                               progressing=(True, Reason.CANARY_STEPPING, f"step {step + 2}/{len(steps)}"),
                               analysis=result, requeue_after=parse_duration(nxt.pause).total_seconds(),
                               events=events, measured=measured)
    rollout.update(state="Promoting", stepStartedAt=stamp)
    events.append(Event("Normal", "CanaryPassed", f"v{target} passed all {len(steps)} steps; promoting"))
    return RolloutDecision({stable: n, target: n}, weights, stable, target, rollout, inp.rolled_back,
                           progressing=(True, Reason.CANARY_PROMOTING, f"scaling v{target} to {n} replicas"),
                           analysis=result, events=events, measured=measured)


def _ab_test(inp: RolloutInput) -> RolloutDecision:
    spec = inp.spec
    ab_spec = spec.strategy.abTest
    assert ab_spec is not None
    variants, n = ab_spec.variants, inp.n
    # A header selects any variant, so with one even a 0 % variant needs a pod; without, it gets none.
    replicas = {v.version: max(1, round(n * v.weight / 100)) for v in variants if v.weight > 0 or ab_spec.header}
    weights = {v.version: v.weight for v in variants}
    top = max(variants, key=lambda v: (v.weight, v.version)).version
    events: list[Event] = []
    ab, needs, measured, requeue, note = _measure_ab(inp, sorted(replicas), events)
    waiting = [v for v in replicas if not (inp.pods.get(v) and inp.pods[v].is_ready)]
    # Fixed variants have nothing to roll back to: a variant that cannot start is named with its server's reason
    # (Ready=False ServerFailed says the same), the others serve on.
    failed = [_server_message(v, inp.server_failures[v]) for v in waiting if v in inp.server_failures]
    starting = [f"v{v}" for v in waiting if v not in inp.server_failures]
    why = "; ".join([*failed, *([f"waiting for {', '.join(starting)}"] if starting else [])])
    progressing = (True, Reason.DEPLOYING, why) if waiting else \
        (False, Reason.AB_TEST_RUNNING, ", ".join(f"v{v.version}={v.weight}%" for v in variants) + note)
    return RolloutDecision(replicas, weights, top, None, None, inp.rolled_back, progressing=progressing,
                           needs_metrics=needs, requeue_after=requeue, ab_test=ab, measured=measured,
                           events=events)


def _other_decision(ab: dict[str, Any], decision: ABTestDecision | None) -> bool:
    """Whether the test's result was computed under another metric or confidence: the sequential test's
    guarantee holds for one sequence with fixed settings, so the test starts again."""
    result = ab.get("result") or {}
    return decision is not None and bool(result) and \
        (result.get("metric"), result.get("confidence")) != (decision.metric, decision.confidence)


def _measure_ab(inp: RolloutInput, versions: list[int], events: list[Event]
                ) -> tuple[dict[str, Any], bool, dict[int, dict[str, Any]], float, str]:
    """Advance the A/B test's measurement window: (status.abTest, needs metrics, numbers, requeue, note); with a
    decision, also look at the feedback for a winner (events: ABTestConcluded)."""
    analysis = inp.spec.strategy.canary.analysis
    ab_spec = inp.spec.strategy.abTest
    assert ab_spec is not None
    decision = ab_spec.decision
    interval = parse_duration(analysis.interval).total_seconds()
    stamp = now_rfc3339(inp.now)
    ab = dict(inp.ab_test or {})
    started = parse_time(ab.get("startedAt"))
    if ab.get("versions") != versions or started is None or ab.get("metricsSource") != analysis.metricsSource \
            or _other_decision(ab, decision):
        # A new test (or other variants, or another source): count from now; the old window's fields go.
        ab = {"versions": versions, "startedAt": stamp, "metricsSource": analysis.metricsSource,
              "measuredAt": None, "baseline": None, "result": None}
        if windowed(inp.spec):
            return ab, False, {}, interval, ""
        if inp.metrics is None:  # the baseline to count from
            return ab, True, {}, interval, ""
        ab["baseline"] = _baseline(inp.metrics, inp.spec)
        return ab, False, {}, interval, ""
    due = ((parse_time(ab.get("measuredAt")) or started) + parse_duration(analysis.interval) - inp.now)
    if due.total_seconds() > 0:
        return ab, False, {}, due.total_seconds(), ""
    if inp.metrics is None:
        if inp.metrics_error:
            return ab, False, {}, interval, f"; metrics unavailable ({analysis.metricsSource}): {inp.metrics_error}"
        return ab, True, {}, interval, ""
    measured = {v: summarize(_window(inp, ab, v)).wire() for v in versions}
    ab["measuredAt"] = stamp
    note = ""
    if decision is None:
        ab["result"] = None  # a decision removed mid-test: no verdict stands
    elif len(versions) == 2:
        judged = judge_ab_test(decision, ab.get("result"), [v.version for v in ab_spec.variants],
                               _feedback_window(inp, ab), inp.now)
        ab["result"] = judged.result
        events.extend(judged.events)
        if judged.result.get("winner") is not None:
            note = f"; v{judged.result['winner']} won (ABTestConcluded)"
    return ab, False, measured, interval, note
