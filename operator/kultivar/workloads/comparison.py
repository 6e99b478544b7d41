"""The same-data comparison: the candidate, the production version and a trivial baseline on the same held-out rows.

The promotion gate must compare models on the same rows: after drift the new data may be harder or easier for
every model, so the production version's score on its own, older held-out split says nothing about the
candidate's. The training pod therefore loads production (by digest, with the loader serving uses), scores it on
the candidate's held-out rows, fits a dummy baseline on the candidate's training rows, and reports all three with
a paired bootstrap interval of the difference on the gate metric (:mod:`kultivar.domain.stats.bootstrap`) and the
gate metric per segment. The result is the Model's ``status.versions[].evaluation``; the gate decides on it.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.contracts import (
    ComparedProductionResult,
    ContractError,
    DifferenceIntervalResult,
    EvaluationResult,
    ProductionRef,
    SegmentScoreResult,
)
from kultivar.api.dataset import Feature
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.domain.stats import paired_bootstrap_difference, segment_metrics
from kultivar.workloads.artifact import (
    MANIFEST_NAME,
    ModelIntegrityError,
    UntrustedModelError,
    load_model,
    read_manifest,
)
from kultivar.workloads.diagnostics import confusion_matrix, residual_histogram
from kultivar.workloads.evaluate import Predictions, label_codes, metrics_of, predict_held_out
from kultivar.workloads.failure import TrainingFailure
from kultivar.workloads.storage import ArtifactStore

log = logging.getLogger("kultivar.workloads")

DEFAULT_CONFIDENCE = 0.95
RESAMPLES = 2000
# Resamples x rows for the metrics whose bootstrap draws row indices (regression metrics, ROC AUC): a large
# held-out split gets fewer resamples so the interval stays a small share of a run (200 at 200k rows).
ROW_RESAMPLE_BUDGET = 40_000_000
MIN_RESAMPLES = 200
# Segment rows kept in the result (the largest ones): the termination message holds at most 4 KiB.
MAX_SEGMENTS = 24
MAX_VALUE_CHARS = 64
MISSING = "(missing)"
BASELINES = {"classification": "DummyClassifier(strategy=most_frequent)", "regression": "DummyRegressor(strategy=mean)"}


@dataclass(frozen=True)
class HeldOut:
    """The rows every model is scored on, and the training rows the baseline is fitted on."""

    x_test: pd.DataFrame
    y_test: np.ndarray
    y_train: np.ndarray
    classes: Sequence[Any]
    data_digest: str
    seed: int
    holdout: str | None = None  # the holdout Dataset the rows come from (None: the run's held-out split)
    few_values: Sequence[str] = ()  # inputs with few distinct values (see pipeline.transform_inputs)


@dataclass(frozen=True)
class Scored:
    metrics: dict[str, float]
    predictions: Predictions


def gate_settings(promotion: dict[str, Any] | None, headline: str) -> tuple[str, float]:
    """The gate metric (the Model's promotion.metric, else the run's headline metric) and the interval's
    confidence (promotion.significance.confidence, else 0.95)."""
    promotion = promotion or {}
    significance = promotion.get("significance") or {}
    return str(promotion.get("metric") or headline), float(significance.get("confidence") or DEFAULT_CONFIDENCE)


def baseline(task: str, held_out: HeldOut) -> Scored:
    """A dummy estimator fitted on the same training rows: the majority class, or the mean."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    n_test = len(held_out.y_test)
    # Dummy estimators ignore the features; a zero column stands in for them.
    dummy = (DummyRegressor(strategy="mean") if task == "regression"
             else DummyClassifier(strategy="most_frequent"))
    dummy.fit(np.zeros((len(held_out.y_train), 1)), held_out.y_train)
    pred = np.asarray(dummy.predict(np.zeros((n_test, 1))))
    if task == "regression":
        predictions = Predictions(pred)
    else:
        proba = _aligned(np.asarray(dummy.predict_proba(np.zeros((n_test, 1)))), dummy.classes_, held_out.classes)
        predictions = Predictions(pred, proba, tuple(held_out.classes))
    return Scored(metrics_of(held_out.y_test, predictions, task), predictions)


