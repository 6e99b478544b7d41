from __future__ import annotations

import math

from kultivar.domain.metrics import Snapshot, analyse, distribution_shift, parse, quantile

EXPOSITION = """
# HELP kultivar_inference_requests_total Inference requests by outcome.
# TYPE kultivar_inference_requests_total counter
kultivar_inference_requests_total{model="iris",outcome="success",version="1"} 90.0
kultivar_inference_requests_total{model="iris",outcome="error",version="1"} 10.0
# HELP kultivar_inference_latency_seconds Inference request latency.
# TYPE kultivar_inference_latency_seconds histogram
kultivar_inference_latency_seconds_bucket{le="0.01",model="iris",version="1"} 50.0
kultivar_inference_latency_seconds_bucket{le="0.1",model="iris",version="1"} 100.0
kultivar_inference_latency_seconds_bucket{le="+Inf",model="iris",version="1"} 100.0
kultivar_inference_latency_seconds_count{model="iris",version="1"} 100.0
kultivar_inference_latency_seconds_sum{model="iris",version="1"} 3.0
# HELP kultivar_predictions_total Predicted rows per class.
# TYPE kultivar_predictions_total counter
kultivar_predictions_total{class="0",model="iris",version="1"} 60.0
kultivar_predictions_total{class="1",model="iris",version="1"} 40.0
# HELP kultivar_feature_bucket_total Input values per training-profile bucket.
# TYPE kultivar_feature_bucket_total counter
kultivar_feature_bucket_total{bucket="0",feature="a",model="iris",version="1"} 30.0
kultivar_feature_bucket_total{bucket="1",feature="a",model="iris",version="1"} 70.0
"""


def test_parse_reads_every_family() -> None:
    s = parse(EXPOSITION)
    assert s.requests == {"success": 90.0, "error": 10.0} and s.total == 100
    assert s.latency[0.01] == 50 and math.isinf(max(s.latency))
    assert s.predictions == {"0": 60.0, "1": 40.0}
    assert s.features == {"a": {"0": 30.0, "1": 70.0}}


def test_quantile_interpolates_like_prometheus() -> None:
    assert quantile({0.01: 50.0, 0.1: 100.0, float("inf"): 100.0}, 0.5) == 0.01
    assert abs(quantile({0.01: 50.0, 0.1: 100.0, float("inf"): 100.0}, 0.95) - 0.091) < 1e-9
    assert quantile({}, 0.95) is None


def test_snapshot_delta_and_counter_reset() -> None:
    a = parse(EXPOSITION)
    b = a.add(a)
    assert b.minus(a).total == 100
    assert a.minus(b).total == 100  # counters went backwards (pod restart): all of it is new


def test_distribution_shift() -> None:
    assert distribution_shift({"0": 50, "1": 50}, {"0": 50, "1": 50}) < 1e-9
    assert distribution_shift({"0": 100, "1": 0}, {"0": 50, "1": 50}) > 1


def test_analyse_verdicts() -> None:
    s = parse(EXPOSITION)
    kw = {"min_requests": 10, "max_error_rate": 0.2, "max_latency_p95": 0.5, "max_prediction_shift": 0.2}
    assert analyse(s, s, **kw).verdict == "Pass"
    assert analyse(s, s, **{**kw, "max_error_rate": 0.05}).failed_check == "ErrorRate"
    assert analyse(s, s, **{**kw, "max_latency_p95": 0.05}).failed_check == "LatencyP95"
    assert analyse(s, s, **{**kw, "min_requests": 1000}).verdict == "Inconclusive"
    assert analyse(Snapshot(), None, **kw).verdict == "Inconclusive"
