"""A/B tests that decide: a winner from live feedback labels, looked at every analysis interval. Pure.

With ``spec.strategy.abTest.decision`` each A/B analysis compares the two variants' shares of correct answers
(accuracy) among the feedback labels that arrived since the test began, counted per answering version by every
serving pod (kultivar.serving.feedback). The test is the mSPRT of kultivar.domain.stats.sequential: its p-value is
always valid, so looking every interval does not inflate the chance of declaring a winner between two equally
good variants beyond 1 - confidence. Its running state (the p-value is a running minimum, the confidence sequence
an intersection) is kept in ``status.abTest.result.sequential`` and restarts with the test's window.

A concluded test stays concluded: the verdict is final, and only the per-variant numbers keep being refreshed.
The winner is reported (status, the ABTestConcluded condition, an Event), never applied: which version serves is
the user's spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kultivar.api.deployment import ABTestDecision, DeploymentSpec
from kultivar.domain.conditions import Cond, now_rfc3339
from kultivar.domain.performance import Feedback
from kultivar.domain.plan import Event
from kultivar.domain.reasons import Reason
from kultivar.domain.stats.sequential import METHOD, ABTestState, ab_test_look

AB_TEST_CONCLUDED = "ABTestConcluded"  # the condition type; its Event has the same name


def ab_decides(spec: DeploymentSpec) -> bool:
    """Whether an A/B test picks a winner from feedback (its analysis reads the feedback counters)."""
    return spec.strategy.type == "ABTest" and spec.strategy.abTest is not None \
        and spec.strategy.abTest.decision is not None


@dataclass
class ABJudgement:
    result: dict[str, Any]  # the new status.abTest.result
    events: list[Event] = field(default_factory=list)


def _counts(window: Feedback, version: int) -> tuple[float, float, float]:
    """(correct, labelled, regression labels) of the version's answers in the window."""
    pairs = [(p, a, c) for (v, p, a), c in window.labelled.items() if v == version]
    return (sum(c for p, a, c in pairs if p == a), sum(c for _, _, c in pairs),
            window.errors.get((version, "n"), 0.0))


def _outcome(version: int, correct: float, n: float) -> dict[str, Any]:
    out: dict[str, Any] = {"version": version, "labels": round(n)}
    if n > 0:
        out["value"] = round(correct / n, 6)
    return out


def _rates(outcomes: list[dict[str, Any]]) -> str:
    return " vs ".join(f"v{o['version']} {o.get('value', 0.0):.4f} ({o['labels']} labels)" for o in outcomes)


