"""Serving metrics as the operator sees them: parsed scrapes, deltas over a window, and canary analysis.

The inference server exports cumulative counters (see kultivar.serving.monitoring). With metricsSource pods a
window's numbers are the difference of two snapshots; a pod restart resets its counters, which the delta treats
as a fresh start. With metricsSource prometheus they are Prometheus' increase() over the window, read into the
same Snapshot (kultivar.domain.promql), so one analysis judges both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kultivar.domain.profile import psi

ERROR_OUTCOMES = ("error", "unavailable")
# The regression feedback counters (kultivar.serving.feedback) by the short name a Snapshot keys them with.
FEEDBACK_SUMS = {"kultivar_feedback_regressions_total": "n", "kultivar_feedback_overprediction_total": "over",
                 "kultivar_feedback_underprediction_total": "under",
                 "kultivar_feedback_squared_error_total": "squared"}
# The shadow forwarder's counters (kultivar.serving.shadow) by the short name a Snapshot keys them with.
SHADOW_COUNTERS = {"kultivar_shadow_requests_total": "requests", "kultivar_shadow_rows_total": "rows"}
SHADOW_DIFFERENCE = "kultivar_shadow_absolute_difference_total"


@dataclass
class Snapshot:
    """Cumulative counters of one version (summed over its pods)."""

    requests: dict[str, float] = field(default_factory=dict)  # outcome -> count
    latency: dict[float, float] = field(default_factory=dict)  # le bound -> cumulative count
    predictions: dict[str, float] = field(default_factory=dict)  # class (or value bucket) -> count
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> bucket -> count
    # The training profile's proportions per feature bucket (a gauge, the same on every pod of a version).
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    # Feedback counters, keyed by the version that answered (any pod counts feedback about any version):
    # (version, predicted, actual) -> count, and (version, sum) -> value with sum one of FEEDBACK_SUMS.
    labelled: dict[tuple[int, str, str], float] = field(default_factory=dict)
    errors: dict[tuple[int, str], float] = field(default_factory=dict)
    # Shadow forwarding counters of this version's servers, keyed by the shadow version and "requests:<outcome>"
    # (answered, error, dropped), "rows:<outcome>" (agree, disagree) or "absdiff" (sum of |shadow - own|).
    shadow: dict[tuple[int, str], float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.requests.values())

    def add(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            requests=_merge(self.requests, other.requests),
            latency=_merge(self.latency, other.latency),
            predictions=_merge(self.predictions, other.predictions),
            features={f: _merge(self.features.get(f, {}), other.features.get(f, {}))
                      for f in set(self.features) | set(other.features)},
            reference=self.reference or other.reference,
            labelled=_merge(self.labelled, other.labelled),
            errors=_merge(self.errors, other.errors),
            shadow=_merge(self.shadow, other.shadow),
        )

    def minus(self, base: Snapshot | None) -> Snapshot:
        """Counts since base; where a counter went backwards (pod restart), everything counts as new."""
        if base is None or self.total < base.total:
            return self
        return Snapshot(
            requests=_diff(self.requests, base.requests),
            latency=_diff(self.latency, base.latency),
            predictions=_diff(self.predictions, base.predictions),
            features={f: _diff(b, base.features.get(f, {})) for f, b in self.features.items()},
            reference=self.reference,
            labelled=_diff(self.labelled, base.labelled),
            errors=_diff(self.errors, base.errors),
            shadow=_diff(self.shadow, base.shadow),
        )

    def wire(self, features: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "latency": {str(k): v for k, v in self.latency.items()},
                               "predictions": self.predictions}
        if self.labelled:  # feedback counters, for a canary judged on outcomes
            out["labelled"] = sorted([v, p, a, c] for (v, p, a), c in self.labelled.items())
        if self.errors:
            out["errors"] = sorted([v, k, x] for (v, k), x in self.errors.items())
        if self.shadow:
            out["shadow"] = sorted([v, k, x] for (v, k), x in self.shadow.items())
        return {**out, "features": self.features} if features else out

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> Snapshot | None:
        if not data:
            return None
        return cls(requests=dict(data.get("requests") or {}),
                   latency={float(k): v for k, v in (data.get("latency") or {}).items()},
                   predictions=dict(data.get("predictions") or {}),
                   features={k: dict(v) for k, v in (data.get("features") or {}).items()},
                   labelled={(int(v), str(p), str(a)): float(c) for v, p, a, c in data.get("labelled") or []},
                   errors={(int(v), str(k)): float(x) for v, k, x in data.get("errors") or []},
                   shadow={(int(v), str(k)): float(x) for v, k, x in data.get("shadow") or []})


def _merge(a: dict[Any, float], b: dict[Any, float]) -> dict[Any, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}


def _diff(a: dict[Any, float], b: dict[Any, float]) -> dict[Any, float]:
    return {k: max(0.0, v - b.get(k, 0.0)) for k, v in a.items()}


def parse(text: str) -> Snapshot:
    """Read the server's /metrics exposition into a Snapshot."""
    snap = Snapshot()
    value_buckets: dict[str, float] = {}  # regression: cumulative "le" buckets of predicted values
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "kultivar_inference_requests_total":
                key = s.labels.get("outcome", "")
                snap.requests[key] = snap.requests.get(key, 0.0) + s.value
            elif s.name == "kultivar_inference_latency_seconds_bucket":
                le = float(s.labels["le"])
                snap.latency[le] = snap.latency.get(le, 0.0) + s.value
            elif s.name == "kultivar_predictions_total":
                key = s.labels.get("class", "")
                snap.predictions[key] = snap.predictions.get(key, 0.0) + s.value
            elif s.name == "kultivar_prediction_value_bucket":
                key = s.labels["le"]
                value_buckets[key] = value_buckets.get(key, 0.0) + s.value
            elif s.name == "kultivar_feature_reference_ratio":
                snap.reference.setdefault(s.labels["feature"], {})[s.labels["bucket"]] = s.value
            elif s.name == "kultivar_feature_bucket_total":
                buckets = snap.features.setdefault(s.labels["feature"], {})
                buckets[s.labels["bucket"]] = buckets.get(s.labels["bucket"], 0.0) + s.value
            elif s.name == "kultivar_feedback_classifications_total" and s.labels.get("version", "").isdigit():
                pair = (int(s.labels["version"]), s.labels.get("predicted", ""), s.labels.get("actual", ""))
                snap.labelled[pair] = snap.labelled.get(pair, 0.0) + s.value
            elif s.name in FEEDBACK_SUMS and s.labels.get("version", "").isdigit():
                sum_key = (int(s.labels["version"]), FEEDBACK_SUMS[s.name])
                snap.errors[sum_key] = snap.errors.get(sum_key, 0.0) + s.value
            elif s.name in SHADOW_COUNTERS and s.labels.get("shadow_version", "").isdigit():
                shadow_key = (int(s.labels["shadow_version"]), f"{SHADOW_COUNTERS[s.name]}:{s.labels.get('outcome')}")
                snap.shadow[shadow_key] = snap.shadow.get(shadow_key, 0.0) + s.value
            elif s.name == SHADOW_DIFFERENCE and s.labels.get("shadow_version", "").isdigit():
                shadow_key = (int(s.labels["shadow_version"]), "absdiff")
                snap.shadow[shadow_key] = snap.shadow.get(shadow_key, 0.0) + s.value
    # Per-bucket counts (not cumulative) so predicted values compare like classes do.
    snap.predictions.update({f"le={k}": v for k, v in decumulate(value_buckets).items()})
    return snap


