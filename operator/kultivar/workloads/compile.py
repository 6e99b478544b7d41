"""Compile a fitted training pipeline to ONNX and prove, on the held-out rows, that it answers like the original.

XGBoost and LightGBM estimators are converted by onnxmltools' converters, registered with skl2onnx for their
scikit-learn classes (:func:`register_boosting_converters`), and held to the same parity check.

scikit-learn spends milliseconds of per-call overhead on a one-row ``predict`` of a Kultivar pipeline; the same
pipeline as an ONNX graph runs in microseconds with onnxruntime. Training therefore writes ``model.onnx`` beside
``model.skops`` - but only once the graph has been shown to give the same answers, on the held-out rows and on a
sample of the training rows (see :func:`check_parity`):

* classifiers: the **same label for every row**, and (when the estimator has ``predict_proba``) every
  class probability within ``PROBABILITY_ATOL`` of scikit-learn's;
* regressors: every prediction within ``REGRESSION_RTOL`` of scikit-learn's, relative to the largest absolute
  prediction on those rows (so values near zero are not held to a tighter bound than the model's scale).

The tolerances allow for float32 arithmetic: the graph computes in float32 (onnxruntime's ``Imputer`` and the
ONNX-ML operators have no float64 kernels), scikit-learn in float64. When conversion or parity fails the manifest
records ``compiled: false`` with the reason and the model is served by scikit-learn, as before - never silently
by a graph that answers differently.

The graph (see :func:`onnx_inputs`) takes one input per feature, named after it, of shape ``[rows, 1]``: numeric
and boolean features as float32 (booleans 1.0/0.0, NaN missing), categorical features as strings with
``MISSING_TEXT`` (the empty string) for a missing value. Outputs: classifiers ``label`` (the classes in their
own type) and ``probabilities`` (``[rows, classes]``, the manifest's class order); regressors ``variable``.

The pipeline's categorical step imputes and one-hot encodes boolean (float) and text columns together, which
skl2onnx cannot express (its imputer takes one type, and text only with a text missing marker). The graph is
therefore converted from an equivalent *twin*: the numeric step as fitted, then per non-numeric feature an
imputer filling the value the fitted imputer learned and a one-hot encoder with the fitted encoder's categories,
in the original column order - the same features, then the same fitted estimator. The parity check compares the
graph with the original pipeline, so a twin that differed would be caught there.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kultivar.api.contracts import ArtifactRef, CompiledInput, CompiledModel, ModelManifest

log = logging.getLogger("kultivar.workloads")

ONNX_NAME = "model.onnx"
MISSING_TEXT = ""
PROBABILITY_ATOL = 1e-4
REGRESSION_RTOL = 1e-4
PARITY_ROWS = 200_000  # held-out rows compared at most (the first ones): enough to prove it, bounded time
TRAINING_PARITY_ROWS = 10_000  # training rows compared at most (spread evenly over the split)
LABEL, PROBABILITIES, VALUE = "label", "probabilities", "variable"
ONNX_ML_OPSET_BOOSTING = 3  # the ai.onnx.ml version onnxmltools' XGBoost and LightGBM converters write


class FeatureLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


class CompileFailure(Exception):
    """The pipeline could not be compiled, or its graph does not answer like it; the message says why."""


# ------------------------------------------------------------------------------------------------- inputs


def onnx_inputs(features: Sequence[FeatureLike]) -> list[tuple[str, Any]]:
    """The graph's inputs: one ``[rows, 1]`` tensor per feature, float32 or (categorical) string."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [(f.name, StringTensorType([None, 1]) if f.type == "categorical" else FloatTensorType([None, 1]))
            for f in features]


def onnx_feed(columns: Sequence[np.ndarray], features: Sequence[FeatureLike]) -> list[np.ndarray] | None:
    """The graph's inputs, in feature order, for one column per feature (as the server and training hold them).

    Categorical columns hold text or NaN; NaN becomes ``MISSING_TEXT``. None when a categorical value *is* the
    empty string: the graph would read it as missing where scikit-learn sees an (unknown) category, so such rows
    must go to scikit-learn. (skl2onnx sanitises input names, e.g. spaces to ``_``: pair these arrays with the
    session's inputs by position, see :func:`input_names`.)
    """
    feed: list[np.ndarray] = []
    for f, column in zip(features, columns, strict=True):
        if f.type == "categorical":
            text = np.empty(len(column), dtype=object)
            for i, v in enumerate(column.tolist()):
                if type(v) is str:
                    if v == MISSING_TEXT:
                        return None
                    text[i] = v
                else:
                    text[i] = MISSING_TEXT
            feed.append(text.reshape(-1, 1))
        else:
            feed.append(np.asarray(column, dtype=np.float32).reshape(-1, 1))
    return feed


