"""The workload commands end to end: env vars in, termination message and exit code out."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kultivar.workloads.cli as cli
from kultivar.api.contracts import decode_termination

ENV_VARS = [
    "KULTIVAR_SPEC", "KULTIVAR_NAMESPACE", "KULTIVAR_NAME", "KULTIVAR_UID", "KULTIVAR_STORE",
    "KULTIVAR_TERMINATION_LOG", "KULTIVAR_DATASET_SNAPSHOT", "KULTIVAR_DATASET_DIGEST", "KULTIVAR_PROFILE_URI",
    "KULTIVAR_TASK", "KULTIVAR_TARGET", "KULTIVAR_FEATURES",
]
IRIS_SPEC = {"source": {"uri": "sklearn://iris"}, "schema": {"target": "species", "task": "classification"}}
TRAIN_SPEC = {"datasetRef": {"name": "iris"}, "modelRef": {"name": "iris"},
              "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 300}}}


def parser() -> argparse.ArgumentParser:
    # The shape kultivar/cli.py uses: its own parser, our subcommands, dispatch through args.func.
    p = argparse.ArgumentParser(prog="kultivar")
    sub = p.add_subparsers(dest="command", required=True)
    cli.add_commands(sub)
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    term = tmp_path / "termination-log"
    values = {"KULTIVAR_NAMESPACE": "team-a", "KULTIVAR_STORE": str(tmp_path / "store"),
              "KULTIVAR_TERMINATION_LOG": str(term)}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return {"term": term, "store": tmp_path / "store", "monkeypatch": monkeypatch}


def decode_result(text: str) -> dict[str, Any]:
    result = decode_termination(text)
    assert result is not None
    return result


def result_of(env: dict[str, Any]) -> dict[str, Any]:
    return decode_result(env["term"].read_text())


def validate_iris(env: dict[str, Any]) -> dict[str, Any]:
    mp = env["monkeypatch"]
    mp.setenv("KULTIVAR_SPEC", json.dumps(IRIS_SPEC))
    mp.setenv("KULTIVAR_NAME", "iris")
    assert run(["validate-dataset"]) == 0
    return result_of(env)


def test_validate_then_train_through_env(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    validated = validate_iris(env)
    assert validated["ok"] and validated["rows"] == 150
    assert validated["snapshotUri"].startswith(str(env["store"]) + "/team-a/datasets/iris/")
    assert Path(validated["snapshotUri"]).is_file()
    out = capsys.readouterr().out
    assert "validating Dataset team-a/iris" in out and "all checks passed" in out
    assert decode_result(out.strip().splitlines()[-1]) == validated  # the log ends with the result

    mp = env["monkeypatch"]
    mp.setenv("KULTIVAR_SPEC", json.dumps(TRAIN_SPEC))
    mp.setenv("KULTIVAR_NAME", "iris-run-1")
    mp.setenv("KULTIVAR_UID", "9f1c2d3e-0000-4000-8000-000000000001")
    mp.setenv("KULTIVAR_DATASET_SNAPSHOT", validated["snapshotUri"])
    mp.setenv("KULTIVAR_DATASET_DIGEST", validated["digest"])
    mp.setenv("KULTIVAR_PROFILE_URI", validated["profileUri"])
    mp.setenv("KULTIVAR_TASK", "classification")
    mp.setenv("KULTIVAR_TARGET", "species")
    mp.setenv("KULTIVAR_FEATURES", json.dumps([{"name": f["name"], "type": f["type"]}
                                               for f in validated["features"]]))
    assert run(["train"]) == 0
    trained = result_of(env)
    assert trained["ok"] and trained["metric"] == "accuracy" and trained["score"] > 0.85
    assert trained["artifact"]["uri"] == f"{env['store']}/team-a/runs/iris-run-1-9f1c2d3e/model.skops"
    assert Path(trained["manifestUri"]).is_file()
    assert "fitting sklearn.linear_model.LogisticRegression" in capsys.readouterr().out


def test_flags_override_env(env: dict[str, Any], tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(IRIS_SPEC))
    other = tmp_path / "other-log"
    assert run(["validate-dataset", "--spec-file", str(spec_file), "--name", "flower", "--namespace", "ns2",
                "--termination-log", str(other)]) == 0
    assert "/ns2/datasets/flower/" in decode_result(other.read_text())["snapshotUri"]


def test_validation_failure_is_permanent(env: dict[str, Any]) -> None:
    spec = {"source": {"uri": "sklearn://iris"},
            "schema": {"target": "species", "task": "classification",
                       "features": [{"name": "petal length (cm)", "type": "numeric", "maximum": 5.0}]},
            "checks": {"minRows": 10}}
    env["monkeypatch"].setenv("KULTIVAR_SPEC", json.dumps(spec))
    env["monkeypatch"].setenv("KULTIVAR_NAME", "iris")
    assert run(["validate-dataset"]) == 2
    result = result_of(env)
    assert result["reason"] == "DataValidationFailed" and result["check"] == "ValueOutOfRange"
    assert "'petal length (cm)'" in result["message"]


@pytest.mark.parametrize("spec_text,needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"source": {"uri": "ftp://x"}, "schema": {"target": "y", "task": "classification"}}),
     "source.uri"),
    (None, "KULTIVAR_SPEC"),
])
def test_bad_inputs_are_permanent(env: dict[str, Any], spec_text: str | None, needle: str) -> None:
    if spec_text is not None:
        env["monkeypatch"].setenv("KULTIVAR_SPEC", spec_text)
    env["monkeypatch"].setenv("KULTIVAR_NAME", "d")
    assert run(["validate-dataset"]) == 2
    result = result_of(env)
    assert result["reason"] == "InvalidSpec" and needle in result["message"]


def test_missing_env_var_is_named(env: dict[str, Any]) -> None:
    env["monkeypatch"].setenv("KULTIVAR_SPEC", json.dumps(IRIS_SPEC))
    assert run(["validate-dataset"]) == 2
    assert "KULTIVAR_NAME" in result_of(env)["message"]


def test_unreachable_store_is_retryable(env: dict[str, Any], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    env["monkeypatch"].setenv("KULTIVAR_STORE", str(blocker / "store"))
    env["monkeypatch"].setenv("KULTIVAR_SPEC", json.dumps(IRIS_SPEC))
    env["monkeypatch"].setenv("KULTIVAR_NAME", "iris")
    assert run(["validate-dataset"]) == 1
    result = result_of(env)
    assert result["reason"] == "StorageUnavailable" and result["retryable"] is True


def test_unexpected_errors_are_reported(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    import kultivar.workloads.validation as validation

    def boom(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("something broke")

    env["monkeypatch"].setattr(validation, "run_validation", boom)
    env["monkeypatch"].setenv("KULTIVAR_SPEC", json.dumps(IRIS_SPEC))
    env["monkeypatch"].setenv("KULTIVAR_NAME", "iris")
    assert run(["validate-dataset"]) == 1
    result = result_of(env)
    assert result["reason"] == "InternalError" and "RuntimeError: something broke" in result["message"]
    assert "Traceback" in capsys.readouterr().out


def test_sigterm_is_reported(env: dict[str, Any]) -> None:
    import signal

    import kultivar.workloads.validation as validation

    def stopped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM should have interrupted the workload")

    before = signal.getsignal(signal.SIGTERM)
    env["monkeypatch"].setattr(validation, "run_validation", stopped)
    env["monkeypatch"].setenv("KULTIVAR_SPEC", json.dumps(IRIS_SPEC))
    env["monkeypatch"].setenv("KULTIVAR_NAME", "iris")
    assert run(["validate-dataset"]) == 1
    assert result_of(env)["reason"] == "Terminated"
    assert signal.getsignal(signal.SIGTERM) == before


def test_train_with_a_bad_estimator_is_permanent(env: dict[str, Any]) -> None:
    validated = validate_iris(env)
    mp = env["monkeypatch"]
    mp.setenv("KULTIVAR_SPEC", json.dumps({**TRAIN_SPEC, "estimator": {"className": "sklearn.nope.Model"}}))
    for k, v in {"KULTIVAR_NAME": "r", "KULTIVAR_UID": "u" * 36, "KULTIVAR_DATASET_SNAPSHOT": validated["snapshotUri"],
                 "KULTIVAR_DATASET_DIGEST": validated["digest"], "KULTIVAR_TASK": "classification",
                 "KULTIVAR_TARGET": "species", "KULTIVAR_FEATURES": json.dumps(validated["features"])}.items():
        mp.setenv(k, v)
    assert run(["train"]) == 2
    assert result_of(env)["reason"] == "EstimatorImportFailed"
    mp.setenv("KULTIVAR_FEATURES", "[]")
    assert run(["train"]) == 2
    assert "KULTIVAR_FEATURES" in result_of(env)["message"]


def test_subprocess_module_entry(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update({"KULTIVAR_SPEC": json.dumps(IRIS_SPEC), "KULTIVAR_NAMESPACE": "ns", "KULTIVAR_NAME": "iris",
                "KULTIVAR_STORE": f"file://{tmp_path}/store", "KULTIVAR_TERMINATION_LOG": str(term)})
    proc = subprocess.run([sys.executable, "-m", "kultivar.workloads.cli", "validate-dataset"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = decode_result(term.read_text())
    assert result["ok"] and result["snapshotUri"].startswith(f"file://{tmp_path}/store/ns/datasets/iris/")
    assert "reading sklearn://iris" in proc.stdout
