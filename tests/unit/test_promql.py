"""metricsSource prometheus: the queries, the answers read into Snapshots, and the same analysis as pod scrapes.

The pod side is the real path: the inference server's ServingMetrics (two pods per version) -> their /metrics
exposition -> parse -> the difference of two scrapes. The Prometheus side evaluates the operator's own queries
over the same two scrapes the way Prometheus does for a window whose edges are the two scrapes (label matchers,
increase() as last - first, a counter reset counting from zero, sum by / max by), and answers in the HTTP API's
JSON. Both must give the same analysis, the same A/B numbers and the same drift check.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kultivar.api.deployment import Monitoring
from kultivar.domain import promql
from kultivar.domain.drift import check_drift
from kultivar.domain.metrics import Snapshot, analyse, parse, summarize
from kultivar.domain.profile import Profile, categorical_profile, numeric_profile
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec, Rows

NS, NAME = "team-a", "iris"
RNG = np.random.default_rng(3)
PROFILE = Profile(rows=1000, features={"x": numeric_profile(RNG.normal(0, 1, 1000)),
                                       "c": categorical_profile(list("aabbbc"))})
FEATURES = [FeatureSpec("x", "numeric"), FeatureSpec("c", "categorical")]
ANALYSIS = {"min_requests": 10, "max_error_rate": 0.05, "max_latency_p95": 0.5, "max_prediction_shift": 0.25}


# --- a pod: the real server metrics ---------------------------------------------------------------------------


class Pod:
    def __init__(self, version: int, deployment: tuple[str, str] = (NS, NAME)) -> None:
        self.version = version
        self.metrics = ServingMetrics("iris", str(version), "sha256:" + "0" * 64, deployment=deployment)
        self.metrics.bind_model(FEATURES, "classification", [0, 1, 2], PROFILE, drift_accounting=True)

    def serve(self, n: int, *, errors: int = 0, slow: float = 0.0, shift: float = 0.0, classes=(0, 1, 2)) -> None:
        for i in range(n):
            self.metrics.request("error" if i < errors else "success", slow or float(RNG.uniform(0.001, 0.02)))
        x = RNG.normal(shift, 1, n)
        c = np.asarray(RNG.choice(list("abcz"), n), dtype=object)
        self.metrics.batch(Rows((x, c), n), np.asarray(RNG.choice(list(classes), n)))

    def scrape(self) -> str:
        return self.metrics.exposition().decode()


# --- Prometheus over two scrapes --------------------------------------------------------------------------------


def _series(expositions: list[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scrape of all pods, keyed by name and labels (each pod is its own target)."""
    out = {}
    for pod, text in enumerate(expositions):
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted({**s.labels, "instance": str(pod)}.items())))] = s.value
    return out


def _matches(labels: dict[str, str], matchers: str) -> bool:
    for name, op, value in re.findall(r'(\w+)(=~|=)"((?:[^"\\]|\\.)*)"', matchers):
        value = value.replace('\\"', '"').replace("\\\\", "\\")
        actual = labels.get(name, "")
        if (op == "=" and actual != value) or (op == "=~" and not re.fullmatch(value, actual)):
            return False
    return True


def evaluate(expression: str, before: list[str], after: list[str]) -> list[dict[str, Any]]:
    """What Prometheus answers for one of our queries when the window's edges are the two scrapes."""
    increase = re.fullmatch(r"sum by \(([\w, ]+)\) \(increase\((\w+)\{(.*)\}\[(\d+)s\]\)\)", expression)
    gauge = re.fullmatch(r"max by \(([\w, ]+)\) \((\w+)\{(.*)\}\)", expression)
    match = increase or gauge
    assert match, f"unexpected query {expression}"
    by, metric, matchers = [b.strip() for b in match.group(1).split(",")], match.group(2), match.group(3)
    first, last = _series(before), _series(after)
    groups: dict[tuple[str, ...], float] = {}
    for (name, key), value in last.items():
        labels = dict(key)
        if name != metric or not _matches(labels, matchers):
            continue
        if increase:
            start = first.get((name, key), 0.0)
            value = value - start if value >= start else value  # a reset: the counter began again at zero
        group = tuple(labels.get(b, "") for b in by)
        groups[group] = groups.get(group, 0.0) + value if increase else max(groups.get(group, value), value)
    return [{"metric": dict(zip(by, group, strict=True)), "value": [1.0, repr(v)]} for group, v in groups.items()]


