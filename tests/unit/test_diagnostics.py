"""The held-out diagnostics a version records (kultivar.workloads.diagnostics): the confusion matrix checked against
sklearn.metrics.confusion_matrix, the residual histogram against numpy.histogram, both carried by the evaluation
through the termination message into the version record's schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from kultivar.api.contracts import (
    TERMINATION_LIMIT,
    EvaluationResult,
    SegmentScoreResult,
    TrainingResult,
    decode_termination,
    encode_termination,
)
from kultivar.api.model import ModelVersion
from kultivar.api.trainingrun import CONFUSION_MATRIX_MAX_CLASSES, RESIDUAL_BINS, VersionEvaluation
from kultivar.workloads.comparison import HeldOut, Scored, compare, score_references
from kultivar.workloads.diagnostics import confusion, confusion_matrix, residual_histogram
from kultivar.workloads.evaluate import Predictions, metrics_of

RNG = np.random.default_rng(7)


def noisy(y: np.ndarray, classes: list, share: float = 0.3) -> np.ndarray:
    """Predictions: y with a share of the rows replaced by a random class."""
    pred = y.copy()
    flip = RNG.random(len(y)) < share
    pred[flip] = RNG.choice(np.asarray(classes, dtype=y.dtype), size=int(flip.sum()))
    return pred


@pytest.mark.parametrize("classes", [
    ["setosa", "versicolor", "virginica"],
    [0, 1],
    [3, 1, 2],  # the model's order, not sorted: rows and columns follow labels
    [False, True],
    [1.0, 2.0, 4.0],  # labels read as floats: shown as 1.0, 2.0, 4.0
])
def test_the_matrix_is_sklearns(classes) -> None:
    y = np.asarray(classes)[RNG.integers(0, len(classes), 500)]
    pred = noisy(y, classes)
    labels, counts = confusion(y, pred, classes)
    assert labels == classes
    assert np.array_equal(counts, sk_confusion_matrix(y, pred, labels=classes))
    matrix, note = confusion_matrix(y, pred, classes)
    assert note is None and matrix is not None
    assert matrix.labels == [str(c) for c in classes] and matrix.counts == counts.tolist()
    assert sum(map(sum, matrix.counts)) == len(y)


def test_a_class_the_model_never_saw_is_counted_after_its_classes() -> None:
    """A holdout Dataset may hold a class the training rows did not: its rows are counted, not dropped."""
    classes = ["b", "a"]
    y = np.array(["a", "b", "c", "c", "a", "d"], dtype=object)
    pred = np.array(["a", "b", "a", "b", "b", "a"], dtype=object)
    labels, counts = confusion(y, pred, classes)
    assert labels == ["b", "a", "c", "d"]
    assert np.array_equal(counts, sk_confusion_matrix(y, pred, labels=labels)) and counts.sum() == len(y)


def test_more_classes_than_a_version_records_are_left_out_with_a_note() -> None:
    classes = list(range(CONFUSION_MATRIX_MAX_CLASSES + 1))
    y = np.asarray(classes * 3)
    matrix, note = confusion_matrix(y, y, classes)
    assert matrix is None and note == (f"confusion matrix: {len(classes)} classes, more than the "
                                       f"{CONFUSION_MATRIX_MAX_CLASSES} a version records")
    assert confusion_matrix(y[y < CONFUSION_MATRIX_MAX_CLASSES], y[y < CONFUSION_MATRIX_MAX_CLASSES],
                            classes[:-1])[0] is not None


def test_the_residual_histogram_is_numpys() -> None:
    y = RNG.normal(50.0, 10.0, 1000)
    pred = y + RNG.standard_t(3, 1000) * 2.5
    hist, note = residual_histogram(y, pred)
    counts, edges = np.histogram(y - pred, bins=RESIDUAL_BINS)
    assert note is None and hist is not None
    assert hist.counts == counts.tolist() and sum(hist.counts) == len(y)
    assert len(hist.edges) == RESIDUAL_BINS + 1
    assert hist.edges == pytest.approx(edges.tolist(), rel=1e-5)  # stored with 6 significant digits


def test_non_finite_residuals_are_left_out_and_none_at_all_is_a_note() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, np.nan, 2.0, np.inf])
    hist, _ = residual_histogram(y, pred)
    assert hist is not None and sum(hist.counts) == 2
    assert np.histogram([-0.5, 1.0], bins=RESIDUAL_BINS)[0].tolist() == hist.counts
    constant, _ = residual_histogram(np.ones(5), np.ones(5))  # a perfect fit: numpy's unit range around 0
    assert constant is not None and constant.counts[RESIDUAL_BINS // 2] == 5
    none, note = residual_histogram(y, np.full(4, np.nan))
    assert none is None and note == "residual histogram: no finite residual on the held-out rows"


def held_out(y_test: np.ndarray, classes: list) -> HeldOut:
    return HeldOut(x_test=None, y_test=y_test, y_train=y_test, classes=classes,  # type: ignore[arg-type]
                   data_digest="sha256:" + "d" * 64, seed=1)


def test_the_evaluation_records_the_matrix_of_a_classifier_and_the_residuals_of_a_regressor() -> None:
    classes = ["no", "yes"]
    y = np.asarray(classes, dtype=object)[RNG.integers(0, 2, 300)]
    pred = noisy(y, classes)
    proba = np.column_stack([(pred == "no").astype(float), (pred == "yes").astype(float)])
    predictions = Predictions(pred, proba, tuple(classes))
    rows = held_out(y, classes)
    result = compare("classification", "accuracy", 0.95, rows,
                     Scored(metrics_of(y, predictions, "classification"), predictions), None,
                     score_references("classification", rows, None, None, ()))  # type: ignore[arg-type]
    assert result.confusionMatrix is not None and result.residuals is None and result.omitted is None
    assert result.confusionMatrix.counts == sk_confusion_matrix(y, pred, labels=classes).tolist()

    values = RNG.normal(0, 1, 300)
    estimates = Predictions(values + RNG.normal(0, 0.1, 300))
    rows = held_out(values, [])
    result = compare("regression", "r2", 0.95, rows, Scored(metrics_of(values, estimates, "regression"), estimates),
                     None, score_references("regression", rows, None, None, ()))  # type: ignore[arg-type]
    assert result.confusionMatrix is None and result.residuals is not None
    assert result.residuals.counts == np.histogram(values - estimates.pred, bins=RESIDUAL_BINS)[0].tolist()


def evaluation(classes: int, segments: int) -> EvaluationResult:
    labels = [f"class-{i:02d}" for i in range(classes)]
    counts = [[1000 + i * j for j in range(classes)] for i in range(classes)]
    return EvaluationResult.model_validate({
        "dataDigest": "sha256:" + "d" * 64, "rows": 10_000, "metric": "accuracy",
        "candidate": {"accuracy": 0.9}, "baseline": {"accuracy": 0.1},
        "segments": [SegmentScoreResult(feature="site", value=f"site-{i}", rows=100, candidate=0.9).model_dump()
                     for i in range(segments)],
        "confusionMatrix": {"labels": labels, "counts": counts}})


def result(ev: EvaluationResult) -> TrainingResult:
    return TrainingResult.model_validate({
        "metric": "accuracy", "score": 0.9, "metrics": {"accuracy": 0.9},
        "artifact": {"uri": "file:///store/m/model.skops", "digest": "sha256:" + "a" * 64, "sizeBytes": 1},
        "manifestUri": "file:///store/m/manifest.json", "datasetDigest": "sha256:" + "d" * 64,
        "evaluation": ev.model_dump(exclude_none=True)})


def test_a_matrix_of_the_most_classes_recorded_fits_the_termination_message_into_the_version_record() -> None:
    produced = result(evaluation(CONFUSION_MATRIX_MAX_CLASSES, 0))
    text = encode_termination(produced)
    reported = decode_termination(text)
    assert reported is not None and len(text.encode()) <= TERMINATION_LIMIT
    assert reported["evaluation"]["confusionMatrix"] == produced.evaluation.confusionMatrix.model_dump()  # type: ignore[union-attr]
    # what the operator writes to TrainingRun and Model status: valid against the CRDs' models
    VersionEvaluation.model_validate(reported["evaluation"])
    ModelVersion.model_validate({"version": 1, "trainingRun": "r", "datasetDigest": "sha256:" + "d" * 64,
                                 "artifact": reported["artifact"], "createdAt": "2026-05-01T12:00:00Z",
                                 "evaluation": reported["evaluation"]})


def test_when_the_message_is_too_long_the_matrix_goes_before_the_segments_the_gate_judges() -> None:
    produced = result(evaluation(CONFUSION_MATRIX_MAX_CLASSES, 20))
    assert len(json.dumps(produced.wire()).encode()) > TERMINATION_LIMIT
    reported = decode_termination(encode_termination(produced))
    assert reported is not None
    ev = reported["evaluation"]
    assert "confusionMatrix" not in ev and len(ev["segments"]) == 20 and reported["metrics"] == {"accuracy": 0.9}
    assert ev["omitted"] == ["confusion matrix: left out of the termination message (4 KiB) to fit; it is in the "
                             "model's manifest.json"]
    VersionEvaluation.model_validate(ev)


@pytest.mark.parametrize("classes", [["no", "yes"], [0, 1], ["a", "b", "c", "d"], [3, 7, 11]])
def test_held_out_metrics_are_sklearns(classes: list) -> None:
    # metrics_of counts class positions instead of calling sklearn; the numbers must be sklearn's, including a
    # class that is never predicted (zero_division=0) and labels the model does not know (sklearn decides).
    from sklearn import metrics as m

    labels = np.asarray(classes, dtype=object if isinstance(classes[0], str) else None)
    y = labels[RNG.integers(0, len(classes), 400)]
    pred = np.where(RNG.random(400) < 0.6, y, labels[0])
    binary = len(classes) == 2
    avg = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    expected = {"accuracy": m.accuracy_score(y, pred), "f1": m.f1_score(y, pred, zero_division=0, **avg),
                "precision": m.precision_score(y, pred, zero_division=0, **avg),
                "recall": m.recall_score(y, pred, zero_division=0, **avg)}
    got = metrics_of(y, Predictions(pred, None, tuple(classes)), "classification")
    assert got == pytest.approx(expected)
    never = metrics_of(y, Predictions(np.full(400, labels[0]), None, tuple(classes)), "classification")
    assert never["precision"] == pytest.approx(m.precision_score(y, np.full(400, labels[0]), zero_division=0, **avg))
