"""metricsSource prometheus: the PromQL that reads a Kultivar Deployment's serving metrics from a Prometheus
server, and the answers turned into the Snapshots that kultivar.domain.metrics analyses. Pure: no I/O.

Series are selected by two labels the inference server puts on everything it exports, ``kultivar_namespace``
and ``kultivar_deployment`` (from the pod's environment, which the operator sets), so no particular scrape
configuration is assumed (no relabelling of pod labels); the server's own ``version`` label tells the versions
apart. Counters are read as ``sum by (version, ...) (increase(...[window]))``: summed over a version's pods, and
correct across pod restarts and pods that came and went during the window, which a difference of two scrapes
is not. ``increase()`` extrapolates to the window's edges, so counts may be fractional.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from kultivar.domain.metrics import FEEDBACK_SUMS, SHADOW_COUNTERS, SHADOW_DIFFERENCE, Snapshot, decumulate

NAMESPACE_LABEL = "kultivar_namespace"
DEPLOYMENT_LABEL = "kultivar_deployment"

REQUESTS = "requests"
LATENCY = "latency"
PREDICTIONS = "predictions"
VALUES = "values"
FEATURES = "features"
REFERENCE = "reference"
LABELLED = "labelled"
ERRORS = "errors"
SHADOW = "shadow"

Sample = dict[str, Any]  # one element of an instant vector: {"metric": {label: value}, "value": [time, "text"]}


def escape(value: str) -> str:
    """A PromQL double-quoted string's content."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(namespace: str, name: str, versions: Iterable[int]) -> str:
    parts = [f'{NAMESPACE_LABEL}="{escape(namespace)}"', f'{DEPLOYMENT_LABEL}="{escape(name)}"']
    wanted = sorted(set(versions))
    if wanted:
        parts.append(f'version=~"{"|".join(str(v) for v in wanted)}"')
    return "{" + ",".join(parts) + "}"


def range_selector(seconds: float) -> str:
    """A PromQL range covering at least ``seconds`` (whole seconds, at least 1s)."""
    return f"{max(1, math.ceil(seconds))}s"


def queries(namespace: str, name: str, versions: Iterable[int], window_seconds: float | None,
            features: bool = False, feedback: bool = False, shadow: bool = False) -> dict[str, str]:
    """Instant queries, by purpose, for the counts of the last ``window_seconds`` per version.

    ``features`` adds the drift inputs: input counts per profile bucket and the training profile's proportions
    (a gauge: its current value). Without a window only the proportions are asked for. ``feedback`` adds the
    feedback counters, whose ``version`` label is the version that answered (the servers of every version count
    feedback about any version, so the sum runs over all of them). ``shadow`` adds the stable servers' shadow
    forwarding counters (kultivar.serving.shadow), per shadow version.
    """
    sel = selector(namespace, name, versions)
    out: dict[str, str] = {}
    if window_seconds is not None:
        window = range_selector(window_seconds)

        def increase(metric: str, by: str) -> str:
            return f"sum by (version, {by}) (increase({metric}{sel}[{window}]))"

        out[REQUESTS] = increase("kultivar_inference_requests_total", "outcome")
        out[LATENCY] = increase("kultivar_inference_latency_seconds_bucket", "le")
        out[PREDICTIONS] = increase("kultivar_predictions_total", "class")
        out[VALUES] = increase("kultivar_prediction_value_bucket", "le")
        if features:
            out[FEATURES] = increase("kultivar_feature_bucket_total", "feature, bucket")
        if feedback:
            out[LABELLED] = increase("kultivar_feedback_classifications_total", "predicted, actual")
            for metric, short in FEEDBACK_SUMS.items():  # one query each: increase() drops the metric name
                out[f"{ERRORS}:{short}"] = f"sum by (version) (increase({metric}{sel}[{window}]))"
        if shadow:
            for metric, short in SHADOW_COUNTERS.items():
                out[f"{SHADOW}:{short}"] = increase(metric, "shadow_version, outcome")
            out[f"{SHADOW}:absdiff"] = increase(SHADOW_DIFFERENCE, "shadow_version")
    if features:
        out[REFERENCE] = f"max by (version, feature, bucket) (kultivar_feature_reference_ratio{sel})"
    return out


def snapshots(results: dict[str, list[Sample]], versions: Iterable[int]) -> dict[int, Snapshot]:
    """The answers to :func:`queries` as one Snapshot per version (versions without series stay empty)."""
    out = {v: Snapshot() for v in versions}
    value_buckets: dict[int, dict[str, float]] = {}
    for purpose, samples in results.items():
        for sample in samples:
            labels = sample.get("metric") or {}
            try:
                version = int(labels.get("version", ""))
                value = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if version not in out or not math.isfinite(value):
                continue
            snap = out[version]
            if purpose == REQUESTS:
                key = labels.get("outcome", "")
                snap.requests[key] = snap.requests.get(key, 0.0) + value
            elif purpose == LATENCY and "le" in labels:
                le = float(labels["le"])
                snap.latency[le] = snap.latency.get(le, 0.0) + value
            elif purpose == PREDICTIONS:
                key = labels.get("class", "")
                snap.predictions[key] = snap.predictions.get(key, 0.0) + value
            elif purpose == VALUES and "le" in labels:
                buckets = value_buckets.setdefault(version, {})
                buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
            elif purpose == FEATURES and "feature" in labels and "bucket" in labels:
                counts = snap.features.setdefault(labels["feature"], {})
                counts[labels["bucket"]] = counts.get(labels["bucket"], 0.0) + value
            elif purpose == REFERENCE and "feature" in labels and "bucket" in labels:
                snap.reference.setdefault(labels["feature"], {})[labels["bucket"]] = value
            elif purpose == LABELLED:
                pair = (version, labels.get("predicted", ""), labels.get("actual", ""))
                snap.labelled[pair] = snap.labelled.get(pair, 0.0) + max(0.0, value)
            elif purpose.startswith(f"{SHADOW}:") and labels.get("shadow_version", "").isdigit():
                kind = purpose.split(":", 1)[1]
                key = (int(labels["shadow_version"]), kind if kind == "absdiff" else f"{kind}:{labels.get('outcome')}")
                snap.shadow[key] = snap.shadow.get(key, 0.0) + max(0.0, value)
            elif purpose.startswith(f"{ERRORS}:"):
                key = (version, purpose.split(":", 1)[1])
                snap.errors[key] = snap.errors.get(key, 0.0) + max(0.0, value)
    for version, buckets in value_buckets.items():
        # Each bucket is extrapolated on its own: never let that make a per-bucket count negative.
        out[version].predictions.update({f"le={k}": max(0.0, v) for k, v in decumulate(buckets).items()})
    return out
