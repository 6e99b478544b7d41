"""Compiling fitted pipelines to ONNX: parity with scikit-learn on held-out rows, or a recorded reason why not."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kultivar.api.contracts import ArtifactRef, CompiledModel, ManifestFeature, ModelManifest
from kultivar.api.dataset import Feature
from kultivar.workloads import compile as onnx_compile
from kultivar.workloads.compile import compile_model, compiled_artifact, input_names, onnx_feed, session
from kultivar.workloads.storage import ArtifactStore, digest_of
from kultivar.workloads.training import build_pipeline

MIXED = [Feature(name="age", type="numeric"), Feature(name="plan", type="categorical"),
         Feature(name="member", type="boolean")]


def mixed(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, rows)
    age[rng.random(rows) < 0.1] = np.nan
    plan = rng.choice(np.array(["basic", "plus", "pro"], dtype=object), rows)
    plan[rng.random(rows) < 0.05] = np.nan
    member = (rng.random(rows) < 0.5).astype(np.float64)
    member[rng.random(rows) < 0.05] = np.nan
    signal = np.nan_to_num(age, nan=40) / 10 + (plan == "pro") * 2 + np.nan_to_num(member) * 1.5
    y = np.where(signal + rng.normal(0, 0.5, rows) > 5.5, "yes", "no").astype(object)
    return pd.DataFrame({"age": age, "plan": plan, "member": member}), y


def fitted(estimator: Any, features: list[Feature], x: pd.DataFrame, y: np.ndarray) -> Any:
    return build_pipeline(features, estimator).fit(x, y)


def manifest(entry: CompiledModel) -> ModelManifest:
    return ModelManifest(artifact=ArtifactRef(uri="m", digest="sha256:x", sizeBytes=1), task="classification",
                         features=[ManifestFeature(name="x", type="numeric")], compiled=entry)


@pytest.fixture
def store() -> ArtifactStore:
    return ArtifactStore(f"memory://compile-{uuid.uuid4().hex[:8]}")


def run_graph(store: ArtifactStore, entry: CompiledModel, x: pd.DataFrame, features: list[Feature]) -> list[Any]:
    assert entry.artifact is not None
    data = store.read_bytes(entry.artifact.uri)
    assert digest_of(data) == entry.artifact.digest
    feed = onnx_feed([x[f.name].to_numpy() for f in features], features)
    assert feed is not None
    sess = session(data)
    return list(sess.run(None, dict(zip(input_names(sess), feed, strict=True))))


@pytest.mark.parametrize("estimator", ["logistic", "forest"])
def test_mixed_classifier_compiles_with_identical_labels(store: ArtifactStore, estimator: str) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = mixed(300, 1)
    est = LogisticRegression() if estimator == "logistic" else RandomForestClassifier(n_estimators=10, random_state=0)
    pipeline = fitted(est, MIXED, x, y)
    x_test, _ = mixed(200, 2)
    entry = compile_model(pipeline, MIXED, "classification", x_test, store, "run/")
    assert entry.compiled is True, entry
    assert entry.parity["labelsDiffering"] == 0 and entry.probabilities is True
    assert entry.parity["maxProbabilityError"] <= onnx_compile.PROBABILITY_ATOL
    assert [i.feature for i in entry.inputs] == ["age", "plan", "member"]
    assert compiled_artifact(manifest(entry)) == entry.artifact
    # Unseen rows too, with an unknown category: same labels, probabilities within the stated tolerance.
    fresh, _ = mixed(100, 3)
    fresh.loc[0, "plan"] = "enterprise"
    labels, proba = run_graph(store, entry, fresh, MIXED)
    assert labels.tolist() == pipeline.predict(fresh).tolist()
    assert np.abs(proba - pipeline.predict_proba(fresh)).max() <= onnx_compile.PROBABILITY_ATOL


def test_integer_classes_keep_their_type(store: ArtifactStore) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris(as_frame=True)
    features = [Feature(name=c, type="numeric") for c in data.data.columns]
    pipeline = fitted(LogisticRegression(max_iter=500), features, data.data, data.target.to_numpy())
    entry = compile_model(pipeline, features, "classification", data.data.iloc[::3], store, "iris/")
    assert entry.compiled is True, entry
    labels, _ = run_graph(store, entry, data.data, features)
    assert labels.dtype == np.int64 and labels.tolist() == pipeline.predict(data.data).tolist()


def test_regressor_within_relative_tolerance(store: ArtifactStore) -> None:
    from sklearn.linear_model import Ridge

    x, _ = mixed(300, 4)
    y = np.nan_to_num(x["age"].to_numpy(), nan=40) * 3 + (x["plan"] == "pro") * 10
    pipeline = fitted(Ridge(), MIXED, x, y)
    entry = compile_model(pipeline, MIXED, "regression", x.iloc[:100], store, "reg/")
    assert entry.compiled is True, entry
    assert entry.parity["maxRelativeError"] <= onnx_compile.REGRESSION_RTOL
    (values,) = run_graph(store, entry, x, MIXED)
    expected = pipeline.predict(x)
    assert np.abs(values.ravel() - expected).max() <= onnx_compile.REGRESSION_RTOL * np.abs(expected).max()


def test_parity_failure_is_recorded_not_stored(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = mixed(300, 5)
    pipeline = fitted(LogisticRegression(), MIXED, x, y)
    monkeypatch.setattr(onnx_compile, "PROBABILITY_ATOL", 0.0)  # float32 arithmetic can never meet this
    entry = compile_model(pipeline, MIXED, "classification", x, store, "strict/")
    assert entry.compiled is False and entry.reason is not None
    assert "probabilities differ from scikit-learn's" in entry.reason and "tolerance 0" in entry.reason
    assert not store.exists(store.uri_for("strict/model.onnx"))
    assert compiled_artifact(manifest(entry)) is None


def test_unconvertible_estimator_is_recorded(store: ArtifactStore) -> None:
    from sklearn.semi_supervised import LabelSpreading

    x, y = mixed(200, 6)
    pipeline = fitted(LabelSpreading(), MIXED, x, y)
    entry = compile_model(pipeline, MIXED, "classification", x, store, "semi/")
    assert entry.compiled is False and "skl2onnx cannot convert LabelSpreading" in str(entry.reason)


def test_empty_text_is_left_to_scikit_learn() -> None:
    column = np.array(["a", np.nan], dtype=object)
    feed = onnx_feed([column], [Feature(name="c", type="categorical")])
    assert feed is not None and feed[0].ravel().tolist() == ["a", onnx_compile.MISSING_TEXT]
    assert onnx_feed([np.array(["a", ""], dtype=object)], [Feature(name="c", type="categorical")]) is None


@pytest.mark.parametrize("estimator", ["xgboost-classifier", "lightgbm-classifier", "xgboost-regressor",
                                       "lightgbm-regressor"])
def test_boosting_estimators_compile_through_onnxmltools(store: ArtifactStore, estimator: str) -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from xgboost import XGBClassifier, XGBRegressor

    from kultivar.workloads.training import encode_labels

    x, y = mixed(400, 1)
    x_test, _ = mixed(300, 2)
    regression = estimator.endswith("regressor")
    target: np.ndarray = np.nan_to_num(x["age"].to_numpy(), nan=40) * 2.0 if regression else y
    if estimator == "xgboost-classifier":
        target = encode_labels(y, ["no", "yes"])  # XGBoost's classifiers take class indexes only (as training gives)
    est = {"xgboost-classifier": XGBClassifier(n_estimators=20), "xgboost-regressor": XGBRegressor(n_estimators=20),
           "lightgbm-classifier": LGBMClassifier(n_estimators=20, verbose=-1),
           "lightgbm-regressor": LGBMRegressor(n_estimators=20, verbose=-1)}[estimator]
    pipeline = fitted(est, MIXED, x, target)
    entry = compile_model(pipeline, MIXED, "regression" if regression else "classification", x_test, store, "run/")
    assert entry.compiled is True, entry
    assert entry.versions["onnxmltools"]  # the converter that wrote the graph, for the lineage
    outputs = run_graph(store, entry, x_test, MIXED)
    if regression:
        assert entry.parity["maxRelativeError"] <= onnx_compile.REGRESSION_RTOL
        assert np.allclose(outputs[0].ravel(), pipeline.predict(x_test), rtol=1e-4, atol=1e-3)
    else:
        assert entry.parity["labelsDiffering"] == 0
        assert outputs[0].tolist() == pipeline.predict(x_test).tolist()
        assert np.abs(outputs[1] - pipeline.predict_proba(x_test)).max() <= onnx_compile.PROBABILITY_ATOL


def test_multiclass_xgboost_compiles_when_no_split_sits_on_a_data_value(store: ArtifactStore) -> None:
    """Multi-class XGBoost (multi:softprob, one tree per class and round, a per-class base_score in XGBoost 3)
    converts exactly: on continuous features the graph passes parity. What fails on data such as iris is not the
    classes but float32 preprocessing: its histogram thresholds sit on repeated data values, which the graph's
    float32 scaler can move by one ulp across a split (see the README's XGBoost and LightGBM section)."""
    from xgboost import XGBClassifier

    from kultivar.workloads.training import encode_labels

    x, _ = mixed(600, 1)
    x_test, _ = mixed(300, 2)
    age = np.nan_to_num(x["age"].to_numpy(), nan=40)
    y = np.where(age < 35, "a", np.where(age < 45, "b", "c")).astype(object)
    pipeline = fitted(XGBClassifier(n_estimators=20, max_depth=3), MIXED, x, encode_labels(y, ["a", "b", "c"]))
    entry = compile_model(pipeline, MIXED, "classification", x_test, store, "run/")
    assert entry.compiled is True, entry.reason
    outputs = run_graph(store, entry, x_test, MIXED)
    assert outputs[1].shape == (300, 3)
    assert np.abs(outputs[1] - pipeline.predict_proba(x_test)).max() <= onnx_compile.PROBABILITY_ATOL


# ------------------------------------------------------------------------------ split thresholds and float32

NUMERIC = [Feature(name=name, type="numeric") for name in ("a", "b", "c")]


def on_thresholds(rows: int, seed: int, integer_valued: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Regression data; with ``integer_valued`` two features take few distinct values, as counts and ratings do."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    if integer_valued:
        x[:, 0], x[:, 1] = np.round(x[:, 0] * 3), np.round(x[:, 1] * 2)
    return pd.DataFrame(x, columns=["a", "b", "c"]), x[:, 0] * 10 + x[:, 1]


def graph_answers(model_bytes: bytes, x: pd.DataFrame) -> np.ndarray:
    feed = onnx_feed([x[f.name].to_numpy() for f in NUMERIC], NUMERIC)
    assert feed is not None
    sess = session(model_bytes)
    return np.asarray(sess.run(None, dict(zip(input_names(sess), feed, strict=True)))[0]).ravel()


@pytest.mark.parametrize("integer_valued", [False, True])
def test_tree_models_are_not_scaled_so_the_graph_agrees_on_training_values(integer_valued: bool) -> None:
    """XGBoost's split thresholds are data values; a graph that standardised in float32 (where scikit-learn does
    in float64) sent training rows lying on them down the other branch. Trees are not scaled, and the graph then
    gets the float32 values XGBoost does: it agrees on every training row."""
    from xgboost import XGBRegressor

    from kultivar.workloads.pipeline import splits_on_thresholds

    x, y = on_thresholds(400, 0, integer_valued)
    pipeline = build_pipeline(NUMERIC, XGBRegressor(n_estimators=30))
    assert splits_on_thresholds(pipeline[-1])
    assert [name for name, _ in pipeline[0].transformers[0][1].steps] == ["impute"]
    pipeline.fit(x, y)
    expected = pipeline.predict(x)
    # Equal up to float32 summation order (a row sent down another branch would be off by a leaf's value).
    np.testing.assert_allclose(graph_answers(onnx_compile.convert(pipeline, NUMERIC), x), expected, rtol=0,
                               atol=1e-6 * np.abs(expected).max())


def test_parity_is_checked_on_training_rows_too() -> None:
    """The scaled XGBoost pipeline of before: its graph agrees on the held-out rows of continuous data and not on
    some training rows. The check compares both and refuses it, naming the training rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBRegressor

    x, y = on_thresholds(500, 0, integer_valued=False)
    train, test = x.iloc[:400], x.iloc[400:]
    scaled = Pipeline([("preprocess", ColumnTransformer([("numeric", Pipeline([
        ("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), ["a", "b", "c"])])),
        ("model", XGBRegressor(n_estimators=30))]).fit(train, y[:400])
    graph = onnx_compile.convert(scaled, NUMERIC)
    held_out = onnx_compile.check_parity(graph, scaled, test, NUMERIC, "regression")
    assert held_out["rows"] == 100 and held_out["maxRelativeError"] < onnx_compile.REGRESSION_RTOL
    with pytest.raises(onnx_compile.CompileFailure, match="training rows"):
        onnx_compile.check_parity(graph, scaled, test, NUMERIC, "regression", x_train=train)


def test_parity_reports_the_training_rows_it_compared(store: ArtifactStore) -> None:
    x, y = mixed(300, 3)
    pipeline = fitted(__import__("sklearn.linear_model", fromlist=["x"]).LogisticRegression(), MIXED,
                      x.iloc[:200], y[:200])
    entry = compile_model(pipeline, MIXED, "classification", x.iloc[200:], store, "run/", x_train=x.iloc[:200])
    assert entry.compiled, entry.reason
    assert entry.parity["rows"] == 100 and entry.parity["trainingRows"] == 200
    assert entry.parity["labelsDiffering"] == 0
