"""Termination message: size limit, dropping order, tolerant decoding."""

from __future__ import annotations

import json
from pathlib import Path

from kultivar.api.contracts import TERMINATION_LIMIT as LIMIT
from kultivar.api.contracts import decode_termination as decode_result
from kultivar.api.contracts import encode_termination as encode_result
from kultivar.workloads.termination import write_termination

DIGEST = "sha256:" + "a" * 64


def validation_result(features: int) -> dict:
    return {
        "ok": True, "digest": DIGEST, "rows": 1000, "columns": features + 1,
        "snapshotUri": f"s3://bucket/ns/datasets/d/{'a' * 64}/snapshot.arrow",
        "profileUri": f"s3://bucket/ns/datasets/d/{'a' * 64}/profile.json",
        "features": [{"name": f"feature_number_{i}", "type": "numeric", "missingFraction": 0.0123}
                     for i in range(features)],
        "timings": {"load": 1.0},
    }


def test_small_results_are_kept_whole() -> None:
    result = validation_result(5)
    text = encode_result(result)
    assert json.loads(text) == result
    assert " " not in text.replace("feature_number", "")  # compact separators
    assert decode_result(text) == result


def test_bulky_fields_are_dropped_first() -> None:
    result = validation_result(500)
    text = encode_result(result)
    assert len(text.encode()) <= LIMIT
    decoded = json.loads(text)
    assert "features" not in decoded
    assert decoded["digest"] == DIGEST and decoded["snapshotUri"] == result["snapshotUri"]
    assert decoded["timings"] == {"load": 1.0}  # only dropped what was needed


def test_training_result_drops_best_params_before_metrics() -> None:
    result = {
        "ok": True, "metric": "accuracy", "score": 0.9, "metrics": {"accuracy": 0.9, "f1": 0.88},
        "artifact": {"uri": "s3://b/ns/runs/r/model.skops", "digest": DIGEST, "sizeBytes": 1234},
        "manifestUri": "s3://b/ns/runs/r/manifest.json", "datasetDigest": DIGEST, "sklearnVersion": "1.9.1",
        "bestParams": {"param_" + str(i): "x" * 50 for i in range(100)},
    }
    decoded = json.loads(encode_result(result))
    assert "bestParams" not in decoded
    assert decoded["metrics"] == result["metrics"] and decoded["artifact"] == result["artifact"]


def test_long_messages_are_truncated_within_the_limit() -> None:
    for char in ("x", "ü", "🙂"):
        result = {"ok": False, "reason": "DataValidationFailed", "check": "TypeMismatch",
                  "message": char * 10_000, "failures": [{"check": "TypeMismatch", "message": "m" * 100}] * 50}
        text = encode_result(result)
        assert len(text.encode("utf-8")) <= LIMIT
        decoded = json.loads(text)
        assert decoded["reason"] == "DataValidationFailed" and decoded["check"] == "TypeMismatch"
        assert "failures" not in decoded
        assert decoded["message"].endswith("…") and len(decoded["message"]) > 500


def test_custom_limit_and_pathological_results() -> None:
    text = encode_result({"ok": True, "digest": DIGEST, "snapshotUri": "s3://" + "x" * 5000}, limit=512)
    assert len(text.encode()) <= 512
    assert decode_result(text)["ok"] is True


def test_non_finite_numbers_become_null() -> None:
    decoded = json.loads(encode_result({"ok": True, "score": float("nan"), "metrics": {"r2": float("-inf")}}))
    assert decoded == {"ok": True, "score": None, "metrics": {"r2": None}}


def test_write_termination(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "termination-log"
    text = write_termination({"ok": True, "digest": DIGEST}, str(path))
    assert path.read_text() == text
    assert decode_result(path.read_text())["digest"] == DIGEST


def test_decode_is_tolerant() -> None:
    traceback_tail = ('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
                      "MemoryError: cannot allocate")
    decoded = decode_result(traceback_tail)
    assert decoded is not None
    assert decoded["ok"] is False and decoded["reason"] == "WorkloadCrashed"
    assert "MemoryError" in decoded["message"]
    assert decode_result("") is None and decode_result(None) is None  # no message at all: nothing reported
    for garbage in ("[1, 2]", '{"something": "else"}'):
        assert decode_result(garbage) == {"ok": False, "reason": "WorkloadCrashed", "message": (
            f"the pod did not report a result; the end of its output was: {garbage}")}
    assert decode_result('{"ok": false}') == {"ok": False, "reason": "Failed", "message": ""}
    # FallbackToLogsOnError: the log tail ends with the result line the CLI prints.
    result_line = json.dumps({"ok": True, "digest": DIGEST})
    log_tail = f"2024-01-01T00:00:00 fitting...\n2024-01-01T00:00:05 done\n{result_line}\n"
    assert decode_result(log_tail) == {"ok": True, "digest": DIGEST}