def score_production(ref: ProductionRef, task: str, held_out: HeldOut, store: ArtifactStore,
                     estimator_packages: Sequence[str]) -> Scored:
    """Production's predictions on the held-out rows; raises ComparisonImpossible saying why it cannot be scored."""
    try:
        model = load_model(ref.uri, ref.digest, store, estimator_packages)
    except FileNotFoundError as e:
        raise ComparisonImpossible(f"the model file of production v{ref.version} ({ref.uri}) is missing") from e
    except (ModelIntegrityError, UntrustedModelError) as e:
        raise ComparisonImpossible(f"production v{ref.version}: {e}") from e
    try:
        manifest = read_manifest(store, posixpath.join(posixpath.dirname(ref.uri), MANIFEST_NAME))
    except (FileNotFoundError, ContractError) as e:
        raise ComparisonImpossible(f"the manifest of production v{ref.version} cannot be read: {e}") from e
    try:
        # The fast path the candidate is scored with: preprocess once for predict and predict_proba.
        scored = predict_held_out(model, held_out.x_test, task, held_out.few_values)
        predictions = scored
        if task != "regression":
            pred, model_classes = scored.pred, scored.classes
            if manifest.labelsEncoded and manifest.classes:  # fitted on class indexes (XGBoost): map them back
                pred = np.asarray(manifest.classes)[np.asarray(pred).astype(np.int64)]
                model_classes = tuple(manifest.classes)
            proba = (_aligned(scored.proba, model_classes, held_out.classes) if scored.proba is not None
                     else None)
            predictions = Predictions(pred, proba, tuple(held_out.classes))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ComparisonImpossible(f"production v{ref.version} could not score the held-out rows (its inputs "
                                   f"differ from this run's?): {type(e).__name__}: {e}") from e
    try:
        return Scored(metrics_of(held_out.y_test, predictions, task), predictions)
    except TypeError as e:  # labels of two types (text and numbers) do not even sort together
        shown = ", ".join(map(repr, np.asarray(predictions.pred)[:2].tolist()))
        raise ComparisonImpossible(f"production v{ref.version} predicts labels such as {shown} where this data's "
                                   f"are such as {', '.join(map(repr, np.asarray(held_out.y_test)[:2].tolist()))}: "
                                   "the target's values changed, so the two cannot be compared on these rows") from e


class ComparisonImpossible(Exception):
    """Production cannot be scored on the held-out rows; the message says why."""


def _aligned(proba: np.ndarray, model_classes: Sequence[Any], classes: Sequence[Any]) -> np.ndarray:
    """Probability columns in the order of ``classes`` (zero for a class the model never saw)."""
    out = np.zeros((proba.shape[0], len(classes)))
    position = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(model_classes):
        if c in position:
            out[:, position[c]] = proba[:, j]
    return out


def _metric_inputs(metric: str, predictions: Predictions) -> np.ndarray | None:
    """What the bootstrap and segment table take for a model: labels or values, or scores for roc_auc."""
    if metric != "roc_auc":
        return predictions.pred
    if predictions.proba is None:
        return None
    return predictions.proba[:, 1] if len(predictions.classes) == 2 else predictions.proba


def _label_args(metric: str, classes: Sequence[Any]) -> dict[str, Any]:
    """pos_label/labels as training scores: binary F1/precision/recall/AUC of classes[1], else macro averages."""
    if len(classes) == 2:
        return {"pos_label": classes[1]}
    if metric == "roc_auc":
        return {"labels": list(classes)}
    return {}