def prometheus(before: list[str], after: list[str], versions: list[int], features: bool = False,
               window: float = 60) -> dict[int, Snapshot]:
    queries = promql.queries(NS, NAME, versions, window, features=features)
    return promql.snapshots({k: evaluate(q, before, after) for k, q in queries.items()}, versions)


def pods_delta(before: list[str], after: list[str]) -> Snapshot:
    total_before, total_after = Snapshot(), Snapshot()
    for text in before:
        total_before = total_before.add(parse(text))
    for text in after:
        total_after = total_after.add(parse(text))
    return total_after.minus(total_before)


# --- tests --------------------------------------------------------------------------------------------------------


def test_queries_select_the_deployment_and_sum_increase_over_the_window() -> None:
    q = promql.queries(NS, NAME, [2, 1], 90.2)
    assert set(q) == {promql.REQUESTS, promql.LATENCY, promql.PREDICTIONS, promql.VALUES}
    assert q[promql.REQUESTS] == ('sum by (version, outcome) (increase(kultivar_inference_requests_total'
                                  '{kultivar_namespace="team-a",kultivar_deployment="iris",version=~"1|2"}[91s]))')
    drift = promql.queries(NS, NAME, [1], 600, features=True)
    assert "increase(kultivar_feature_bucket_total{" in drift[promql.FEATURES]
    assert drift[promql.REFERENCE].startswith("max by (version, feature, bucket) (kultivar_feature_reference_ratio{")
    # no open window: only the profile's proportions (a gauge) are read
    assert set(promql.queries(NS, NAME, [1], None, features=True)) == {promql.REFERENCE}
    assert promql.range_selector(0.2) == "1s"
    assert promql.selector('a"b', "n\\", []) == '{kultivar_namespace="a\\"b",kultivar_deployment="n\\\\"}'


def test_answers_become_snapshots_per_version() -> None:
    answers = {
        promql.REQUESTS: [{"metric": {"version": "2", "outcome": "success"}, "value": [1, "95.5"]},
                          {"metric": {"version": "2", "outcome": "error"}, "value": [1, "4.5"]},
                          {"metric": {"version": "7", "outcome": "success"}, "value": [1, "3"]},  # not asked for
                          {"metric": {"version": "2", "outcome": "success"}, "value": [1, "NaN"]}],
        promql.LATENCY: [{"metric": {"version": "2", "le": "0.01"}, "value": [1, "50"]},
                         {"metric": {"version": "2", "le": "+Inf"}, "value": [1, "100"]}],
        promql.VALUES: [{"metric": {"version": "1", "le": "1.0"}, "value": [1, "4"]},
                        {"metric": {"version": "1", "le": "+Inf"}, "value": [1, "3.9"]}],  # extrapolated apart
    }
    snaps = promql.snapshots(answers, [1, 2])
    assert snaps[2].requests == {"success": 95.5, "error": 4.5} and snaps[2].latency[float("inf")] == 100
    assert snaps[1].predictions == {"le=1.0": 4.0, "le=+Inf": 0.0}
    assert summarize(snaps[2]).requests == 100 and summarize(snaps[2]).error_rate == pytest.approx(0.045)
    assert summarize(snaps[1]).requests == 0 and summarize(snaps[1]).error_rate is None


def test_every_series_the_server_exports_carries_the_deployment_labels() -> None:
    pod = Pod(1)
    pod.serve(5)
    families = [f for f in text_string_to_metric_families(pod.scrape()) if f.name.startswith("kultivar_")]
    assert {f.name for f in families} >= {"kultivar_inference_requests", "kultivar_inference_latency_seconds",
                                          "kultivar_predictions", "kultivar_feature_bucket",
                                          "kultivar_feature_reference_ratio"}
    for family in families:
        for s in family.samples:
            assert s.labels["kultivar_namespace"] == NS and s.labels["kultivar_deployment"] == NAME, s
    # A server started without the Deployment's identity keeps the plain label set.
    plain = ServingMetrics("iris", "1", "sha256:" + "0" * 64).exposition().decode()
    assert "kultivar_namespace" not in plain