def decumulate(cumulative: dict[str, float]) -> dict[str, float]:
    ordered = sorted(cumulative.items(), key=lambda kv: float(kv[0]))
    out, previous = {}, 0.0
    for bound, count in ordered:
        out[bound] = count - previous
        previous = count
    return out


def quantile(latency: dict[float, float], q: float) -> float | None:
    """A quantile from cumulative histogram buckets, interpolated as Prometheus' histogram_quantile does."""
    bounds = sorted(latency)
    if not bounds or latency[bounds[-1]] <= 0:
        return None
    total = latency[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = latency[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span if span else 0.0)
        lower_bound, lower_count = bound, count
    return bounds[-1]


def distribution_shift(a: dict[str, float], b: dict[str, float]) -> float | None:
    """PSI between two count distributions over the same keys (canary vs stable predictions)."""
    keys = sorted(set(a) | set(b))
    if not keys or sum(a.values()) <= 0 or sum(b.values()) <= 0:
        return None
    expected = [b.get(k, 0.0) / sum(b.values()) for k in keys]
    return float(psi(expected, [a.get(k, 0.0) for k in keys]))


@dataclass(frozen=True)
class Summary:
    """The numbers of one version over a window: what status.variants shows and the analysis judges."""

    requests: int
    error_rate: float | None
    latency_p95: float | None

    def wire(self) -> dict[str, Any]:
        out = {"requests": self.requests,
               "errorRate": None if self.error_rate is None else round(self.error_rate, 6),
               "latencyP95Seconds": None if self.latency_p95 is None else round(self.latency_p95, 6)}
        return {k: v for k, v in out.items() if v is not None}


def summarize(window: Snapshot) -> Summary:
    """Requests, error rate and p95 latency of a window's counts (a delta, or a Prometheus increase())."""
    requests = round(window.total)
    if window.total <= 0:
        return Summary(requests, None, None)
    errors = sum(window.requests.get(o, 0.0) for o in ERROR_OUTCOMES)
    return Summary(requests, errors / window.total, quantile(window.latency, 0.95))


@dataclass(frozen=True)
class Verdict:
    verdict: str  # Pass | Fail | Inconclusive
    failed_check: str | None
    message: str
    requests: int
    error_rate: float | None
    latency_p95: float | None
    prediction_shift: float | None

    def wire(self, time: str) -> dict[str, Any]:
        out = {"time": time, "verdict": self.verdict, "failedCheck": self.failed_check, "message": self.message,
               "requests": self.requests, "errorRate": self.error_rate, "latencyP95Seconds": self.latency_p95,
               "predictionShift": self.prediction_shift}
        return {k: v for k, v in out.items() if v is not None}


def analyse(canary: Snapshot, stable: Snapshot | None, *, min_requests: int, max_error_rate: float,
            max_latency_p95: float, max_prediction_shift: float) -> Verdict:
    """Judge a canary on the requests it served in this step (deltas), against the stable version."""
    summary = summarize(canary)
    requests = summary.requests
    if requests < min_requests:
        return Verdict("Inconclusive", None, f"{requests} requests in this step, {min_requests} needed to judge; "
                       "waiting for traffic", requests, None, None, None)
    error_rate, p95 = summary.error_rate or 0.0, summary.latency_p95
    shift = distribution_shift(canary.predictions, stable.predictions) if stable else None
    numbers = (f"requests={requests} errorRate={error_rate:.4f} latencyP95={p95 if p95 is None else round(p95, 4)}s "
               f"predictionShift={shift if shift is None else round(shift, 4)}")
    if error_rate > max_error_rate:
        return Verdict("Fail", "ErrorRate", f"error rate {error_rate:.2%} > {max_error_rate:.2%}; {numbers}",
                       requests, error_rate, p95, shift)
    if p95 is not None and p95 > max_latency_p95:
        return Verdict("Fail", "LatencyP95", f"p95 latency {p95:.3f}s > {max_latency_p95}s; {numbers}",
                       requests, error_rate, p95, shift)
    if shift is not None and shift > max_prediction_shift:
        return Verdict("Fail", "PredictionShift", f"prediction PSI {shift:.3f} > {max_prediction_shift}; {numbers}",
                       requests, error_rate, p95, shift)
    return Verdict("Pass", None, numbers, requests, error_rate, p95, shift)