def judge_ab_test(decision: ABTestDecision, previous: dict[str, Any] | None, variants: list[int],
                  window: Feedback, now: datetime) -> ABJudgement:
    """One look at the feedback since the test began (``window``: the counts of its labels per answering
    version). ``previous``: status.abTest.result of the same test (None: the first look). ``variants``: the two
    versions in spec order (the difference is the first's metric minus the second's until a winner is known)."""
    a, b = variants
    (ok_a, n_a, reg_a), (ok_b, n_b, reg_b) = _counts(window, a), _counts(window, b)
    outcomes = [_outcome(a, ok_a, n_a), _outcome(b, ok_b, n_b)]
    prev = dict(previous or {})
    head = {"metric": decision.metric, "confidence": decision.confidence, "method": METHOD, "variants": outcomes}
    if prev.get("verdict") == "Concluded":  # final: only the live numbers move on
        return ABJudgement({**prev, **head})
    if (reg_a > 0 and n_a == 0) or (reg_b > 0 and n_b == 0):
        message = (f"the feedback is numbers (a regressor): {decision.metric} needs (predicted, actual) classes; "
                   "an A/B decision on regression errors is not supported")
        return ABJudgement({**prev, **head, "verdict": "Unmeasurable", "message": message})
    raw = prev.get("sequential")
    state = ABTestState.from_wire(json.loads(raw)) if raw else None
    if state is not None and (n_a < state.n_a or n_b < state.n_b):
        # Fewer labels than at the last look: a server restarted (its counts are gone) or Prometheus'
        # increase() extrapolated lower. The test needs one growing sequence: wait until it has grown past.
        message = (f"look skipped: fewer labels than at the last look (v{a} {n_a:g} < {state.n_a:g} or v{b} "
                   f"{n_b:g} < {state.n_b:g}, a server restarted?); {prev.get('message', '')}")
        return ABJudgement({**prev, **head, "message": message})
    look = ab_test_look(state, ok_a, n_a, ok_b, n_b, alpha=1 - decision.confidence,
                        min_samples=decision.minSamples)
    result = {**head, "pValue": round(look.p_value, 12), "looks": look.state.looks,
              "sequential": json.dumps(look.state.wire(), sort_keys=True)}
    confidence = f"{decision.confidence:.3g}".rstrip("0")
    if look.verdict == "continue" and min(n_a, n_b) < decision.minSamples:
        message = (f"collecting labels: {_rates(outcomes)}; {decision.minSamples} per variant needed before the "
                   "test is computed")
        return ABJudgement({**result, "verdict": "CollectingSamples", "winner": None, "effectSize": None,
                            "effectLow": None, "effectHigh": None, "message": message})
    if look.verdict == "continue":
        message = (f"no winner yet: {_rates(outcomes)}, difference {look.difference or 0.0:+.4f} "
                   f"[{look.low:.4f}, {look.high:.4f}], always-valid p={look.p_value:.3g} "
                   f"(significant at {1 - decision.confidence:.3g})")
        return ABJudgement({**result, "verdict": "NoWinnerYet", "winner": None,
                            "effectSize": round(look.difference or 0.0, 6), "effectLow": round(look.low, 6),
                            "effectHigh": round(look.high, 6), "message": message})
    # A winner: the effect is stated as the winner's metric minus the loser's, with its confidence sequence.
    winner, loser = (a, b) if look.verdict == "a" else (b, a)
    sign = 1.0 if look.verdict == "a" else -1.0
    effect = sign * (look.difference or 0.0)
    low, high = sorted((sign * look.low, sign * look.high))
    message = (f"v{winner} wins over v{loser} on live {decision.metric}: {_rates(outcomes)}, effect {effect:+.4f} "
               f"({confidence} confidence sequence [{low:.4f}, {high:.4f}]), always-valid p={look.p_value:.3g} "
               f"after {look.state.looks} looks")
    result.update(verdict="Concluded", winner=winner, effectSize=round(effect, 6), effectLow=round(low, 6),
                  effectHigh=round(high, 6), concludedAt=now_rfc3339(now), message=message)
    return ABJudgement(result, [Event("Normal", AB_TEST_CONCLUDED, message)])


def ab_test_condition(decides: bool, result: dict[str, Any] | None, had_condition: bool) -> Cond | None:
    """The ABTestConcluded condition from status.abTest.result (None: none to set)."""
    if not decides:
        return Cond(AB_TEST_CONCLUDED, None, Reason.NOT_WATCHED,
                    "no A/B test decides: spec.strategy.abTest.decision is unset") if had_condition else None
    res = result or {}
    verdict, message = res.get("verdict"), res.get("message") or ""
    if verdict == "Concluded":
        return Cond(AB_TEST_CONCLUDED, True, Reason.WINNER_SIGNIFICANT, message)
    if verdict == "NoWinnerYet":
        return Cond(AB_TEST_CONCLUDED, False, Reason.NO_WINNER_YET, message)
    if verdict == "Unmeasurable":
        return Cond(AB_TEST_CONCLUDED, None, Reason.METRIC_MISMATCH, message)
    return Cond(AB_TEST_CONCLUDED, False, Reason.TOO_FEW_LABELS,
                message or "the A/B test started; waiting for feedback labels on both variants")
