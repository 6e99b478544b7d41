"""The inference server as a real process on 127.0.0.1: protocol, validation, metrics, digest refusal.

Needs no cluster (it does not use the ``kube`` fixture): a small iris model is trained through the training
workload into a temporary file store and served by ``kultivar serve``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_for
from kultivar.api.dataset import DatasetSpec
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.domain.profile import CategoricalProfile, NumericProfile, Profile, bin_index
from kultivar.domain.trainingrun import dataset_features
from kultivar.workloads.artifact import load_model
from kultivar.workloads.storage import ArtifactStore
from kultivar.workloads.training import run_training
from kultivar.workloads.validation import run_validation

MODEL = "iris"
START_TIMEOUT = 120.0


def serve_command() -> list[str]:
    """``kultivar serve`` as the runtime image runs it.

    Falls back to the serving package's own entry point while the top-level ``kultivar`` command does not
    register ``serve`` yet (same code path from there on).
    """
    from kultivar.cli import build_parser

    if "serve" in build_parser().format_help():
        return [sys.executable, "-m", "kultivar.cli", "serve"]
    return [sys.executable, "-m", "kultivar.serving.cli", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Trained:
    store: ArtifactStore
    uri: str
    digest: str
    manifest: dict[str, Any]
    profile: Profile
    model: Any = field(repr=False)

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.manifest["features"]]


def train(store: ArtifactStore, name: str, uri: str, target: str, task: str = "classification",
          estimator: str = "sklearn.linear_model.LogisticRegression", **schema: Any) -> Trained:
    spec = DatasetSpec.model_validate({"source": {"uri": uri}, "schema": {"target": target, "task": task, **schema}})
    data = run_validation(spec, "ns", name, store)
    assert data["ok"], data
    run_spec = TrainingRunSpec.model_validate({
        "datasetRef": {"name": name}, "modelRef": {"name": name}, "estimator": {"className": estimator, "params": {}},
    })
    # The features as the operator tells the training pod about them (allowed values, missing-value texts).
    features = dataset_features({"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                                 "status": {"features": data["features"]}})
    result = run_training(run_spec, data["snapshotUri"], data["digest"], data["profileUri"], task, target,
                          features, "ns", name, uuid.uuid4().hex, store)
    assert result["ok"], result
    uri, digest = result["artifact"]["uri"], result["artifact"]["digest"]
    return Trained(store, uri, digest, json.loads(store.read_bytes(result["manifestUri"])),
                   Profile.model_validate_json(store.read_bytes(data["profileUri"])),
                   load_model(uri, digest, store))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train(ArtifactStore(str(tmp_path_factory.mktemp("store"))), MODEL, "sklearn://iris", "species")


# -------------------------------------------------------------------------------------------------- client


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    readiness_seen: list[int]

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        text = payload.decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def infer(self, rows: np.ndarray, **extra: Any) -> tuple[int, Any]:
        rows = np.atleast_2d(rows)
        return self.call("POST", f"/v2/models/{MODEL}/infer", {
            "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                        "data": rows.ravel().tolist()}], **extra})

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.call("GET", "/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(trained: Trained, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KULTIVAR_")}
    env.update({
        "KULTIVAR_MODEL_NAME": MODEL, "KULTIVAR_MODEL_VERSION": "3", "KULTIVAR_MODEL_URI": trained.uri,
        "KULTIVAR_MODEL_DIGEST": trained.digest, "KULTIVAR_STORE": trained.store.base_url,
        "KULTIVAR_HTTP_HOST": "127.0.0.1", "KULTIVAR_HTTP_PORT": str(port), "KULTIVAR_BATCH_WAIT_MS": "2",
        "KULTIVAR_MAX_REQUEST_BYTES": "65536",
    })
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(trained: Trained, log_dir: Path, model: str = MODEL, **env: str) -> Iterator[Server]:
    """A started ``kultivar serve`` process, ready (test inference passed), stopped on exit."""
    port = free_port()
    log = log_dir / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(serve_command(), env=_env(trained, port, KULTIVAR_MODEL_NAME=model, **env),
                                   stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", process, log, [])

    def ready() -> bool:
        assert process.poll() is None, f"the server exited with {process.returncode}:\n{srv.output()}"
        status, _ = srv.call("GET", "/v2/health/ready")
        srv.readiness_seen.append(status)
        return status == 200

    try:
        wait_for(lambda: srv.call("GET", "/v2/health/live")[0] == 200, timeout=START_TIMEOUT, interval=0.05,
                 message="the server to answer liveness", ignore=(OSError,))
        wait_for(ready, timeout=START_TIMEOUT, interval=0.05, message="the server to become ready",
                 ignore=(OSError,))
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(trained, tmp_path_factory.mktemp("server")) as srv:
        yield srv


def iris_rows(n: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_iris

    x = load_iris().data
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def local_predictions(trained: Trained, rows: np.ndarray) -> list[Any]:
    return trained.model.predict(pd.DataFrame(np.atleast_2d(rows), columns=trained.names)).tolist()


# --------------------------------------------------------------------------------------------------- tests


def test_ready_only_after_the_test_inference(server: Server) -> None:
    out = server.output()
    assert "test inference passed" in out
    assert out.index("model file verified") < out.index("test inference passed") < out.index("ready in")
    # Every readiness answer before the model was up said 503, never anything else.
    assert set(server.readiness_seen[:-1]) <= {503} and server.readiness_seen[-1] == 200
    assert server.metrics()[("kultivar_model_ready", (("model", MODEL), ("version", "3")))] == 1.0
    assert server.call("GET", f"/v2/models/{MODEL}/ready") == (200, {"name": MODEL, "ready": True})
    assert server.call("GET", f"/v2/models/{MODEL}/versions/3/ready")[0] == 200


def test_metadata(server: Server, trained: Trained) -> None:
    assert server.call("GET", "/v2/health/live") == (200, {"live": True})
    status, meta = server.call("GET", f"/v2/models/{MODEL}")
    assert status == 200
    assert meta["name"] == MODEL and meta["versions"] == ["3"] and meta["platform"] == "sklearn"
    assert [i["name"] for i in meta["inputs"]] == trained.names
    assert all(i["datatype"] == "FP64" for i in meta["inputs"])
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                               {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}]
    assert meta["parameters"]["classes"] == [0, 1, 2] and meta["parameters"]["digest"] == trained.digest
    assert meta["parameters"]["backend"] == "onnx"  # the version has a compiled model that passed parity
    status, server_meta = server.call("GET", "/v2")
    assert status == 200 and server_meta["name"] == "kultivar"
    status, other = server.call("GET", "/v2/models/roses")
    assert status == 404 and "serves 'iris'" in other["error"]
    assert server.call("GET", f"/v2/models/{MODEL}/versions/9")[0] == 404
    assert server.call("GET", "/v1/models/iris") == (200, {"name": MODEL, "ready": True})


def test_v2_infer_matches_the_model_loaded_locally(server: Server, trained: Trained) -> None:
    rows = iris_rows(25)
    status, body = server.infer(rows, id="batch-1")
    assert status == 200, body
    assert body["model_name"] == MODEL and body["model_version"] == "3" and body["id"] == "batch-1"
    (output,) = body["outputs"]
    assert output["name"] == "predict" and output["shape"] == [25] and output["datatype"] == "INT64"
    assert output["data"] == local_predictions(trained, rows)

    # Concurrent single-row requests (micro-batched by the server) each get their own row's answer.
    singles = iris_rows(40, seed=1)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda row: server.infer(row), singles))
    assert all(status == 200 for status, _ in answers)
    assert [b["outputs"][0]["data"][0] for _, b in answers] == local_predictions(trained, singles)


def test_v2_one_input_per_feature(server: Server, trained: Trained) -> None:
    rows = iris_rows(3, seed=2)
    inputs = [{"name": name, "shape": [3], "datatype": "FP32", "data": rows[:, j].tolist()}
              for j, name in enumerate(trained.names)]
    status, body = server.call("POST", f"/v2/models/{MODEL}/versions/3/infer", {"inputs": inputs[::-1]})
    assert status == 200, body
    assert body["outputs"][0]["data"] == local_predictions(trained, rows)


def local_probabilities(trained: Trained, rows: np.ndarray) -> np.ndarray:
    return np.asarray(trained.model.predict_proba(pd.DataFrame(np.atleast_2d(rows), columns=trained.names)))


def test_probabilities_on_request(server: Server, trained: Trained) -> None:
    """Labels in their own type plus per-class probabilities, asked for by outputs list, parameter or V1."""
    from kultivar.workloads.compile import PROBABILITY_ATOL

    rows = iris_rows(5, seed=4)
    expected = local_probabilities(trained, rows)
    status, body = server.infer(rows, outputs=[{"name": "predict"}, {"name": "predict_proba"}])
    assert status == 200, body
    labels, proba = body["outputs"]
    assert labels["data"] == local_predictions(trained, rows)
    assert proba["name"] == "predict_proba" and proba["shape"] == [5, 3] and proba["datatype"] == "FP64"
    assert np.abs(np.reshape(proba["data"], (5, 3)) - expected).max() <= PROBABILITY_ATOL
    status, body = server.infer(rows, parameters={"probabilities": True})
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["predict", "predict_proba"]
    status, body = server.infer(rows, outputs=[{"name": "predict_proba"}])
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["predict_proba"]
    status, body = server.call("POST", f"/v1/models/{MODEL}:predict",
                               {"instances": rows.tolist(), "parameters": {"probabilities": True}})
    assert status == 200 and body["predictions"] == local_predictions(trained, rows)
    assert np.abs(np.asarray(body["probabilities"]) - expected).max() <= PROBABILITY_ATOL


def test_v1_predict(server: Server, trained: Trained) -> None:
    rows = iris_rows(4, seed=3)
    instances: list[Any] = [rows[0].tolist(), rows[1].tolist(),
                            dict(zip(trained.names, rows[2].tolist(), strict=True)),
                            dict(zip(trained.names, rows[3].tolist(), strict=True))]
    status, body = server.call("POST", f"/v1/models/{MODEL}:predict", {"instances": instances})
    assert status == 200, body
    assert body["predictions"] == local_predictions(trained, rows)
    assert body["model_version"] == "3" and body["id"]


def _v2(data: Any, shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": data}]}


BAD_PAYLOADS = [
    pytest.param("/v2/models/iris/infer", _v2([5.1, 3.5, 1.4, 0.2, 1.0, 2.0], [2, 4]), "needs 8 values",
                 id="wrong-shape"),
    pytest.param("/v2/models/iris/infer", _v2([5.1, 3.5, 1.4, 0.2], [4]), "must be [rows, features]",
                 id="one-dimensional"),
    pytest.param("/v2/models/iris/infer", _v2([5.1, 3.5, 1.4, 0.2], [1, 4], "FLOAT"), "not a V2 datatype",
                 id="unknown-datatype"),
    pytest.param("/v2/models/iris/infer", _v2(["a", "b", "c", "d"], [1, 4], "BYTES"), "cannot carry numeric",
                 id="wrong-datatype"),
    pytest.param("/v2/models/iris/infer", _v2([5.1, 3.5, 1.4], [1, 3]), "takes 4 features",
                 id="feature-count"),
    pytest.param("/v2/models/iris/infer", _v2([5.1, "wide", 1.4, 0.2], [1, 4]), "'wide', not a number",
                 id="non-numeric"),
    pytest.param("/v2/models/iris/infer", b'{"inputs": [', "not valid JSON", id="invalid-json"),
    pytest.param("/v2/models/iris/infer", {"data": [1, 2, 3, 4]}, "'inputs' must be a non-empty list",
                 id="no-inputs"),
    pytest.param("/v1/models/iris:predict", {"instances": [[5.1, 3.5, None, "x"]]}, "not a number",
                 id="v1-non-numeric"),
    pytest.param("/v1/models/iris:predict", {"instances": [[5.1, 3.5]]}, "has 2 values", id="v1-feature-count"),
]


@pytest.mark.parametrize(("path", "payload", "message"), BAD_PAYLOADS)
def test_bad_payloads_get_400_and_the_server_keeps_serving(server: Server, trained: Trained, path: str,
                                                           payload: Any, message: str) -> None:
    raw = payload if isinstance(payload, bytes) else None
    status, body = server.call("POST", path, None if raw else payload, raw=raw)
    assert status == 400, body
    assert message in body["error"]
    row = iris_rows(1, seed=4)
    status, good = server.infer(row)
    assert status == 200 and good["outputs"][0]["data"] == local_predictions(trained, row)


def test_oversized_and_misrouted_requests(server: Server) -> None:
    huge = _v2([1.0] * 20000, [5000, 4])
    status, body = server.call("POST", f"/v2/models/{MODEL}/infer", huge)
    assert status == 413 and "KULTIVAR_MAX_REQUEST_BYTES" in body["error"]
    status, body = server.call("POST", "/v2/models/roses/infer", _v2([1, 2, 3, 4], [1, 4]))
    assert status == 404 and "serves 'iris'" in body["error"]
    assert server.call("GET", f"/v2/models/{MODEL}/infer")[0] == 405
    assert server.call("GET", "/nowhere")[0] == 404
    assert server.call("GET", "/v2/health/ready")[0] == 200


def test_metrics(server: Server, trained: Trained) -> None:
    labels = (("model", MODEL), ("version", "3"))
    before = server.metrics()
    rows = iris_rows(30, seed=5)
    rows[0, 0] = 100.0  # far beyond training: the open last bin
    for chunk in np.array_split(rows, 6):
        assert server.infer(chunk)[0] == 200
    assert server.infer(np.array([[1.0, 2.0]]))[0] == 400
    after = server.metrics()

    def delta(name: str, *extra: tuple[str, str]) -> float:
        key = (name, tuple(sorted((*labels, *extra))))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("kultivar_inference_requests_total", ("outcome", "success")) == 6
    assert delta("kultivar_inference_requests_total", ("outcome", "bad_request")) == 1
    assert delta("kultivar_inference_latency_seconds_count") == 7
    assert delta("kultivar_inference_batch_rows_sum") == 30

    predicted = local_predictions(trained, rows)
    for cls in (0, 1, 2):
        assert delta("kultivar_predictions_total", ("class", str(cls))) == predicted.count(cls)

    # Per-feature buckets follow the training profile exactly as kultivar.domain.profile bins values.
    for j, name in enumerate(trained.names):
        ref = trained.profile.features[name]
        assert isinstance(ref, NumericProfile)
        expected = np.bincount([bin_index(ref, v) for v in rows[:, j]], minlength=ref.bins)
        got = [delta("kultivar_feature_bucket_total", ("feature", name), ("bucket", str(b)))
               for b in range(ref.bins)]
        assert got == expected.tolist(), name
        assert (("kultivar_feature_bucket_total", tuple(sorted((*labels, ("feature", name),
                                                              ("bucket", "__missing__"))))) in after)
    first = trained.names[0]
    last_bin = str(trained.profile.features[first].bins - 1)  # type: ignore[union-attr]
    assert delta("kultivar_feature_bucket_total", ("feature", first), ("bucket", last_bin)) >= 1


def _post(srv: Server, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    """Like Server.call, with the response headers (names in lower case)."""
    request = urllib.request.Request(srv.base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())


def test_answers_carry_an_id_and_the_version_and_feedback_on_them_is_counted(server: Server,
                                                                            trained: Trained) -> None:
    """Every answer names itself and its version; feedback quoting them is counted per answering version, and
    a bad batch is refused whole."""
    rows = iris_rows(12, seed=7)
    status, headers, v2 = _post(server, f"/v2/models/{MODEL}/infer", {"inputs": [
        {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]})
    assert status == 200 and v2["model_version"] == "3" and v2["id"]
    assert headers["kultivar-model-version"] == "3" and headers["kultivar-request-id"] == v2["id"]
    status, headers, v1 = _post(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:2].tolist()})
    assert status == 200 and v1["model_version"] == "3" and headers["kultivar-request-id"] == v1["id"]
    assert v1["id"] != v2["id"]
    assert server.infer(rows[:1], id="mine")[1]["id"] == "mine"

    predicted = v2["outputs"][0]["data"]
    actual = [(p + 1) % 3 if i % 4 == 0 else p for i, p in enumerate(predicted)]  # every 4th answer was wrong
    items = [{"id": v2["id"], "version": v2["model_version"], "prediction": p, "actual": a}
             for p, a in zip(predicted, actual, strict=True)]
    # Feedback about another version (a canary's answers, say) is counted here too, under that version.
    items.append({"version": 4, "prediction": 0, "actual": "not-a-class"})
    metric = "kultivar_feedback_classifications_total"
    before = server.metrics()
    assert server.call("POST", f"/v2/models/{MODEL}/feedback", {"items": items}) == (
        200, {"counted": 13, "actual_other": 1})
    status, body = server.call("POST", f"/v2/models/{MODEL}/feedback",
                               {"items": [*items, {"version": 3, "prediction": 1, "actual": 1.5}]})
    assert status == 200, body  # 1.5 is no class: counted as __other__
    status, body = server.call("POST", f"/v2/models/{MODEL}/feedback",
                               {"items": [*items, {"version": 3, "prediction": 1}]})
    assert status == 400 and "items[13] has no 'actual'" in body["error"]
    status, body = server.call("POST", f"/v2/models/{MODEL}/feedback", {"items": [{}] * 10_001})
    assert status == 400 and "send at most 10000" in body["error"]
    assert server.call("POST", "/v2/models/other/feedback", {"items": items})[0] == 404
    after = server.metrics()

    def counted(version: str, p: Any, a: Any) -> float:
        key = (metric, tuple(sorted((("model", MODEL), ("version", version), ("predicted", str(p)),
                                     ("actual", str(a))))))
        return after.get(key, 0.0) - before.get(key, 0.0)

    expected: dict[tuple[Any, Any], int] = {}
    for p, a in zip(predicted, actual, strict=True):
        expected[(p, a)] = expected.get((p, a), 0) + 2  # the two accepted batches
    expected[(1, "__other__")] = expected.get((1, "__other__"), 0) + 1
    for (p, a), n in expected.items():
        assert counted("3", p, a) == n, (p, a)
    assert counted("4", 0, "__other__") == 2
    total = sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == metric)
    assert total == 2 * 13 + 1
    requests = {dict(k[1])["outcome"]: v - before.get(k, 0.0) for k, v in after.items()
                if k[0] == "kultivar_feedback_requests_total"}
    assert requests["success"] == 2 and requests["bad_request"] == 3


def test_refuses_to_start_when_the_digest_does_not_match(trained: Trained, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    result = subprocess.run(serve_command(), env=_env(trained, free_port(), KULTIVAR_MODEL_DIGEST=wrong,
                                                      KULTIVAR_TERMINATION_LOG=str(tmp_path / "termination")),
                            capture_output=True, text=True, timeout=START_TIMEOUT)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "refusing to serve: ModelDigestMismatch" in out
    assert f"has digest {trained.digest} but {wrong} was registered" in out
    assert "test inference" not in out  # nothing was deserialised, let alone run
    report = json.loads((tmp_path / "termination").read_text())
    assert report["reason"] == "ModelDigestMismatch" and report["retryable"] is False


def test_refuses_to_start_without_a_digest(trained: Trained) -> None:
    env = _env(trained, free_port())
    del env["KULTIVAR_MODEL_DIGEST"]
    result = subprocess.run(serve_command(), env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert result.returncode == 2
    assert "set KULTIVAR_MODEL_DIGEST" in result.stdout + result.stderr


def churn_frame(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    age = rng.normal(40, 12, rows)
    age[rng.random(rows) < 0.1] = np.nan
    plan = rng.choice(np.array(["basic", "plus", "pro"], dtype=object), rows)
    plan[rng.random(rows) < 0.05] = None
    member = rng.random(rows) < 0.5
    signal = np.nan_to_num(age, nan=40) / 10 + np.where(plan == "pro", 2, 0) + member * 1.5
    churn = np.where(signal + rng.normal(0, 0.5, rows) > np.median(signal), "yes", "no")
    return pd.DataFrame({"age": age, "plan": plan, "member": member, "churn": churn})


def test_mixed_feature_types_end_to_end(tmp_path: Path) -> None:
    """Numeric with gaps, categorical and boolean features: V2 per-feature inputs, V1 objects, category buckets."""
    path = tmp_path / "churn.parquet"
    churn_frame().to_parquet(path, index=False)
    trained = train(ArtifactStore(str(tmp_path / "store")), "churn", str(path), "churn", features=[
        {"name": "age", "type": "numeric", "nullable": True},
        {"name": "plan", "type": "categorical", "nullable": True},
        {"name": "member", "type": "boolean"},
    ])
    ages, plans, members = [35.0, None, 61.5, 20.0], ["pro", "basic", None, "enterprise"], [True, False, True, False]
    local = trained.model.predict(pd.DataFrame({
        "age": np.array([math.nan if a is None else a for a in ages]),
        "plan": np.array([math.nan if p is None else p for p in plans], dtype=object),
        "member": np.array(members, dtype=np.float64),
    })).tolist()
    with serving(trained, tmp_path, model="churn") as srv:
        status, meta = srv.call("GET", "/v2/models/churn")
        assert status == 200
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("age", "FP64"), ("plan", "BYTES"),
                                                                         ("member", "BOOL")]
        assert meta["outputs"][0]["datatype"] == "BYTES"
        before = srv.metrics()
        status, body = srv.call("POST", "/v2/models/churn/infer", {"inputs": [
            {"name": "plan", "shape": [4], "datatype": "BYTES", "data": plans},
            {"name": "age", "shape": [4], "datatype": "FP64", "data": ages},
            {"name": "member", "shape": [4], "datatype": "BOOL", "data": members},
        ]})
        assert status == 200, body
        assert body["outputs"][0]["datatype"] == "BYTES" and body["outputs"][0]["data"] == local
        assert meta["parameters"]["backend"] == "onnx"
        instances = [{"age": a, "plan": p, "member": "yes" if m else "no"}
                     for a, p, m in zip(ages, plans, members, strict=True)]
        status, body = srv.call("POST", "/v1/models/churn:predict", {"instances": instances})
        assert status == 200 and body["predictions"] == local
        status, body = srv.call("POST", "/v2/models/churn/infer", {"inputs": [
            {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
        assert status == 400 and "categorical features (plan)" in body["error"]
        after = srv.metrics()
        # A category that is empty text is no missing value to scikit-learn: such a batch goes to scikit-learn.
        status, body = srv.call("POST", "/v1/models/churn:predict",
                                {"instances": [{"age": 30, "plan": "", "member": True}]})
        empty = trained.model.predict(pd.DataFrame({"age": [30.0], "plan": np.array([""], dtype=object),
                                                    "member": [1.0]})).tolist()
        assert status == 200 and body["predictions"] == empty
        batches = {dict(k[1])["backend"]: v for k, v in srv.metrics().items()
                   if k[0] == "kultivar_inference_batches_total"}
        assert batches["sklearn"] == 1 and batches["onnx"] == 2  # the two requests above

    def delta(feature: str, bucket: str) -> float:
        key = ("kultivar_feature_bucket_total",
               tuple(sorted([("model", "churn"), ("version", "3"), ("feature", feature), ("bucket", bucket)])))
        return after.get(key, 0.0) - before.get(key, 0.0)

    plan_profile = trained.profile.features["plan"]
    assert isinstance(plan_profile, CategoricalProfile)
    # Both requests counted: "enterprise" was never seen in training and lands in __other__; None is missing.
    assert (delta("plan", "pro"), delta("plan", "basic"), delta("plan", "__other__"),
            delta("plan", "__missing__")) == (2, 2, 2, 2)
    assert (delta("member", "true"), delta("member", "false")) == (4, 4)
    assert delta("age", "__missing__") == 2


def test_unknown_categories_refused_and_csv_missing_spellings_read_as_training_did(tmp_path: Path) -> None:
    """Trained from a CSV whose plan column declares allowed values and spells missing values "None"/"nan": a
    server refusing unknown categories answers another plan with a 400 naming it (V2 JSON, V2 binary, V1), and
    reads "None" as the missing value it was in training."""
    frame = churn_frame()
    frame["plan"] = frame["plan"].where(frame["plan"].notna(), "None")
    frame.loc[frame.index % 50 == 1, "plan"] = "nan"
    path = tmp_path / "churn.csv"
    frame.to_csv(path, index=False)
    trained = train(ArtifactStore(str(tmp_path / "store")), "churn", str(path), "churn", features=[
        {"name": "age", "type": "numeric", "nullable": True},
        {"name": "plan", "type": "categorical", "nullable": True, "allowed": ["basic", "plus", "pro"]},
        {"name": "member", "type": "boolean"},
    ])
    plan = next(f for f in trained.manifest["features"] if f["name"] == "plan")
    assert plan["allowed"] == ["basic", "plus", "pro"] and "None" in plan["missingTokens"]
    missing = trained.model.predict(pd.DataFrame({"age": [30.0], "plan": np.array([math.nan], dtype=object),
                                                  "member": [1.0]})).tolist()
    with serving(trained, tmp_path, model="churn", KULTIVAR_UNKNOWN_CATEGORIES="refuse") as srv:
        status, meta = srv.call("GET", "/v2/models/churn")
        assert {f["name"]: f.get("allowed") for f in meta["parameters"]["features"]}["plan"] == ["basic", "plus",
                                                                                                  "pro"]

        def v2(plans: list[str]) -> dict[str, Any]:
            return {"inputs": [{"name": "age", "shape": [len(plans)], "datatype": "FP64", "data": [30.0] * len(plans)},
                               {"name": "plan", "shape": [len(plans)], "datatype": "BYTES", "data": plans},
                               {"name": "member", "shape": [len(plans)], "datatype": "BOOL",
                                "data": [True] * len(plans)}]}

        status, body = srv.call("POST", "/v2/models/churn/infer", v2(["pro", "enterprise"]))
        assert status == 400 and body["error"].startswith("inputs[1] ('plan').data[1] is 'enterprise', which is not "
                                                          "an allowed value of feature 'plan'"), body
        status, body = srv.call("POST", "/v1/models/churn:predict",
                                {"instances": [{"age": 30, "plan": "enterprise", "member": True}]})
        assert status == 400 and "'enterprise'" in body["error"] and "'plan'" in body["error"], body
        texts = b"".join(len(t).to_bytes(4, "little") + t for t in (b"pro", b"enterprise"))
        header = json.dumps({"inputs": [
            {"name": "age", "shape": [2], "datatype": "FP64", "data": [30.0, 30.0]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(texts)}},
            {"name": "member", "shape": [2], "datatype": "BOOL", "data": [True, True]}]}).encode()
        request = urllib.request.Request(srv.base + "/v2/models/churn/infer", header + texts, method="POST",
                                         headers={"Content-Type": "application/octet-stream",
                                                  "Inference-Header-Content-Length": str(len(header))})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and "'enterprise'" in json.loads(refused.value.read())["error"]
        # "None" and "nan" were missing values in the CSV, so they are here: imputed, not refused.
        status, body = srv.call("POST", "/v2/models/churn/infer", v2(["None", "nan"]))
        assert status == 200 and body["outputs"][0]["data"] == missing * 2, body


def test_refusing_unknown_categories_without_allowed_values_stops_the_server(trained: Trained,
                                                                             tmp_path: Path) -> None:
    result = subprocess.run(serve_command(), env=_env(trained, free_port(), KULTIVAR_UNKNOWN_CATEGORIES="refuse",
                                                      KULTIVAR_TERMINATION_LOG=str(tmp_path / "termination")),
                            capture_output=True, text=True, timeout=START_TIMEOUT)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    report = json.loads((tmp_path / "termination").read_text())
    assert report["reason"] == "NoAllowedValues" and report["retryable"] is False
    assert "it has no categorical features" in report["message"]
    assert "spec.serving.unknownCategories to Accept" in report["message"]


def test_regression_model(tmp_path: Path) -> None:
    """A regressor answers FP64 and reports its predictions as a histogram on the target's training bins."""
    from sklearn.datasets import load_diabetes

    trained = train(ArtifactStore(str(tmp_path / "store")), "diabetes", "sklearn://diabetes", "progression",
                    task="regression", estimator="sklearn.linear_model.Ridge")
    rows = load_diabetes().data[:8]
    with serving(trained, tmp_path, model="diabetes") as srv:
        status, body = srv.call("POST", "/v2/models/diabetes/infer", {"inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]})
        assert status == 200, body
        output = body["outputs"][0]
        assert output["datatype"] == "FP64"
        expected = trained.model.predict(pd.DataFrame(rows, columns=trained.names))
        assert np.allclose(output["data"], expected, rtol=1e-4)
        status, body = srv.call("POST", "/v2/models/diabetes/infer", {"inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
            "outputs": [{"name": "predict_proba"}]})
        assert status == 400 and "is a regressor" in body["error"] and "no 'predict_proba' output" in body["error"]
        status, body = srv.call("POST", "/v1/models/diabetes:predict",
                                {"instances": rows.tolist(), "parameters": {"probabilities": True}})
        assert status == 400 and "is a regressor" in body["error"]
        actual = [float(v) + (10.0 if i % 2 else -4.0) for i, v in enumerate(output["data"])]
        status, body = srv.call("POST", "/v2/models/diabetes/feedback", {"version": 3, "items": [
            {"prediction": p, "actual": a} for p, a in zip(output["data"], actual, strict=True)]})
        assert status == 200 and body == {"counted": 8}, body
        status, body = srv.call("POST", "/v2/models/diabetes/feedback", {"version": 3, "items": [
            {"prediction": 1.0, "actual": "high"}]})
        assert status == 400 and "takes a number" in body["error"]
        metrics = srv.metrics()
    labels = (("model", "diabetes"), ("version", "3"))
    assert metrics[("kultivar_prediction_value_count", labels)] == 8
    errors = np.asarray(output["data"]) - np.asarray(actual)
    assert metrics[("kultivar_feedback_regressions_total", labels)] == 8
    assert math.isclose(metrics[("kultivar_feedback_underprediction_total", labels)], 40.0, rel_tol=1e-9)
    assert math.isclose(metrics[("kultivar_feedback_overprediction_total", labels)], 16.0, rel_tol=1e-9)
    assert math.isclose(metrics[("kultivar_feedback_squared_error_total", labels)], float((errors ** 2).sum()),
                        rel_tol=1e-9)
    assert math.isclose(metrics[("kultivar_prediction_value_sum", labels)], float(expected.sum()), rel_tol=1e-4)
    target = trained.profile.target
    assert isinstance(target, NumericProfile)
    bounds = {dict(k[1]).get("le") for k in metrics if k[0] == "kultivar_prediction_value_bucket"}
    assert bounds == {repr(float(e)) for e in target.edges[1:-1]} | {"+Inf"}


def test_backends_and_a_tampered_compiled_model(trained: Trained, tmp_path: Path) -> None:
    """KULTIVAR_BACKEND=sklearn serves the pipeline; an altered model.onnx is never run: the verified skops file
    answers, and the metadata and metrics say so."""
    rows = iris_rows(6, seed=8)

    def backend_of(srv: Server) -> tuple[str, dict[str, float]]:
        _, meta = srv.call("GET", f"/v2/models/{MODEL}")
        gauges = {dict(k[1])["backend"]: v for k, v in srv.metrics().items() if k[0] == "kultivar_model_backend"}
        return meta["parameters"]["backend"], gauges

    with serving(trained, tmp_path, KULTIVAR_BACKEND="sklearn") as srv:
        assert backend_of(srv) == ("sklearn", {"onnx": 0.0, "sklearn": 1.0})
        status, body = srv.infer(rows)
        assert status == 200 and body["outputs"][0]["data"] == local_predictions(trained, rows)

    compiled = trained.manifest["compiled"]["artifact"]
    store = ArtifactStore(str(tmp_path / "copy"))
    copy_prefix = "ns/copy/"
    uri = store.write_once(copy_prefix + "model.skops", trained.store.read_bytes(trained.uri))["uri"]
    store.write_once(copy_prefix + "model.onnx", trained.store.read_bytes(compiled["uri"]) + b"tampered")
    manifest = {**trained.manifest, "compiled": {**trained.manifest["compiled"], "artifact": {
        **compiled, "uri": store.uri_for(copy_prefix + "model.onnx")}}}
    store.write_once(copy_prefix + "manifest.json", json.dumps(manifest).encode())
    tampered = Trained(store, uri, trained.digest, manifest, trained.profile, trained.model)
    with serving(tampered, tmp_path) as srv:
        backend, gauges = backend_of(srv)
        assert backend == "sklearn" and gauges == {"onnx": 0.0, "sklearn": 1.0}
        _, meta = srv.call("GET", f"/v2/models/{MODEL}")
        assert "not the " + compiled["digest"] in meta["parameters"]["compiledNote"]
        status, body = srv.infer(rows)
        assert status == 200 and body["outputs"][0]["data"] == local_predictions(trained, rows)
        assert "serving with scikit-learn" in srv.output() and "changed after training" in srv.output()
        assert meta["parameters"]["compiledRejected"] is True
        assert srv.metrics()[("kultivar_compiled_model_rejected", (("model", MODEL), ("version", "3")))] == 1

    # The registry's digest binds the compiled file: a manifest rewritten to describe the altered file does not
    # make it acceptable, and the untouched one is run only when it has the registry's digest.
    graph = onnx.load_from_string(trained.store.read_bytes(compiled["uri"]))
    graph.doc_string = "not the graph training checked"  # a valid graph with another digest
    store.delete(copy_prefix + "model.onnx")
    forged_digest = store.write_once(copy_prefix + "model.onnx", graph.SerializeToString())["digest"]
    forged = {**manifest, "compiled": {**manifest["compiled"], "artifact": {
        **manifest["compiled"]["artifact"], "digest": forged_digest}}}
    store.delete(copy_prefix + "manifest.json")
    store.write_once(copy_prefix + "manifest.json", json.dumps(forged).encode())
    with serving(Trained(store, uri, trained.digest, forged, trained.profile, trained.model), tmp_path) as srv:
        assert backend_of(srv)[0] == "onnx"  # without the registry's digest the manifest alone decides
    with serving(Trained(store, uri, trained.digest, forged, trained.profile, trained.model), tmp_path,
                 KULTIVAR_COMPILED_DIGEST=compiled["digest"]) as srv:
        _, meta = srv.call("GET", f"/v2/models/{MODEL}")
        assert meta["parameters"]["backend"] == "sklearn" and meta["parameters"]["compiledRejected"] is True
        assert f"but the registry {compiled['digest']}" in meta["parameters"]["compiledNote"]
        assert srv.infer(rows)[1]["outputs"][0]["data"] == local_predictions(trained, rows)
    with serving(trained, tmp_path, KULTIVAR_COMPILED_DIGEST=compiled["digest"]) as srv:
        _, meta = srv.call("GET", f"/v2/models/{MODEL}")
        assert meta["parameters"]["backend"] == "onnx" and "compiledRejected" not in meta["parameters"]
    with serving(trained, tmp_path, KULTIVAR_COMPILED_DIGEST="sha256:" + "0" * 64) as srv:
        _, meta = srv.call("GET", f"/v2/models/{MODEL}")
        assert meta["parameters"]["backend"] == "sklearn" and meta["parameters"]["compiledRejected"] is True
    store.delete(copy_prefix + "manifest.json")
    store.write_once(copy_prefix + "manifest.json", json.dumps(manifest).encode())
    store.delete(copy_prefix + "model.onnx")
    with serving(tampered, tmp_path) as srv:
        _, meta = srv.call("GET", f"/v2/models/{MODEL}")
        assert meta["parameters"]["backend"] == "sklearn" and "does not exist" in meta["parameters"]["compiledNote"]
        assert srv.infer(rows)[1]["outputs"][0]["data"] == local_predictions(trained, rows)


def test_tritonclient_speaks_to_the_server(server: Server, trained: Trained) -> None:
    """Triton's own HTTP client, with its defaults (binary tensors both ways), and with JSON."""
    import tritonclient.http as httpclient

    from kultivar.workloads.compile import PROBABILITY_ATOL

    client = httpclient.InferenceServerClient(server.base.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL)
        assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
        rows = iris_rows(7, seed=9)
        for binary in (True, False):
            x = httpclient.InferInput("x", list(rows.shape), "FP64")
            x.set_data_from_numpy(rows, binary_data=binary)
            result = client.infer(MODEL, [x])  # no outputs listed: tritonclient asks for all of them as binary
            assert result.as_numpy("predict").tolist() == local_predictions(trained, rows)
            outputs = [httpclient.InferRequestedOutput("predict", binary_data=binary),
                       httpclient.InferRequestedOutput("predict_proba", binary_data=binary)]
            result = client.infer(MODEL, [x], outputs=outputs, model_version="3", request_id="t-1")
            assert result.get_response()["id"] == "t-1"
            assert result.as_numpy("predict").tolist() == local_predictions(trained, rows)
            proba = result.as_numpy("predict_proba")
            assert proba.shape == (7, 3)
            assert np.abs(proba - local_probabilities(trained, rows)).max() <= PROBABILITY_ATOL
        # Missing values as the client sends them: NaN in an FP tensor (the pipeline imputes it).
        gappy = rows.copy()
        gappy[0, 1] = np.nan
        x = httpclient.InferInput("x", list(gappy.shape), "FP32")
        x.set_data_from_numpy(gappy.astype(np.float32))
        expected = local_predictions(trained, gappy.astype(np.float32).astype(np.float64))
        assert client.infer(MODEL, [x]).as_numpy("predict").tolist() == expected
    finally:
        client.close()


def test_tritonclient_with_text_inputs_and_labels(tmp_path: Path) -> None:
    """BYTES in (categorical features) and out (string labels) through tritonclient's binary encoding."""
    import tritonclient.http as httpclient

    path = tmp_path / "churn.parquet"
    churn_frame().to_parquet(path, index=False)
    trained = train(ArtifactStore(str(tmp_path / "store")), "churn", str(path), "churn", features=[
        {"name": "age", "type": "numeric", "nullable": True},
        {"name": "plan", "type": "categorical", "nullable": True},
        {"name": "member", "type": "boolean"},
    ])
    ages = np.array([35.0, np.nan, 61.5])
    plans = np.array(["pro", "basic", "enterprise"], dtype=object)
    members = np.array([True, False, True])
    local = trained.model.predict(pd.DataFrame({"age": ages, "plan": plans,
                                                "member": members.astype(np.float64)})).tolist()
    with serving(trained, tmp_path, model="churn") as srv:
        client = httpclient.InferenceServerClient(srv.base.removeprefix("http://"))
        try:
            inputs = [httpclient.InferInput("age", [3], "FP64"), httpclient.InferInput("plan", [3], "BYTES"),
                      httpclient.InferInput("member", [3], "BOOL")]
            for tensor, values in zip(inputs, (ages, plans, members), strict=True):
                tensor.set_data_from_numpy(values)
            labels = client.infer("churn", inputs).as_numpy("predict")
            assert [v.decode() for v in labels.tolist()] == local
        finally:
            client.close()


CHURN_FEATURES = [{"name": "age", "type": "numeric", "nullable": True},
                  {"name": "plan", "type": "categorical", "nullable": True}, {"name": "member", "type": "boolean"}]


@pytest.mark.parametrize("estimator,data,backend", [
    ("xgboost.XGBClassifier", "churn", "onnx"),
    ("lightgbm.LGBMClassifier", "churn", "onnx"),
    ("xgboost.XGBClassifier", "iris", "onnx"),
    # The library itself serving (KULTIVAR_BACKEND=sklearn), as it does a model whose graph fails the parity check.
    ("xgboost.XGBClassifier", "iris", "sklearn"),
])
def test_boosting_models_train_and_serve(tmp_path: Path, estimator: str, data: str, backend: str) -> None:
    """XGBoost and LightGBM through their scikit-learn APIs: trained, saved with skops, served with their classes."""
    store = ArtifactStore(str(tmp_path / "store"))
    if data == "churn":
        path = tmp_path / "churn.parquet"
        churn_frame().to_parquet(path, index=False)
        trained = train(store, "churn", str(path), "churn", estimator=estimator, features=CHURN_FEATURES)
        frame = pd.DataFrame({"age": [35.0, math.nan, 61.5, 20.0],
                              "plan": np.array(["pro", "basic", math.nan, "enterprise"], dtype=object),
                              "member": [1.0, 0.0, 1.0, 0.0]})
        inputs = [{"name": "age", "shape": [4], "datatype": "FP64", "data": [35.0, None, 61.5, 20.0]},
                  {"name": "plan", "shape": [4], "datatype": "BYTES", "data": ["pro", "basic", None, "enterprise"]},
                  {"name": "member", "shape": [4], "datatype": "BOOL", "data": [True, False, True, False]}]
    else:
        trained = train(store, "iris", "sklearn://iris", "species", estimator=estimator)
        rows = iris_rows(12)
        frame = pd.DataFrame(rows, columns=trained.names)
        inputs = [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]
    classes = trained.manifest["classes"]
    encoded = trained.manifest["labelsEncoded"]
    assert encoded is estimator.startswith("xgboost.")
    raw = trained.model.predict(frame)
    expected = [classes[int(i)] for i in raw] if encoded else raw.tolist()
    probabilities = trained.model.predict_proba(frame)
    forced = {"KULTIVAR_BACKEND": "sklearn"} if backend == "sklearn" else {}
    with serving(trained, tmp_path, model=data, KULTIVAR_ESTIMATOR_PACKAGES="sklearn,xgboost,lightgbm",
                 **forced) as srv:
        status, meta = srv.call("GET", f"/v2/models/{data}")
        assert status == 200 and meta["parameters"]["backend"] == backend
        assert meta["parameters"]["classes"] == classes
        status, body = srv.call("POST", f"/v2/models/{data}/infer", {
            "inputs": inputs, "outputs": [{"name": "predict"}, {"name": "predict_proba"}]})
        assert status == 200, body
        labels, proba = body["outputs"]
        # The original classes (text as BYTES), not the indexes XGBoost was fitted on.
        assert labels["data"] == expected
        assert labels["datatype"] == ("BYTES" if data == "churn" else "INT64")
        assert np.abs(np.asarray(proba["data"]).reshape(probabilities.shape) - probabilities).max() <= 1e-4
        counts = {dict(k[1])["class"]: v for k, v in srv.metrics().items() if k[0] == "kultivar_predictions_total"}
    assert set(counts) == {str(c) for c in classes} and sum(counts.values()) == len(expected)
    # A server whose permitted packages leave the library out refuses the file before deserialising it.
    package = estimator.split(".")[0]
    result = subprocess.run(serve_command(), env=_env(trained, free_port(), KULTIVAR_MODEL_NAME=data,
                                                      KULTIVAR_ESTIMATOR_PACKAGES="sklearn"),
                            capture_output=True, text=True, timeout=START_TIMEOUT)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "refusing to serve: UntrustedModel" in out and f"{package}." in out


def test_two_workers_share_the_port_and_count_every_request(trained: Trained, tmp_path: Path) -> None:
    """KULTIVAR_SERVE_WORKERS=2: two processes on one port; one scrape answers for the pod, summing both."""
    requests = 40
    with serving(trained, tmp_path, KULTIVAR_SERVE_WORKERS="2") as srv:
        out = srv.output()
        assert "serving with 2 worker processes" in out
        assert "[worker 0]" in out and "[worker 1]" in out and out.count("test inference passed") == 2
        rows = iris_rows(requests, seed=3)
        expected = local_predictions(trained, rows)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda r: srv.infer(r), rows))
        assert all(status == 200 for status, _ in answers), answers[:3]
        assert [body["outputs"][0]["data"][0] for _, body in answers] == expected
        status, text = srv.call("GET", "/metrics")
        assert status == 200
        per_worker: dict[str, float] = {}
        predicted = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "kultivar_inference_requests_total" and s.labels["outcome"] == "success":
                    per_worker[s.labels["worker"]] = per_worker.get(s.labels["worker"], 0.0) + s.value
                elif s.name == "kultivar_predictions_total":
                    predicted += s.value
        # Every request counted once, whichever worker answered it; the kernel spread them over both.
        assert sum(per_worker.values()) == requests and predicted == requests
        assert set(per_worker) == {"0", "1"} and min(per_worker.values()) > 0, per_worker
        from kultivar.domain.metrics import parse

        assert parse(text).requests["success"] == requests  # what the operator reads from the pod
        supervisor = srv.process
    # SIGTERM to the supervisor drained and ended both workers; it then ended as SIGTERM ends a process.
    assert supervisor.returncode == -signal.SIGTERM, srv.output()
    assert "Traceback" not in srv.output()


def test_two_workers_refusing_the_model_end_the_pod_with_their_status(trained: Trained) -> None:
    """A worker that can never serve (digest mismatch, exit 2) stops the others; the container exits 2."""
    wrong = "sha256:" + "0" * 64
    result = subprocess.run(serve_command(), env=_env(trained, free_port(), KULTIVAR_MODEL_DIGEST=wrong,
                                                      KULTIVAR_SERVE_WORKERS="2"),
                            capture_output=True, text=True, timeout=START_TIMEOUT)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "refusing to serve: ModelDigestMismatch" in out and "stopping the others" in out
    assert "Traceback" not in out