def resamples_for(metric: str, rows: int) -> int:
    if metric in ("accuracy", "f1", "precision", "recall"):
        return RESAMPLES  # drawn as multinomial counts: the cost does not grow with the rows
    return max(MIN_RESAMPLES, min(RESAMPLES, ROW_RESAMPLE_BUDGET // max(rows, 1)))


@dataclass(frozen=True)
class References:
    """What a candidate is compared with, scored without it: the baseline, and production or why it is missing."""

    baseline: Scored
    production: Scored | None = None
    problem: str | None = None


def score_references(task: str, held_out: HeldOut, production_ref: ProductionRef | None, store: ArtifactStore,
                     estimator_packages: Sequence[str]) -> References:
    """The baseline and production scored on the held-out rows. Neither needs the candidate, so training scores
    them while the candidate is fitted."""
    base = baseline(task, held_out)
    if production_ref is None:
        return References(base)
    try:
        return References(base, score_production(production_ref, task, held_out, store, estimator_packages))
    except ComparisonImpossible as e:
        log.warning("no comparison with production: %s", e)
        return References(base, problem=str(e))


def compare(task: str, metric: str, confidence: float, held_out: HeldOut, candidate: Scored,
            production_ref: ProductionRef | None, references: References, segments: Sequence[str] = ()
            ) -> EvaluationResult:
    """The evaluation block of a version: every model on the same held-out rows, the difference on the gate metric
    with its bootstrap interval (against production, or against the baseline for a first version), the segments.
    ``references`` are :func:`score_references` of the same rows and production version."""
    base, production, problem = references.baseline, references.production, references.problem
    other, against = (production, "production") if production is not None else (base, "baseline")
    result = EvaluationResult(
        source="holdout" if held_out.holdout else "split", dataset=held_out.holdout,
        dataDigest=held_out.data_digest, rows=len(held_out.y_test),
        splitSeed=None if held_out.holdout else held_out.seed, metric=metric,
        candidate=candidate.metrics, baseline=base.metrics, baselineStrategy=BASELINES[task],
        productionError=problem,
    )
    if production_ref is not None and production is not None:
        result.production = _compared(production_ref, production)
        if metric in candidate.metrics and metric in production.metrics:
            result.difference = candidate.metrics[metric] - production.metrics[metric]
    coded, cand, prod, versus = _coded(task, held_out, candidate, production, other)
    if production_ref is None or production is not None:
        result.interval = _interval(metric, confidence, coded, cand, versus, against)
    if segments:
        result.segments = _segments(metric, coded, segments, cand, prod)
    _diagnose(result, task, coded.y_test, cand.predictions.pred, held_out.classes, positions=coded is not held_out)
    return result


def _coded(task: str, held_out: HeldOut, candidate: Scored, production: Scored | None, other: Scored
           ) -> tuple[HeldOut, Scored, Scored | None, Scored]:
    """The held-out rows and the models' predicted labels as positions in the classes, when every label is one.

    The interval and the segment table group and count labels many times; positions are counted in linear
    time, while labels (text most of all) are sorted on every call. The metrics are the same: positions are a
    one-to-one renaming, with the second class still the positive one of a binary problem.
    """
    unchanged = held_out, candidate, production, other
    if task == "regression":
        return unchanged
    classes = list(held_out.classes)
    positions = tuple(range(len(classes)))
    truth = label_codes(held_out.y_test, classes)
    recoded: dict[int, Scored] = {}
    for model in (candidate, production, other):
        if model is None or id(model) in recoded:
            continue
        pred = label_codes(model.predictions.pred, classes)
        if pred is None:
            return unchanged
        recoded[id(model)] = replace(model, predictions=replace(model.predictions, pred=pred, classes=positions))
    if truth is None:
        return unchanged
    return (replace(held_out, y_test=truth, classes=positions), recoded[id(candidate)],
            None if production is None else recoded[id(production)], recoded[id(other)])


def _diagnose(result: EvaluationResult, task: str, truth: np.ndarray, pred: np.ndarray, classes: Sequence[Any], *,
              positions: bool = False) -> None:
    """The candidate's confusion matrix or residual histogram on the held-out rows (or a note why there is none).
    ``positions``: the labels are positions in ``classes`` (see :func:`_coded`)."""
    if task == "regression":
        result.residuals, note = residual_histogram(truth, pred)
    else:
        result.confusionMatrix, note = confusion_matrix(truth, pred, classes, positions=positions)
    if note:
        result.omitted = [*(result.omitted or []), note]


def _compared(ref: ProductionRef, scored: Scored) -> ComparedProductionResult:
    return ComparedProductionResult(version=ref.version, digest=ref.digest, metrics=scored.metrics)


def _interval(metric: str, confidence: float, held_out: HeldOut, candidate: Scored, other: Scored, against: str
              ) -> DifferenceIntervalResult | None:
    a, b = _metric_inputs(metric, candidate.predictions), _metric_inputs(metric, other.predictions)
    if a is None or b is None or metric not in candidate.metrics:
        return None
    rows = len(held_out.y_test)
    seed = held_out.seed
    try:
        interval = paired_bootstrap_difference(held_out.y_test, a, b, metric, n_resamples=resamples_for(metric, rows),
                                               confidence=confidence, seed=seed,
                                               **_label_args(metric, held_out.classes))
    except ValueError as e:
        log.info("no bootstrap interval for %s: %s", metric, e)
        return None
    return DifferenceIntervalResult(
        against=against, metric=metric, estimate=interval.estimate, low=_finite(interval.low),
        high=_finite(interval.high), confidence=confidence, resamples=interval.n_resamples, seed=seed,
        method=interval.method)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _shown(value: str) -> str:
    # Missing categorical values are NaN in the inputs; the table names them instead of printing "nan".
    return MISSING if value == "nan" else value[:MAX_VALUE_CHARS]


def _segments(metric: str, held_out: HeldOut, features: Sequence[str], candidate: Scored, production: Scored | None
              ) -> list[SegmentScoreResult] | None:
    a = _metric_inputs(metric, candidate.predictions)
    if a is None:
        return None
    # Small integer codes instead of the values: grouping sorts them, and sorting 200k strings takes a second.
    columns, names = {}, {}
    for f in features:
        codes, uniques = pd.factorize(held_out.x_test[f], use_na_sentinel=True)
        columns[f] = codes
        names[f] = {str(i): str(v) for i, v in enumerate(uniques)} | {"-1": "nan"}
    args = _label_args(metric, held_out.classes)
    cand = [replace(s, value=names[s.feature][s.value])
            for s in segment_metrics(held_out.y_test, a, columns, metric, **args)]
    prod: dict[tuple[str, str], float] = {}
    b = _metric_inputs(metric, production.predictions) if production is not None else None
    if b is not None:
        prod = {(s.feature, names[s.feature][s.value]): s.score
                for s in segment_metrics(held_out.y_test, b, columns, metric, **args)}
    largest = sorted(cand, key=lambda s: -s.rows)[:MAX_SEGMENTS]
    rows = [SegmentScoreResult(feature=s.feature, value=_shown(s.value), rows=s.rows,
                               candidate=_finite(s.score),
                               production=_finite(prod[(s.feature, s.value)]) if (s.feature, s.value) in prod
                               else None)
            for s in largest]
    return sorted(rows, key=lambda r: (r.feature, r.value))


def check_segments(spec: TrainingRunSpec, features: Sequence[Feature]) -> None:
    """Refuse segments that are not categorical features (the operator refuses them first: InvalidSegments)."""
    types = {f.name: f.type for f in features}
    for name in spec.evaluation.segments:
        if types.get(name, "numeric") == "numeric":
            raise TrainingFailure("InvalidParameters",
                                  f"spec.evaluation.segments names {name!r}, which is not a categorical or boolean "
                                  "feature of the dataset")