@pytest.mark.parametrize(("canary_traffic", "verdict"), [
    ({}, "Pass"),
    ({"errors": 12}, "Fail"),
    ({"slow": 2.0}, "Fail"),
    ({"classes": (2,)}, "Fail"),
], ids=["healthy", "errors", "slow", "prediction-shift"])
def test_analysis_from_prometheus_equals_analysis_from_pod_scrapes(canary_traffic, verdict) -> None:
    stable = [Pod(1), Pod(1)]
    canary = [Pod(2), Pod(2)]
    other = Pod(2, deployment=(NS, "other"))  # another Deployment of the same Model: never counted
    for pod in (*stable, *canary, other):
        pod.serve(40)  # before the step
    before = [p.scrape() for p in (*stable, *canary, other)]
    for pod in stable:
        pod.serve(120)
    for pod in canary:
        pod.serve(60, **canary_traffic)
    other.serve(500, errors=500)
    after = [p.scrape() for p in (*stable, *canary, other)]

    from_pods = {1: pods_delta(before[:2], after[:2]), 2: pods_delta(before[2:4], after[2:4])}
    from_prometheus = prometheus(before, after, [1, 2])
    for version in (1, 2):
        assert from_prometheus[version].requests == from_pods[version].requests
        assert from_prometheus[version].latency == from_pods[version].latency
        assert from_prometheus[version].predictions == from_pods[version].predictions
        assert summarize(from_prometheus[version]) == summarize(from_pods[version])
    by_pods = analyse(from_pods[2], from_pods[1], **ANALYSIS)
    by_prometheus = analyse(from_prometheus[2], from_prometheus[1], **ANALYSIS)
    assert by_prometheus == by_pods and by_pods.verdict == verdict
    assert by_pods.requests == 120


def test_prometheus_counts_across_a_pod_restart() -> None:
    """A restarted pod's counters begin again: increase() counts its new requests; a scrape difference cannot."""
    first, second = Pod(2), Pod(2)
    first.serve(100)
    second.serve(100)
    before = [first.scrape(), second.scrape()]
    second = Pod(2)  # restarted
    first.serve(30)
    second.serve(20)
    after = [first.scrape(), second.scrape()]
    assert summarize(prometheus(before, after, [2])[2]).requests == 50
    assert pods_delta(before, after).total == 150  # counters went backwards: everything counts as new


def test_drift_from_prometheus_equals_drift_from_pod_scrapes() -> None:
    monitoring = Monitoring(threshold=0.2, driftedShare=0.5, minSamples=50, window="10m")
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    pods = [Pod(1), Pod(1)]
    for pod in pods:
        pod.serve(300)
    before = [p.scrape() for p in pods]
    for pod in pods:
        pod.serve(400, shift=1.5)  # the window's inputs moved
    after = [p.scrape() for p in pods]

    cumulative_before = parse(before[0]).add(parse(before[1]))
    cumulative_after = parse(after[0]).add(parse(after[1]))
    opened = check_drift(monitoring, None, 1, cumulative_before.features, cumulative_before.reference, t0)
    by_pods = check_drift(monitoring, opened.status, 1, cumulative_after.features, cumulative_after.reference,
                          t0 + timedelta(minutes=10))

    opened_w = check_drift(monitoring, None, 1, {}, cumulative_before.reference, t0, windowed=True)
    assert "baseline" not in opened_w.status  # nothing to subtract later: Prometheus knows the window
    window = prometheus(before, after, [1], features=True, window=600)[1]
    assert window.reference == cumulative_after.reference
    by_prometheus = check_drift(monitoring, opened_w.status, 1, window.features, window.reference,
                                t0 + timedelta(minutes=10), windowed=True)
    assert by_pods.evaluated and by_prometheus.evaluated and by_pods.drifted and by_prometheus.drifted
    assert by_prometheus.status["samples"] == by_pods.status["samples"] == 800
    assert by_prometheus.status["topFeatures"] == by_pods.status["topFeatures"]
    assert by_prometheus.status["driftedShare"] == by_pods.status["driftedShare"]
    assert by_prometheus.message == by_pods.message


def test_server_reads_its_deployment_from_the_environment() -> None:
    from kultivar.serving.config import ConfigError, ServingConfig

    base = {"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": "/m/model.skops",
            "KULTIVAR_MODEL_DIGEST": "sha256:" + "a" * 64}
    assert ServingConfig.from_env(base).deployment is None
    both = {**base, "KULTIVAR_NAMESPACE": NS, "KULTIVAR_DEPLOYMENT": NAME}
    assert ServingConfig.from_env(both).deployment == (NS, NAME)
    with pytest.raises(ConfigError, match="both"):
        ServingConfig.from_env({**base, "KULTIVAR_DEPLOYMENT": NAME})