def input_names(sess: Any) -> list[str]:
    """The graph's input names in feature order."""
    return [i.name for i in sess.get_inputs()]


def session(model_bytes: bytes, threads: int = 1) -> Any:
    """An onnxruntime session for one core's worth of small batches (``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if threads > 1:
        # Idle pool threads would otherwise spin, taking CPU from the event loop between micro-batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are noise in a pod log
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------ convert


def _twin(pipeline: Any, features: Sequence[FeatureLike]) -> Any:
    """A pipeline computing the same as ``pipeline`` from parts skl2onnx converts (see the module docstring)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    kinds = {f.name: f.type for f in features}
    preprocess = pipeline[:-1]
    if len(preprocess) != 1 or not isinstance(preprocess[0], ColumnTransformer):
        raise CompileFailure("the pipeline's preprocessing is not the single ColumnTransformer training builds")
    ct = preprocess[0]
    parts: list[tuple[str, Any, list[str]]] = []
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            raise CompileFailure(f"the preprocessing step {name!r} is {transformer!r}, which is not compiled")
        if name == "numeric":
            parts.append((name, transformer, list(columns)))
            continue
        if not (isinstance(transformer, Pipeline) and len(transformer.steps) == 2
                and isinstance(transformer[0], SimpleImputer) and isinstance(transformer[1], OneHotEncoder)):
            raise CompileFailure(f"the preprocessing step {name!r} is not the imputer + one-hot encoder training "
                                 "builds")
        imputer, encoder = transformer[0], transformer[1]
        if encoder.drop is not None or getattr(encoder, "min_frequency", None) or getattr(encoder, "max_categories",
                                                                                          None):
            raise CompileFailure(f"the one-hot encoder of {name!r} drops or groups categories, which is not compiled")
        for j, column in enumerate(columns):
            fill, categories = imputer.statistics_[j], encoder.categories_[j]
            if kinds.get(column) == "categorical":
                fill_text = str(fill)
                cats = np.asarray([str(c) for c in categories], dtype=object)
                sub_imputer = SimpleImputer(missing_values=MISSING_TEXT, strategy="constant", fill_value=fill_text)
                sub_imputer.fit(np.array([[fill_text]], dtype=object))
                sub_encoder = OneHotEncoder(categories=[cats], handle_unknown="ignore")
                sub_encoder.fit(np.array([[cats[0]]], dtype=object))
            else:
                cats = np.asarray([float(c) for c in categories], dtype=np.float32)
                sub_imputer = SimpleImputer(strategy="constant", fill_value=float(fill))
                sub_imputer.fit(np.array([[float(fill)]], dtype=np.float32))
                sub_encoder = OneHotEncoder(categories=[cats], handle_unknown="ignore")
                sub_encoder.fit(np.array([[cats[0]]], dtype=np.float32))
            parts.append((f"{name}_{j}", Pipeline([("impute", sub_imputer), ("onehot", sub_encoder)]), [column]))
    twin = ColumnTransformer([(n, "passthrough", c) for n, _, c in parts], sparse_threshold=0.0)
    # Fitted by construction: the parts are the fitted (or equivalently fitted) transformers.
    twin.transformers_ = parts
    twin.sparse_output_ = False
    twin.n_features_in_ = ct.n_features_in_
    if hasattr(ct, "feature_names_in_"):
        twin.feature_names_in_ = ct.feature_names_in_
    return Pipeline([("preprocess", twin), (pipeline.steps[-1][0], pipeline[-1])])


