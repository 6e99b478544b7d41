"""Training, the workload of ``kultivar train``: fit a pipeline on a validated dataset snapshot, evaluate it on held-out
rows, and save it with its manifest.

:func:`run_training` runs five named steps: adopt a finished attempt, load and verify the snapshot while the
split is prepared, fit, evaluate while the model is saved, and write the manifest. The pieces live in their own
modules: :mod:`.estimator` (import and parameter checks, the search), :mod:`.pipeline` (preprocessing and the fast
transform path), :mod:`.split` (the splits and inputs), :mod:`.evaluate` (metrics) and :mod:`.artifact` (the model
file and its manifest).

Retries: the run's artifacts live under ``run_prefix`` (one per TrainingRun UID). ``manifest.json`` is written
last and marks a finished attempt; a retried pod that finds it returns that attempt's result instead of training
again, and a ``model.skops`` without a manifest is the orphan of a crashed attempt (nothing refers to it, since
the operator learns URIs only from the termination message) and is replaced.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.contracts import (
    DEFAULT_ESTIMATOR_PACKAGES,
    ArtifactRef,
    CompiledModel,
    EvaluationResult,
    FailureResult,
    FeatureRef,
    HoldoutRef,
    ManifestFeature,
    ModelManifest,
    ProductionRef,
)
from kultivar.api.dataset import Feature
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.workloads.artifact import MANIFEST_NAME, MODEL_NAME, dump_model, read_manifest, write_manifest
from kultivar.workloads.canonical import as_features, canonical_frame_digest, coerce_frame
from kultivar.workloads.card import CARD_NAME, provisional_decision, render_card, write_card
from kultivar.workloads.comparison import (
    HeldOut,
    References,
    Scored,
    check_segments,
    compare,
    gate_settings,
    score_references,
)
from kultivar.workloads.compile import Answers, compile_model
from kultivar.workloads.estimator import build_estimator, build_search, needs_encoded_labels
from kultivar.workloads.evaluate import Predictions, evaluate_predictions, headline_metric, scorer
from kultivar.workloads.failure import TrainingFailure
from kultivar.workloads.pipeline import STEP, build_pipeline
from kultivar.workloads.snapshot import read_snapshot
from kultivar.workloads.split import all_inputs, prepare_inputs
from kultivar.workloads.storage import ArtifactRefDict, ArtifactStore, run_prefix

log = logging.getLogger("kultivar.workloads")


def run_training(spec: TrainingRunSpec, dataset_snapshot_uri: str, dataset_digest: str, profile_uri: str | None,
                 task: str, target: str, features: Iterable[Feature | FeatureRef | Mapping[str, Any]],
                 namespace: str, run_name: str, run_uid: str, store: ArtifactStore,
                 estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES,
                 registry: RegistryContext | None = None) -> dict[str, Any]:
    """Train, evaluate and save one model; the result goes to the termination message.

    ``registry`` is what the Model tells the run: its production version (scored on the same held-out rows), its
    promotion policy (the gate metric and the interval's confidence) and its description (the model card).

    Permanent problems (bad estimator, bad parameters, data that does not match its digest) come back as
    ``{"ok": False, ...}``; storage and other unexpected errors are raised for the caller to report as transient.
    """
    items = list(features)
    try:
        return _run_training(spec, dataset_snapshot_uri, dataset_digest, profile_uri, task, target,
                             as_features(items), namespace, run_name, run_uid, store, tuple(estimator_packages),
                             registry or RegistryContext(), manifest_features(items))
    except TrainingFailure as e:
        log.info("training failed: %s: %s", e.reason, e.message)
        return FailureResult(reason=e.reason, message=e.message, retryable=e.retryable).wire()


@dataclass(frozen=True)
class RegistryContext:
    """What the Model tells a training run (from TrainingInput)."""

    production: ProductionRef | None = None
    promotion: dict[str, Any] | None = None
    model: str | None = None
    description: str | None = None
    holdout: HoldoutRef | None = None  # spec.evaluation.holdout's validated version, resolved by the operator


@dataclass
class _Prepared:
    """The inputs of the fit and of the evaluation, and what is fitted (the pipeline, or a search over it)."""

    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    classes: list[Any]
    fit_target: Any
    labels_encoded: bool = False  # y_* hold class indexes into ``classes`` (see needs_encoded_labels)
    y_test_labels: np.ndarray | None = None  # the held-out labels themselves when y_test holds indexes


def _run_training(spec: TrainingRunSpec, snapshot_uri: str, dataset_digest: str, profile_uri: str | None,
                  task: str, target: str, features: list[Feature], namespace: str, run_name: str, run_uid: str,
                  store: ArtifactStore, estimator_packages: tuple[str, ...], registry: RegistryContext,
                  described: list[ManifestFeature]) -> dict[str, Any]:
    timings: dict[str, float] = {}
    prefix = run_prefix(namespace, run_name, run_uid)
    manifest_uri = store.uri_for(prefix + MANIFEST_NAME)
    adopted = _adopt_finished_attempt(store, manifest_uri, dataset_digest)
    if adopted is not None:
        return adopted

    # Fail fast on the spec before reading a possibly large snapshot.
    metric = headline_metric(spec, task)
    estimator = build_estimator(spec, task, estimator_packages)
    if metric == "roc_auc" and not hasattr(estimator, "predict_proba"):
        raise TrainingFailure("InvalidParameters",
                              f"spec.evaluation.metric roc_auc needs predicted probabilities, which "
                              f"{spec.estimator.className} with these params does not provide; pick another "
                              "metric or an estimator with predict_proba (for SVC set probability: true)")

    gate_metric, confidence = gate_settings(registry.promotion, metric)
    check_segments(spec, features)

    prepared = _load_verified(spec, store, snapshot_uri, dataset_digest, task, target, features, estimator, metric,
                              timings)
    holdout = _load_holdout(store, registry.holdout, task, target, features) if registry.holdout else None
    comparing = _Comparing(gate_metric, confidence, registry.production, dataset_digest, spec.evaluation.seed,
                           spec.evaluation.segments, holdout)
    held_out = _held_out(prepared, comparing, features)
    # The baseline and production need only the held-out rows: score them while the candidate is fitted, so the
    # same-data comparison adds little to the run's time (the fit leaves a core free most of the time).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="references") as pool:
        references = pool.submit(score_references, task, held_out, registry.production, store,
                                 estimator_packages)
        model, best_params, notes = _fit(spec, prepared, timings)
        metrics, artifact, trusted_types, evaluation, compiled = _evaluate_and_save(
            model, prepared, metric, task, features, prefix, store, estimator_packages, comparing, held_out,
            references, timings)
    manifest = _manifest(spec, task, target, described, prepared, metric, metrics, best_params, artifact,
                         trusted_types, dataset_digest, snapshot_uri, profile_uri)
    manifest.evaluation = evaluation
    t = time.perf_counter()
    manifest.compiled = compiled
    manifest.cardUri = write_card(store, prefix + CARD_NAME, render_card(
        manifest, run_name=run_name, model=registry.model, description=registry.description,
        decision=provisional_decision(registry.promotion, manifest, registry.production)))
    write_manifest(store, prefix + MANIFEST_NAME, manifest)
    timings["save"] += time.perf_counter() - t
    log.info("saved %s (%s, %d bytes) and %s", artifact["uri"], artifact["digest"], artifact["sizeBytes"],
             manifest_uri)

    result = manifest.training_result(manifest_uri)
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    result.warnings = notes[:3] or None
    return result.wire()


def _adopt_finished_attempt(store: ArtifactStore, manifest_uri: str, dataset_digest: str) -> dict[str, Any] | None:
    """The result of an earlier attempt of this run that finished (its manifest exists), or None."""
    if not store.exists(manifest_uri):
        return None
    previous = read_manifest(store, manifest_uri)
    if previous.datasetDigest != dataset_digest:
        raise TrainingFailure("DataValidationFailed",
                              f"{manifest_uri} was written for dataset {previous.datasetDigest}, not "
                              f"{dataset_digest}; this run's artifacts belong to another dataset version")
    log.info("a previous attempt already finished this run (%s); reporting its result", manifest_uri)
    adopted = previous.training_result(manifest_uri)
    adopted.adopted = True
    return adopted.wire()


def _load_verified(spec: TrainingRunSpec, store: ArtifactStore, snapshot_uri: str, dataset_digest: str, task: str,
                   target: str, features: list[Feature], estimator: Any, metric: str,
                   timings: dict[str, float]) -> _Prepared:
    """Read the snapshot and prepare the fit's inputs, verifying the snapshot's digest on the side."""
    t = time.perf_counter()
    log.info("reading snapshot %s", snapshot_uri)
    try:
        raw = read_snapshot(store, snapshot_uri)
    except FileNotFoundError as e:
        raise TrainingFailure("DataValidationFailed",
                              f"the dataset snapshot {snapshot_uri} does not exist (deleted by retention?); "
                              "re-validate the Dataset and create a new TrainingRun") from e
    frame, mismatches = coerce_frame(raw, features, target, task)
    del raw
    missing = [c for c in [*(f.name for f in features), target] if c not in frame.columns]
    if missing or mismatches:
        problem = f"columns {missing} are missing" if missing else mismatches[0].message
        raise TrainingFailure("DataValidationFailed",
                              f"the snapshot {snapshot_uri} does not match the dataset schema: {problem}")
    timings["load"] = time.perf_counter() - t

    # Verify the snapshot while the split is prepared: hashing runs in C without the GIL, so it takes the other
    # core instead of adding to the wall time. Nothing is fitted before the digest has been checked, and a
    # mismatch wins over any other failure, since a changed snapshot explains whatever else looks wrong.
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify") as pool:
        verifying = pool.submit(_timed, canonical_frame_digest, frame, features, target)
        try:
            x_train, x_test, y_train, y_test, classes = prepare_inputs(frame, features, target, task, spec)
            del frame
            encoded = task == "classification" and needs_encoded_labels(estimator)
            y_test_labels = y_test
            if encoded:
                y_train, y_test = encode_labels(y_train, classes), encode_labels(y_test, classes)
            pipeline = build_pipeline(features, estimator)
            fit_target: Any = pipeline
            if spec.search is not None:
                fit_target = build_search(spec, pipeline, estimator,
                                          scorer(metric, list(range(len(classes))) if encoded else classes),
                                          len(y_train))
        except TrainingFailure:
            _verify_snapshot(verifying, snapshot_uri, dataset_digest)
            raise
        timings["prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        seconds = _verify_snapshot(verifying, snapshot_uri, dataset_digest)
    # Only the part of the digest that did not overlap the preparation (as validation reports its write).
    timings["digest"] = time.perf_counter() - t
    log.info("snapshot verified: %d rows, digest %s (%.2fs)", len(y_train) + len(y_test), dataset_digest, seconds)
    return _Prepared(x_train, x_test, y_train, y_test, classes, fit_target, encoded,
                     y_test_labels if encoded else None)


def _label_decoder(prepared: _Prepared) -> Any:
    """Class indexes -> the classes, for a model fitted on indexes; the identity otherwise."""
    if not prepared.labels_encoded:
        return lambda values: values
    classes = np.asarray(prepared.classes)
    return lambda values: classes[np.asarray(values).astype(np.int64)]


def _decoded(predictions: Predictions, decode: Any, prepared: _Prepared) -> Predictions:
    if not prepared.labels_encoded:
        return predictions
    return Predictions(decode(predictions.pred), predictions.proba, tuple(prepared.classes))


def encode_labels(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    """Each label's index in ``classes``; -1 for a held-out label the training split does not have (a class the
    model can never predict, so it counts as a miss, as for any other estimator)."""
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index.get(v, -1) for v in labels.tolist()), dtype=np.int64, count=len(labels))


def _fit(spec: TrainingRunSpec, prepared: _Prepared, timings: dict[str, float]
         ) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """Fit; returns the fitted pipeline, the best parameters of a search, and the warnings fitting raised."""
    from sklearn.utils._param_validation import InvalidParameterError

    log.info("fitting %s on %d rows (%d held out)%s", spec.estimator.className, len(prepared.y_train),
             len(prepared.y_test), f" with {spec.search.method} search" if spec.search else "")
    fit_target = prepared.fit_target
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit_target.fit(prepared.x_train, prepared.y_train)
        except InvalidParameterError as e:
            raise TrainingFailure("InvalidParameters", f"{spec.estimator.className}: {e}") from e
        except (ValueError, TypeError) as e:
            raise _fit_failure(spec, e) from e
        except MemoryError as e:
            raise TrainingFailure("TrainingFailed",
                                  "training ran out of memory; give the pod more memory in spec.resources or "
                                  "use fewer rows/features") from e
    timings["fit"] = time.perf_counter() - t
    notes = sorted({f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:200]}" for w in caught})
    for note in notes[:5]:
        log.info("warning during fit: %s", note)
    log.info("fit done in %.2fs", timings["fit"])

    if spec.search is None:
        return fit_target, None, notes
    best_params = {k.removeprefix(f"{STEP}__"): _json_safe(v) for k, v in fit_target.best_params_.items()}
    log.info("best parameters: %s (cv score %.4f)", best_params, fit_target.best_score_)
    return fit_target.best_estimator_, best_params, notes


def _fit_failure(spec: TrainingRunSpec, e: Exception) -> TrainingFailure:
    """InvalidParameters when the error names a parameter the user gave (combinations such as solver lbfgs with
    penalty l1 are only checked by fit, as ValueError), else TrainingFailed."""
    given = {**spec.estimator.params, **(spec.search.space if spec.search else {})}
    named = [p for p, v in given.items() if p in str(e) or (isinstance(v, str) and len(v) >= 3 and v in str(e))]
    if named:
        return TrainingFailure("InvalidParameters",
                               f"{spec.estimator.className} rejected the parameters {', '.join(named)}: {e}; change "
                               "spec.estimator.params or spec.search.space")
    return TrainingFailure("TrainingFailed",
                           f"fitting {spec.estimator.className} failed: {type(e).__name__}: {e}; check the "
                           "parameters (some combinations are invalid) and the data")


@dataclass(frozen=True)
class _Comparing:
    """What the same-data comparison needs besides the fitted model and the splits."""

    metric: str
    confidence: float
    production: ProductionRef | None
    data_digest: str
    seed: int
    segments: Sequence[str]
    holdout: _Holdout | None = None


@dataclass(frozen=True)
class _Holdout:
    ref: HoldoutRef
    x: pd.DataFrame
    y: np.ndarray


def _load_holdout(store: ArtifactStore, ref: HoldoutRef, task: str, target: str, features: list[Feature]
                  ) -> _Holdout:
    """The fixed holdout set, verified against its validated digest before any model is scored on it."""
    try:
        raw = read_snapshot(store, ref.snapshot)
    except FileNotFoundError as e:
        raise TrainingFailure("DataValidationFailed",
                              f"the snapshot {ref.snapshot} of holdout Dataset {ref.name} does not exist; "
                              "re-validate it and create a new TrainingRun") from e
    frame, mismatches = coerce_frame(raw, features, target, task)
    missing = [c for c in [*(f.name for f in features), target] if c not in frame.columns]
    if missing or mismatches:
        problem = f"columns {missing} are missing" if missing else mismatches[0].message
        raise TrainingFailure("DataValidationFailed",
                              f"holdout Dataset {ref.name} does not match the training data's schema: {problem}")
    actual = canonical_frame_digest(frame, features, target)
    if actual != ref.digest:
        raise TrainingFailure("DataValidationFailed",
                              f"the holdout snapshot {ref.snapshot} has digest {actual}, not the validated "
                              f"{ref.digest}; re-validate holdout Dataset {ref.name} and retrain")
    x, y = all_inputs(frame, features, target, task)
    log.info("holdout Dataset %s: %d rows (%s)", ref.name, len(y), ref.digest)
    return _Holdout(ref, x, y)


def _held_out(prepared: _Prepared, comparing: _Comparing, features: list[Feature]) -> HeldOut:
    """The rows every model is scored on (the run's held-out split or the holdout Dataset), in the labels
    themselves: a model fitted on class indexes (labels_encoded) has its predictions mapped back first."""
    few_values = [f.name for f in features if f.type != "numeric"]
    y_train = _label_decoder(prepared)(prepared.y_train)
    if comparing.holdout is None:
        y_test = prepared.y_test_labels if prepared.y_test_labels is not None else prepared.y_test
        return HeldOut(prepared.x_test, y_test, y_train, prepared.classes, comparing.data_digest, comparing.seed,
                       few_values=few_values)
    hold = comparing.holdout
    return HeldOut(hold.x, hold.y, y_train, prepared.classes, hold.ref.digest, comparing.seed,
                   holdout=hold.ref.name, few_values=few_values)


def _evaluate_and_save(model: Any, prepared: _Prepared, metric: str, task: str, features: list[Feature],
                       prefix: str, store: ArtifactStore, estimator_packages: tuple[str, ...], comparing: _Comparing,
                       held_out: HeldOut, references: Future[References], timings: dict[str, float]
                       ) -> tuple[dict[str, float], ArtifactRefDict, list[str], EvaluationResult, CompiledModel]:
    """The held-out metrics, the stored model file, the types beyond skops' defaults it holds, the comparison
    with production and the baseline on the same rows, and the compiled model (or why there is none)."""
    # Serialise the model while it is evaluated: both only read the fitted model, so skops' work overlaps the
    # evaluation's. Nothing is stored before the evaluation has succeeded.
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kultivar-model-") as tmp, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="save") as pool:
        local = os.path.join(tmp, MODEL_NAME)
        dumping = pool.submit(dump_model, model, local, estimator_packages)
        metrics, predictions = evaluate_predictions(model, prepared.x_test, prepared.y_test, task,
                                                    held_out.few_values)
        timings["evaluate"] = time.perf_counter() - t
        if metric not in metrics:
            raise TrainingFailure("EvaluationFailed",
                                  f"the headline metric {metric} could not be computed on the held-out split "
                                  f"(computed: {', '.join(metrics) or 'none'}); use more data or another metric")
        log.info("held-out metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        # Compile while the candidate is compared: model.onnx (or why not), checked against the predictions the
        # held-out metrics were computed from.
        compiling = pool.submit(compile_model, model, features, task, prepared.x_test, store, prefix,
                                Answers(predictions.pred, predictions.proba), prepared.x_train)

        t = time.perf_counter()
        decode = _label_decoder(prepared)
        if comparing.holdout is None:
            candidate = Scored(metrics, _decoded(predictions, decode, prepared))
        else:
            hold = comparing.holdout
            hold_y = encode_labels(hold.y, prepared.classes) if prepared.labels_encoded else hold.y
            hold_metrics, hold_predictions = evaluate_predictions(model, hold.x, hold_y, task, held_out.few_values)
            candidate = Scored(hold_metrics, _decoded(hold_predictions, decode, prepared))
        # Only the part of the references' scoring that did not overlap the fit counts here.
        evaluation = compare(task, comparing.metric, comparing.confidence, held_out, candidate,
                             comparing.production, references.result(), comparing.segments)
        timings["compare"] = time.perf_counter() - t
        log.info("same-data comparison on %d rows: %s", evaluation.rows, evaluation.wire())

        t = time.perf_counter()
        trusted_types = dumping.result()
        model_rel = prefix + MODEL_NAME
        model_uri = store.uri_for(model_rel)
        if store.exists(model_uri):
            log.info("replacing %s left by an attempt that did not finish (no manifest)", model_uri)
            store.delete(model_rel)
        artifact = store.write_file_once(model_rel, local)
        compiled = compiling.result()
    timings["save"] = time.perf_counter() - t
    return metrics, artifact, trusted_types, evaluation, compiled


def manifest_features(items: Iterable[Feature | FeatureRef | Mapping[str, Any]]) -> list[ManifestFeature]:
    """The manifest's features: name, type, the dtype the pipeline takes and, for categorical features, the
    allowed values and missing-value texts the operator passed (TrainingFeature); unknown ones stay unset."""
    out = []
    for item in items:
        raw = item.model_dump() if isinstance(item, Feature | FeatureRef) else dict(item)
        categorical = raw["type"] == "categorical"
        out.append(ManifestFeature(
            name=str(raw["name"]), type=raw["type"], dtype="string" if categorical else "float64",
            allowed=raw.get("allowed") if categorical else None,
            missingTokens=raw.get("missingTokens") if categorical else None))
    return out


def _manifest(spec: TrainingRunSpec, task: str, target: str, features: list[ManifestFeature], prepared: _Prepared,
              metric: str, metrics: dict[str, float], best_params: dict[str, Any] | None, artifact: ArtifactRefDict,
              trusted_types: list[str], dataset_digest: str, snapshot_uri: str,
              profile_uri: str | None) -> ModelManifest:
    import sklearn
    import skops

    return ModelManifest(
        createdAt=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        artifact=ArtifactRef.model_validate(artifact),
        sha256=artifact["digest"].removeprefix("sha256:"),
        estimator=spec.estimator.className,
        params=_json_safe(dict(spec.estimator.params)),
        bestParams=best_params,
        task=task,
        target=target,
        features=features,
        classes=_json_safe(list(prepared.classes)) if task == "classification" else None,
        labelsEncoded=prepared.labels_encoded,
        metric=metric,
        score=metrics[metric],
        metrics=metrics,
        datasetDigest=dataset_digest,
        datasetSnapshotUri=snapshot_uri,
        profileUri=profile_uri,
        trainRows=len(prepared.y_train),
        testRows=len(prepared.y_test),
        seed=spec.evaluation.seed,
        sklearnVersion=sklearn.__version__,
        skopsVersion=skops.__version__,
        numpyVersion=np.__version__,
        pythonVersion=platform.python_version(),
        trustedTypes=trusted_types,
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def _verify_snapshot(verifying: Future[tuple[str, float]], snapshot_uri: str, expected: str) -> float:
    """Wait for the snapshot's digest; raises unless it is the validated one. Returns the seconds it took."""
    actual, seconds = verifying.result()
    if actual != expected:
        raise TrainingFailure("DataValidationFailed",
                              f"the snapshot {snapshot_uri} has digest {actual}, not the validated {expected}: "
                              "it changed after validation; re-validate the Dataset and retrain")
    return float(seconds)
