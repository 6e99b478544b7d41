"""The server's compiled-model runner: batches small enough to run through a kept onnxruntime binding answer exactly
as a plain ``session.run`` on the same rows does, whatever the row count, output set or order of calls."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from kultivar.api.dataset import Feature
from kultivar.serving.model import BOUND_ROWS, OnnxRunner
from kultivar.serving.payload import FeatureSpec, Rows
from kultivar.workloads.compile import compile_model, input_names
from kultivar.workloads.storage import ArtifactStore
from kultivar.workloads.training import build_pipeline

FEATURES = [Feature(name="a", type="numeric"), Feature(name="b", type="numeric"), Feature(name="flag", type="boolean")]


def data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(0, 1, rows), "b": rng.normal(3, 2, rows),
                          "flag": rng.choice([0.0, 1.0], rows)})
    frame.loc[::9, "b"] = np.nan
    return frame


def runner(estimator: object, y: np.ndarray, task: str) -> OnnxRunner:
    x = data(300, 1)
    pipeline = build_pipeline(FEATURES, estimator).fit(x, y)
    store = ArtifactStore(f"memory://runner-{uuid.uuid4().hex[:8]}")
    entry = compile_model(pipeline, FEATURES, task, data(100, 2), store, "run/")
    assert entry.compiled is True and entry.artifact is not None, entry
    return OnnxRunner(store.read_bytes(entry.artifact.uri), [FeatureSpec(f.name, f.type) for f in FEATURES], 1)


def plain(run: OnnxRunner, matrix: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    feed = {name: matrix[:, j].astype(np.float32).reshape(-1, 1) for j, name in enumerate(input_names(run.session))}
    return [np.asarray(o) for o in run.session.run(outputs, feed)]


@pytest.mark.parametrize("labels", ["integers", "text"])
def test_bound_runs_answer_as_plain_runs(labels: str) -> None:
    from sklearn.linear_model import LogisticRegression

    x = data(300, 1)
    y = (x["a"].to_numpy() + x["flag"].to_numpy() > 0.5).astype(np.int64)
    run = runner(LogisticRegression(), y if labels == "integers" else np.where(y == 1, "yes", "no").astype(object),
                 "classification")
    # Text labels are never bound (onnxruntime crashes copying a bound string output): the plain path answers.
    assert run.bindable is (labels == "integers")
    rng = np.random.default_rng(7)
    # Row counts on both sides of BOUND_ROWS, some repeated (a kept binding refilled with other rows).
    for count in [1, 2, 1, 7, BOUND_ROWS, 2, BOUND_ROWS + 1, 1]:
        matrix = np.column_stack([rng.normal(0, 1, count), rng.normal(3, 2, count), rng.choice([0.0, 1.0], count)])
        matrix[::4, 1] = np.nan
        for probabilities in (False, True):
            for rows in (Rows.of_matrix(matrix), Rows(tuple(matrix.T.copy()), count)):
                answer = run.run(rows, probabilities)
                assert answer is not None
                expected = plain(run, matrix, run.outputs if probabilities else run.label_output)
                assert answer.labels.tolist() == expected[0].reshape(count).tolist()
                if probabilities:
                    assert answer.probabilities is not None
                    np.testing.assert_allclose(answer.probabilities, expected[1], rtol=0, atol=1e-7)
                else:
                    assert answer.probabilities is None


def test_bound_regression_values_are_float64() -> None:
    from sklearn.linear_model import Ridge

    x = data(300, 1)
    run = runner(Ridge(), x["a"].to_numpy() * 2 + x["flag"].to_numpy(), "regression")
    matrix = data(5, 3).to_numpy()
    for count in (1, 5):
        answer = run.run(Rows.of_matrix(matrix[:count]), False)
        assert answer is not None and answer.labels.dtype == np.float64
        np.testing.assert_allclose(answer.labels, plain(run, matrix[:count], run.label_output)[0].ravel(), rtol=1e-6)