def register_boosting_converters(final: Any) -> dict[str, int] | None:
    """Teach skl2onnx the XGBoost or LightGBM estimator ending the pipeline, with onnxmltools' converters (the
    pattern skl2onnx documents for them); the pipeline's preprocessing is converted by skl2onnx as usual.

    Returns the opsets to convert with (None: skl2onnx's defaults): onnxmltools writes tree ensembles with
    ``ai.onnx.ml`` version 3, which skl2onnx must be told. Raises :class:`CompileFailure` when the estimator is
    from those packages but onnxmltools is not installed."""
    package = type(final).__module__.split(".", 1)[0]
    if package not in ("xgboost", "lightgbm"):
        return None
    from skl2onnx import get_latest_tested_opset_version, update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import is_classifier

    try:
        if package == "xgboost":
            from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost as converter
        else:
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm as converter
    except ImportError as e:
        raise CompileFailure(f"onnxmltools, which converts {package} models, is not installed ({e})") from None
    cls = type(final)
    if is_classifier(final):
        update_registered_converter(cls, f"Kultivar{package}{cls.__name__}", calculate_linear_classifier_output_shapes,
                                    converter, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    else:
        update_registered_converter(cls, f"Kultivar{package}{cls.__name__}", calculate_linear_regressor_output_shapes,
                                    converter)
    return {"": get_latest_tested_opset_version(), "ai.onnx.ml": ONNX_ML_OPSET_BOOSTING}


def convert(pipeline: Any, features: Sequence[FeatureLike]) -> bytes:
    """The ONNX graph of a fitted pipeline from :func:`kultivar.workloads.training.build_pipeline`."""
    from skl2onnx import convert_sklearn
    from sklearn.base import is_classifier

    twin = _twin(pipeline, features)
    final = pipeline[-1]
    opsets = register_boosting_converters(final)
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    try:
        graph = convert_sklearn(twin, initial_types=onnx_inputs(features), options=options, target_opset=opsets)
    except Exception as e:  # skl2onnx raises many types (RuntimeError, NotImplementedError, MissingShapeCalculator)
        raise CompileFailure(f"skl2onnx cannot convert {type(final).__name__}: {type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from None
    return bytes(graph.SerializeToString())


# ------------------------------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class Answers:
    """What scikit-learn answers on the held-out rows: labels or values, and class probabilities (None without
    ``predict_proba`` or for regression), row for row."""

    pred: Any
    proba: Any = None

    @classmethod
    def of(cls, pipeline: Any, rows: Any, task: str, features: Sequence[FeatureLike] = ()) -> Answers:
        """The pipeline's answers on ``rows``, preprocessed once for predict and predict_proba (as training scores
        the held-out rows)."""
        from kultivar.workloads.evaluate import predict_held_out

        answered = predict_held_out(pipeline, rows, task, [f.name for f in features if f.type != "numeric"])
        return cls(np.asarray(answered.pred), answered.proba)


def _frame_columns(x: Any, features: Sequence[FeatureLike]) -> list[np.ndarray]:
    return [x[f.name].to_numpy() for f in features]


def check_parity(model_bytes: bytes, pipeline: Any, x_test: Any, features: Sequence[FeatureLike], task: str,
                 answers: Answers | None = None, x_train: Any = None) -> dict[str, Any]:
    """Raise :class:`CompileFailure` unless the graph answers like ``pipeline`` on ``x_test`` and on a sample of
    ``x_train``; returns the measured differences (the worst of the two).

    ``answers`` are the pipeline's own predictions on ``x_test`` when the caller already has them (training
    computed them for the held-out metrics): recomputing them would double the cost of the check on big data.

    Why training rows too: values that lie exactly on a split threshold are where float32 arithmetic can send a
    row the other way, and training values are where thresholds are (XGBoost's are data values). Held-out rows of
    continuous data rarely hit one, so a graph could pass on them and still answer differently for a request that
    repeats a training row.
    """
    sess = session(model_bytes)
    rows = x_test.iloc[:PARITY_ROWS]
    checked = _parity_on(sess, pipeline, rows, features, task,
                         answers if answers is not None else Answers.of(pipeline, rows, task, features),
                         "held-out rows")
    if x_train is not None and len(x_train):
        picked = np.unique(np.linspace(0, len(x_train) - 1, min(len(x_train), TRAINING_PARITY_ROWS)).astype(np.intp))
        sample = x_train.iloc[picked]
        seen = _parity_on(sess, pipeline, sample, features, task, Answers.of(pipeline, sample, task, features),
                          "training rows")
        checked["trainingRows"] = seen.pop("rows")
        for key, value in seen.items():
            checked[key] = max(checked.get(key, value), value)
    return checked


def _parity_on(sess: Any, pipeline: Any, rows: Any, features: Sequence[FeatureLike], task: str,
               expected: Answers, where: str) -> dict[str, Any]:
    """The graph's answers on ``rows`` against ``expected`` (the pipeline's); raises CompileFailure naming
    ``where`` the rows come from when they differ beyond the tolerances."""
    feed = onnx_feed(_frame_columns(rows, features), features)
    if feed is None:
        raise CompileFailure(f"the {where} have categorical values that are empty text, which the compiled "
                             "model reads as missing")
    outputs = sess.run(None, dict(zip(input_names(sess), feed, strict=True)))
    checked: dict[str, Any] = {"rows": len(rows)}
    if task == "regression":
        values = np.asarray(expected.pred[:PARITY_ROWS], dtype=np.float64).ravel()
        got = np.asarray(outputs[0], dtype=np.float64).ravel()
        scale = max(float(np.abs(values).max(initial=0.0)), 1e-12)
        worst = float(np.abs(got - values).max(initial=0.0)) / scale
        checked["maxRelativeError"] = worst
        if not math.isfinite(worst) or worst > REGRESSION_RTOL:
            raise CompileFailure(f"the compiled model's predictions differ from scikit-learn's by up to {worst:.3g} "
                                 f"of the largest prediction on the {where} (tolerance {REGRESSION_RTOL:g})")
        return checked
    expected_labels = np.asarray(expected.pred[:PARITY_ROWS])
    labels = np.asarray(outputs[0]).ravel()
    def kind(a: np.ndarray) -> str:
        return "text" if a.dtype.kind in "OUS" else a.dtype.kind

    if labels.shape != expected_labels.shape or kind(labels) != kind(expected_labels):
        raise CompileFailure(f"the compiled model's labels are {labels.dtype} {labels.shape}, scikit-learn's "
                             f"{expected_labels.dtype} {expected_labels.shape}")
    differ = int(np.count_nonzero(labels != expected_labels))
    checked["labelsDiffering"] = differ
    if differ:
        raise CompileFailure(f"the compiled model predicts a different label than scikit-learn for {differ} of "
                             f"{len(rows)} {where}")
    if hasattr(pipeline, "predict_proba"):
        given = expected.proba if expected.proba is not None else pipeline.predict_proba(rows)
        expected_proba = np.asarray(given[:PARITY_ROWS], dtype=np.float64)
        proba = np.asarray(outputs[1], dtype=np.float64)
        if proba.shape != expected_proba.shape:
            raise CompileFailure(f"the compiled model's probabilities have shape {proba.shape}, scikit-learn's "
                                 f"{expected_proba.shape}")
        worst = float(np.abs(proba - expected_proba).max(initial=0.0))
        checked["maxProbabilityError"] = worst
        if not math.isfinite(worst) or worst > PROBABILITY_ATOL:
            raise CompileFailure(f"the compiled model's probabilities differ from scikit-learn's by up to "
                                 f"{worst:.3g} on the {where} (tolerance {PROBABILITY_ATOL:g})")
    return checked


# ------------------------------------------------------------------------------------------------ workload


def compile_model(pipeline: Any, features: Sequence[FeatureLike], task: str, x_test: Any, store: Any,
                  prefix: str, answers: Answers | None = None, x_train: Any = None) -> CompiledModel:
    """Convert, check and store ``model.onnx`` under ``prefix``; the manifest's ``compiled`` entry. ``answers``:
    the pipeline's predictions on ``x_test``, if already computed; ``x_train``: the training rows, a sample of
    which is checked too (see :func:`check_parity`).

    Never raises for a model that cannot be compiled (the entry then says why, and scikit-learn serves it).
    Storage errors are raised (the training attempt is retried).
    """
    tolerances = {"probabilityAbsolute": PROBABILITY_ATOL, "regressionRelative": REGRESSION_RTOL}
    try:
        model_bytes = convert(pipeline, features)
        parity = check_parity(model_bytes, pipeline, x_test, features, task, answers, x_train)
        names = input_names(session(model_bytes))
    except ImportError as e:
        reason = f"the ONNX tools are not installed ({e.name or e}); serving uses scikit-learn"
        log.info("not compiled: %s", reason)
        return CompiledModel(compiled=False, reason=reason)
    except CompileFailure as e:
        log.info("not compiled: %s", e)
        return CompiledModel(compiled=False, reason=str(e), tolerances=tolerances)
    rel = prefix + ONNX_NAME
    if store.exists(store.uri_for(rel)):
        store.delete(rel)  # left by an attempt that did not finish (no manifest refers to it)
    with tempfile.TemporaryDirectory(prefix="kultivar-onnx-") as tmp:
        local = os.path.join(tmp, ONNX_NAME)
        with open(local, "wb") as f:
            f.write(model_bytes)
        artifact = store.write_file_once(rel, local)
    import onnx
    import onnxruntime
    import skl2onnx

    log.info("compiled to ONNX (%s, %d bytes); parity on %d held-out and %d training rows: %s", artifact["digest"],
             artifact["sizeBytes"], parity["rows"], parity.get("trainingRows", 0),
             {k: v for k, v in parity.items() if k not in ("rows", "trainingRows")})
    return CompiledModel(
        compiled=True, format="onnx", artifact=ArtifactRef.model_validate(artifact), tolerances=tolerances,
        parity=parity, inputs=[CompiledInput(feature=f.name, name=n) for f, n in zip(features, names, strict=True)],
        probabilities=task == "classification" and hasattr(pipeline, "predict_proba"),
        versions={"skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                  **_converter_versions(pipeline[-1])})


def _converter_versions(final: Any) -> dict[str, str]:
    """onnxmltools' version when it converted the estimator (XGBoost, LightGBM), for the manifest's lineage."""
    if type(final).__module__.split(".", 1)[0] not in ("xgboost", "lightgbm"):
        return {}
    import onnxmltools

    return {"onnxmltools": onnxmltools.__version__}


def compiled_artifact(manifest: ModelManifest) -> ArtifactRef | None:
    """The manifest's ONNX artifact ({uri, digest}, checked at training), or None when it was not compiled."""
    entry = manifest.compiled
    if entry is None or not entry.compiled:
        return None
    return entry.artifact
