"""The same-data comparison (#14): the training pod scores candidate, production and a baseline on the same rows;
the gate decides on those numbers; the model card shows them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from factories import dataset, model, run, succeeded_run, valid_dataset_status
from sklearn.metrics import accuracy_score, f1_score
from test_training import mixed_frame

from kultivar.api.contracts import ProductionRef, TrainingResult
from kultivar.api.dataset import DatasetSpec
from kultivar.api.model import ModelVersion, Promotion
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.config import OperatorConfig
from kultivar.domain.registry import ModelObserved, gate, plan_model
from kultivar.domain.stats import paired_bootstrap_difference
from kultivar.domain.trainingrun import TrainingRunObserved, plan_training_run
from kultivar.workloads.storage import ArtifactStore
from kultivar.workloads.training import RegistryContext, run_training
from kultivar.workloads.validation import run_validation

DIGEST = "sha256:" + "d" * 64


def evaluation(candidate: float, production: float | None, *, metric: str = "accuracy", baseline: float = 0.3,
               interval: tuple[float, float] | None = None, against: str = "production", version: int = 1,
               confidence: float = 0.95, segments: list[dict[str, Any]] | None = None, **extra: Any
               ) -> dict[str, Any]:
    block: dict[str, Any] = {
        "dataDigest": DIGEST, "rows": 69, "splitSeed": 42, "metric": metric, "candidate": {metric: candidate},
        "baseline": {metric: baseline}, "baselineStrategy": "DummyClassifier(strategy=most_frequent)", **extra,
    }
    if production is not None:
        block["production"] = {"version": version, "digest": "sha256:" + "e" * 64, "metrics": {metric: production}}
        block["difference"] = candidate - production
    if interval is not None:
        block["interval"] = {"against": against, "metric": metric, "estimate": candidate - (production or baseline),
                             "low": interval[0], "high": interval[1], "confidence": confidence, "resamples": 2000,
                             "seed": 42, "method": "percentile paired bootstrap"}
    if segments is not None:
        block["segments"] = segments
    return block


def record(block: dict[str, Any], metric: str = "accuracy") -> dict[str, Any]:
    # The candidate's own split score differs from the same-data one: the gate must use the latter.
    return {"version": 2, "metric": metric, "metrics": {metric: 0.5}, "evaluation": block}


PROD = {"version": 1, "metrics": {"accuracy": 0.99}}  # its score on its own, older split: not what counts


# ------------------------------------------------------------------------------------------------- the gate


def test_the_gate_compares_on_the_same_rows_and_says_so() -> None:
    decision = gate(Promotion(), record(evaluation(0.953, 0.612, interval=(0.22, 0.46))), PROD)
    assert decision.passed and decision.reason == "Improved"
    assert decision.message.startswith("accuracy 0.953 vs v1 0.612 on the same 69 held-out rows of "
                                       "sha256:dddddddddddd…: +0.341, 95 % interval [+0.22, +0.46]")


def test_a_tie_is_not_an_improvement() -> None:
    decision = gate(Promotion(), record(evaluation(0.9, 0.9)), PROD)
    assert not decision.passed and decision.reason == "NoImprovement"
    assert "a tie is not an improvement" in decision.message


def test_min_improvement_is_in_the_metrics_units() -> None:
    assert not gate(Promotion(minImprovement=0.05), record(evaluation(0.93, 0.9)), PROD).passed
    assert gate(Promotion(minImprovement=0.02), record(evaluation(0.93, 0.9)), PROD).passed


@pytest.mark.parametrize("candidate,production,passed", [(9.0, 10.0, True), (11.0, 10.0, False), (10.0, 10.0, False)])
def test_lower_is_better_metrics(candidate: float, production: float, passed: bool) -> None:
    block = evaluation(candidate, production, metric="rmse", baseline=20.0)
    assert gate(Promotion(metric="rmse"), record(block, "rmse"), PROD).passed is passed


def test_lower_is_better_significance_reads_the_interval_the_other_way() -> None:
    promotion = Promotion(metric="mae", significance={"confidence": 0.95})
    significant = evaluation(8.0, 10.0, metric="mae", baseline=20.0, interval=(-3.0, -0.5))
    unsure = evaluation(8.0, 10.0, metric="mae", baseline=20.0, interval=(-3.0, 0.4))
    assert gate(promotion, record(significant, "mae"), PROD).passed
    assert gate(promotion, record(unsure, "mae"), PROD).reason == "NotSignificant"


def test_significance_on_refuses_an_insignificant_gain_and_off_accepts_it() -> None:
    block = evaluation(0.92, 0.9, interval=(-0.01, 0.05))
    assert gate(Promotion(), record(block), PROD).passed
    decision = gate(Promotion(significance={"confidence": 0.95}), record(block), PROD)
    assert not decision.passed and decision.reason == "NotSignificant"
    assert "95 % interval [-0.01, +0.05]" in decision.message and "not significant" in decision.message


def test_significance_with_a_margin_needs_the_whole_interval_above_it() -> None:
    block = evaluation(0.95, 0.9, interval=(0.02, 0.08))
    assert gate(Promotion(significance={"confidence": 0.95}), record(block), PROD).passed
    assert not gate(Promotion(significance={"confidence": 0.95}, minImprovement=0.03), record(block), PROD).passed


def test_significance_at_another_confidence_than_computed_does_not_promote() -> None:
    block = evaluation(0.95, 0.9, interval=(0.02, 0.08), confidence=0.9)
    decision = gate(Promotion(significance={"confidence": 0.99}), record(block), PROD)
    assert not decision.passed and "no 99 % interval" in decision.message


def test_a_first_version_must_beat_the_baseline() -> None:
    assert gate(Promotion(), record(evaluation(0.8, None, baseline=0.33)), None).reason == "Passed"
    decision = gate(Promotion(), record(evaluation(0.33, None, baseline=0.33)), None)
    assert not decision.passed and decision.reason == "NotBetterThanBaseline"
    assert "DummyClassifier(strategy=most_frequent) (0.33)" in decision.message


def test_a_first_version_under_significance_must_beat_the_baseline_significantly() -> None:
    promotion = Promotion(significance={"confidence": 0.95})
    unsure = evaluation(0.4, None, baseline=0.33, interval=(-0.02, 0.16), against="baseline")
    assert gate(promotion, record(unsure), None).reason == "NotSignificant"
    clear = evaluation(0.9, None, baseline=0.33, interval=(0.5, 0.65), against="baseline")
    assert gate(promotion, record(clear), None).passed


def test_the_minimum_still_applies() -> None:
    decision = gate(Promotion(minimum=0.95), record(evaluation(0.9, 0.5)), PROD)
    assert decision.reason == "BelowMinimum"


def test_production_that_changed_since_the_run_started_is_not_compared_with() -> None:
    block = evaluation(0.95, 0.9, version=1)
    decision = gate(Promotion(), record(block), {"version": 3, "metrics": {"accuracy": 0.5}})
    assert not decision.passed and decision.reason == "ProductionChanged"
    assert "compared with v1, but production is now v3" in decision.message
    first = gate(Promotion(), record(evaluation(0.95, None)), {"version": 3, "metrics": {}})
    assert first.reason == "ProductionChanged" and "compared with no version" in first.message


def test_a_production_that_could_not_be_scored_blocks_promotion() -> None:
    block = evaluation(0.95, None, productionError="the model file of production v1 (s3://x) is missing")
    decision = gate(Promotion(), record(block), PROD)
    assert not decision.passed and decision.reason == "ComparisonFailed"
    assert "could not compare with production v1: the model file of production v1 (s3://x) is missing" in \
        decision.message


def test_a_segment_worse_than_production_by_more_than_the_margin_is_refused() -> None:
    segments = [
        {"feature": "plan", "value": "basic", "rows": 50, "candidate": 0.95, "production": 0.80},
        {"feature": "plan", "value": "pro", "rows": 40, "candidate": 0.70, "production": 0.90},
        {"feature": "plan", "value": "tiny", "rows": 5, "candidate": 0.0, "production": 1.0},
    ]
    block = evaluation(0.9, 0.85, segments=segments)
    assert gate(Promotion(), record(block), PROD).passed  # reported, not judged without a margin
    decision = gate(Promotion(segmentMargin=0.1, segmentMinRows=30), record(block), PROD)
    assert not decision.passed and decision.reason == "SegmentRegression"
    assert "segment plan=pro (40 rows): accuracy 0.7 vs production 0.9" in decision.message
    assert "tiny" not in decision.message  # too few rows to judge
    assert gate(Promotion(segmentMargin=0.25, segmentMinRows=30), record(block), PROD).passed


def test_records_without_an_evaluation_are_compared_by_their_own_scores() -> None:
    legacy = {"version": 2, "metric": "accuracy", "metrics": {"accuracy": 0.99}}
    assert gate(Promotion(), legacy, PROD).reason == "NoImprovement"  # a tie


# ---------------------------------------------------------------------------------- registry and planner


def test_the_version_record_holds_the_evaluation_and_the_card() -> None:
    block = evaluation(0.95, None, baseline=0.3)
    trained = succeeded_run("r1", 0.5)
    trained["status"].update(evaluation=block, cardUri="file:///store/r1/card.md")
    plan, _ = plan_model(ModelObserved(obj=model(), runs=[trained], served_versions=frozenset()),
                         now=pd.Timestamp("2026-01-02T00:00:00Z").to_pydatetime())
    version = plan.status["versions"][0]
    typed = ModelVersion.model_validate(version)  # the CRD schema's model: nothing is pruned
    assert typed.evaluation is not None and typed.evaluation.rows == 69 and typed.cardUri.endswith("card.md")
    assert version["gate"]["reason"] == "Passed" and plan.status["productionVersion"] == 1


def _run_plan(segments: list[str]) -> Any:
    ds = dataset(status=valid_dataset_status())
    ds["spec"]["schema"]["features"] = [{"name": "sepal_length", "type": "numeric"},
                                        {"name": "region", "type": "categorical"}]
    tr = run(evaluation={"segments": segments})
    observed = TrainingRunObserved(obj=tr, dataset=ds, model=model(), job=None, registered_version=None)
    return plan_training_run(observed, OperatorConfig(), pd.Timestamp("2026-01-02T00:00:00Z").to_pydatetime())


def test_segments_must_be_categorical_features_of_the_dataset() -> None:
    assert len(_run_plan(["region"]).jobs) == 1
    numeric = _run_plan(["sepal_length"])
    ready = next(c for c in numeric.conditions if c.type == "Ready")
    assert ready.reason == "InvalidSegments" and "'sepal_length', a numeric feature" in ready.message
    unknown = next(c for c in _run_plan(["colour"]).conditions if c.type == "Ready")
    assert "'colour', which is not a feature of Dataset 'iris' (its categorical features: region)" in \
        unknown.message


def _holdout_plan(holdout: dict[str, Any] | None) -> Any:
    ds = dataset(status=valid_dataset_status())
    tr = run(evaluation={"holdout": {"name": "frozen"}})
    observed = TrainingRunObserved(obj=tr, dataset=ds, model=model(), job=None, registered_version=None,
                                   holdout=holdout)
    return plan_training_run(observed, OperatorConfig(), pd.Timestamp("2026-01-02T00:00:00Z").to_pydatetime())


def _ready(plan: Any) -> Any:
    return next(c for c in plan.conditions if c.type == "Ready")


def test_a_holdout_with_other_columns_is_refused_precisely() -> None:
    assert _ready(_holdout_plan(None)).reason == "HoldoutNotFound"
    other = dataset("frozen", status=valid_dataset_status("sha256:" + "9" * 64))
    other["spec"]["schema"]["features"] = [{"name": "petal_width", "type": "numeric"}]
    ready = _ready(_holdout_plan(other))
    assert ready.reason == "HoldoutMismatch"
    assert ready.message == ("holdout Dataset 'frozen' does not have the columns of Dataset 'iris': it lacks the "
                             "features sepal_length; it has features petal_width that Dataset 'iris' does not")
    unvalidated = dataset("frozen")
    assert _ready(_holdout_plan(unvalidated)).reason == "WaitingForHoldout"


def test_a_valid_holdout_reaches_the_pod() -> None:
    from kultivar.api.contracts import TrainingInput

    frozen = dataset("frozen", status=valid_dataset_status("sha256:" + "9" * 64))
    plan = _holdout_plan(frozen)
    env = {e["name"]: e["value"] for e in plan.jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    given = TrainingInput.from_env(env).holdout
    assert given is not None and given.name == "frozen" and given.digest == "sha256:" + "9" * 64


def test_a_holdout_that_is_the_training_data_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"evaluation\.holdout must be another Dataset than datasetRef"):
        TrainingRunSpec.model_validate({"datasetRef": {"name": "iris"}, "modelRef": {"name": "m"},
                                        "estimator": {"className": "sklearn.dummy.DummyClassifier"},
                                        "evaluation": {"holdout": {"name": "iris"}}})


def test_the_run_status_carries_the_evaluation_from_the_pod() -> None:
    from factories import finished_job

    ds = dataset(status=valid_dataset_status())
    tr = run(status={"jobName": "run-1-train-1", "specAttempt": 1})
    result = {"ok": True, "metric": "accuracy", "score": 0.9, "metrics": {"accuracy": 0.9},
              "artifact": {"uri": "file:///s/m.skops", "digest": DIGEST, "sizeBytes": 1},
              "manifestUri": "file:///s/manifest.json", "datasetDigest": DIGEST, "cardUri": "file:///s/card.md",
              "evaluation": evaluation(0.9, None)}
    observed = TrainingRunObserved(obj=tr, dataset=ds, model=model(), job=finished_job(True, result),
                                   registered_version=None)
    plan = plan_training_run(observed, OperatorConfig(), pd.Timestamp("2026-01-02T00:00:00Z").to_pydatetime())
    assert plan.status["evaluation"]["rows"] == 69 and plan.status["cardUri"] == "file:///s/card.md"


# --------------------------------------------------------------------------------------- the training pod


@pytest.fixture(scope="module")
def store() -> ArtifactStore:
    return ArtifactStore(f"memory://evaluation-{uuid.uuid4().hex[:8]}")


def validated_churn(store: ArtifactStore, frame: pd.DataFrame, path: Path, name: str = "churn") -> dict[str, Any]:
    """``frame`` (churn's columns) written to ``path`` and validated as a Dataset named ``name``."""
    frame.to_parquet(path, index=False)
    spec = DatasetSpec.model_validate({"source": {"uri": str(path)}, "schema": {
        "target": "churn", "task": "classification", "features": [
            {"name": "age", "type": "numeric", "nullable": True},
            {"name": "plan", "type": "categorical", "nullable": True},
            {"name": "member", "type": "boolean"}]}})
    result = run_validation(spec, "ns", name, store)
    assert result["ok"], result
    return result


@pytest.fixture(scope="module")
def churn(store: ArtifactStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return validated_churn(store, mixed_frame(600), tmp_path_factory.mktemp("data") / "churn.parquet")


def _train(store: ArtifactStore, data: dict[str, Any], params: dict[str, Any], registry: RegistryContext,
           class_name: str = "sklearn.linear_model.LogisticRegression", **evaluation: Any) -> dict[str, Any]:
    spec = TrainingRunSpec.model_validate({
        "datasetRef": {"name": "churn"}, "modelRef": {"name": "churn"},
        "estimator": {"className": class_name, "params": params}, "evaluation": evaluation})
    result = run_training(spec, data["snapshotUri"], data["digest"], data["profileUri"], "classification", "churn",
                          data["features"], "ns", f"run-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, store,
                          estimator_packages=("sklearn", "xgboost"), registry=registry)
    assert result["ok"], result
    return result


def test_candidate_production_and_baseline_are_scored_on_the_same_rows(store: ArtifactStore,
                                                                        churn: dict[str, Any]) -> None:
    weak = _train(store, churn, {"C": 0.0005, "max_iter": 500}, RegistryContext(model="churn"))
    production = ProductionRef(version=1, uri=weak["artifact"]["uri"], digest=weak["artifact"]["digest"])
    promotion = {"metric": "f1", "significance": {"confidence": 0.9}}
    strong = _train(store, churn, {"C": 10.0, "max_iter": 500},
                    RegistryContext(production=production, promotion=promotion, model="churn",
                                    description="Predicts churn for the retention team."), segments=["plan"])
    block = TrainingResult.model_validate(strong).evaluation
    assert block is not None
    assert block.dataDigest == churn["digest"] and block.rows == 120 and block.splitSeed == 42
    assert block.metric == "f1" and block.production is not None and block.production.version == 1
    # Production's numbers on these rows are those of the weak model on the same split (same data, same seed).
    assert block.production.metrics == pytest.approx(weak["metrics"])
    assert block.candidate == pytest.approx(strong["metrics"])
    assert block.difference == pytest.approx(strong["metrics"]["f1"] - weak["metrics"]["f1"])
    assert block.interval is not None and block.interval.against == "production"
    assert block.interval.confidence == 0.9 and block.interval.low <= block.difference <= block.interval.high
    # The baseline predicts the majority class of the training rows.
    y_test = _held_out_labels(store, churn)
    majority = pd.Series(_training_labels(store, churn)).mode()[0]
    assert block.baseline["accuracy"] == pytest.approx(accuracy_score(y_test, np.full(len(y_test), majority)))
    assert block.baseline["f1"] == pytest.approx(f1_score(y_test, np.full(len(y_test), majority), pos_label="yes",
                                                          zero_division=0))
    # Segments: every plan value (missing included) with its rows, for both models.
    assert block.segments is not None and sum(s.rows for s in block.segments) == 120
    assert {s.value for s in block.segments} >= {"basic", "plus", "pro"}
    assert all(s.production is not None for s in block.segments if s.rows >= 10)
    # The candidate's confusion matrix on the same rows: sklearn's, rows and columns in the model's class order.
    from sklearn.metrics import confusion_matrix

    from kultivar.workloads.artifact import load_model

    frame = _held_out_frame(store, churn)
    actual = frame.pop("churn").to_numpy(dtype=object)
    predicted = load_model(strong["artifact"]["uri"], strong["artifact"]["digest"], store).predict(frame)
    assert block.confusionMatrix is not None and block.confusionMatrix.labels == ["no", "yes"]
    assert block.confusionMatrix.counts == confusion_matrix(actual, predicted, labels=["no", "yes"]).tolist()
    assert block.residuals is None and block.omitted is None

    card = store.read_bytes(strong["cardUri"]).decode()
    assert strong["cardUri"].endswith("/card.md")
    assert "# Model card: churn" in card and "Predicts churn for the retention team." in card
    assert churn["digest"] in card and "`plan` (categorical)" in card
    assert "| Metric | This version | Baseline | production v1 |" in card
    assert "### f1 by segment" in card and "| plan | pro |" in card
    assert "## Promotion" in card and "90 % interval" in card
    assert "### Confusion matrix (rows: actual class, columns: predicted)" in card and "| | no | yes |" in card


def test_the_interval_matches_a_direct_bootstrap(store: ArtifactStore, churn: dict[str, Any]) -> None:
    weak = _train(store, churn, {"C": 0.0005, "max_iter": 500}, RegistryContext())
    production = ProductionRef(version=1, uri=weak["artifact"]["uri"], digest=weak["artifact"]["digest"])
    strong = _train(store, churn, {"C": 10.0, "max_iter": 500}, RegistryContext(production=production))
    block = TrainingResult.model_validate(strong).evaluation
    assert block is not None and block.interval is not None
    from kultivar.workloads.artifact import load_model

    frame = _held_out_frame(store, churn)
    y = frame.pop("churn").to_numpy(dtype=object)
    a = load_model(strong["artifact"]["uri"], strong["artifact"]["digest"], store).predict(frame)
    b = load_model(weak["artifact"]["uri"], weak["artifact"]["digest"], store).predict(frame)
    direct = paired_bootstrap_difference(y, a, b, "accuracy", n_resamples=2000, seed=42)
    assert (block.interval.low, block.interval.high) == pytest.approx((direct.low, direct.high))


def test_a_tampered_production_makes_the_comparison_impossible(store: ArtifactStore, churn: dict[str, Any]) -> None:
    weak = _train(store, churn, {"C": 0.0005, "max_iter": 500}, RegistryContext())
    tampered = ProductionRef(version=4, uri=weak["artifact"]["uri"], digest="sha256:" + "0" * 64)
    missing = ProductionRef(version=5, uri=weak["artifact"]["uri"] + ".gone", digest=weak["artifact"]["digest"])
    for ref, needle in [(tampered, "has digest"), (missing, "is missing")]:
        result = _train(store, churn, {"max_iter": 500}, RegistryContext(production=ref))
        block = result["evaluation"]
        assert "production" not in block and needle in block["productionError"]
        decision = gate(Promotion(), {"metric": "accuracy", "evaluation": block},
                        {"version": ref.version, "metrics": {}})
        assert decision.reason == "ComparisonFailed" and f"production v{ref.version}" in decision.message


def test_a_production_predicting_labels_of_another_type_is_not_compared(store: ArtifactStore,
                                                                          churn: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """The target went from text ("yes"/"no") to numbers (1/0): production's answers cannot even be sorted with
    the new labels. The comparison is impossible and says why, instead of failing the run."""
    weak = _train(store, churn, {"max_iter": 500}, RegistryContext())
    production = ProductionRef(version=6, uri=weak["artifact"]["uri"], digest=weak["artifact"]["digest"])
    frame = mixed_frame(600)
    numbers = validated_churn(store, frame.assign(churn=(frame["churn"] == "yes").astype(int)),
                              tmp_path / "churn-numbers.parquet", "churn-numbers")
    block = _train(store, numbers, {"max_iter": 500}, RegistryContext(production=production))["evaluation"]
    assert "production" not in block
    assert "production v6 predicts labels such as 'yes'" in block["productionError"], block["productionError"]
    assert "the target's values changed" in block["productionError"]


def _held_out_frame(store: ArtifactStore, data: dict[str, Any]) -> pd.DataFrame:
    """The held-out rows as training picks them (same snapshot, split and seed)."""
    from kultivar.workloads.canonical import as_features, coerce_frame
    from kultivar.workloads.snapshot import read_snapshot
    from kultivar.workloads.split import prepare_inputs

    features = as_features(data["features"])
    frame, _ = coerce_frame(read_snapshot(store, data["snapshotUri"]), features, "churn", "classification")
    spec = TrainingRunSpec.model_validate({"datasetRef": {"name": "d"}, "modelRef": {"name": "m"},
                                           "estimator": {"className": "sklearn.dummy.DummyClassifier"}})
    _, x_test, _, y_test, _ = prepare_inputs(frame, features, "churn", "classification", spec)
    return x_test.assign(churn=y_test)


def _held_out_labels(store: ArtifactStore, data: dict[str, Any]) -> np.ndarray:
    return _held_out_frame(store, data)["churn"].to_numpy(dtype=object)


def _training_labels(store: ArtifactStore, data: dict[str, Any]) -> np.ndarray:
    from kultivar.workloads.canonical import as_features, coerce_frame
    from kultivar.workloads.snapshot import read_snapshot
    from kultivar.workloads.split import prepare_inputs

    features = as_features(data["features"])
    frame, _ = coerce_frame(read_snapshot(store, data["snapshotUri"]), features, "churn", "classification")
    spec = TrainingRunSpec.model_validate({"datasetRef": {"name": "d"}, "modelRef": {"name": "m"},
                                           "estimator": {"className": "sklearn.dummy.DummyClassifier"}})
    return prepare_inputs(frame, features, "churn", "classification", spec)[2]


def test_every_version_is_scored_on_a_fixed_holdout(store: ArtifactStore, churn: dict[str, Any],
                                                   tmp_path: Any) -> None:
    from kultivar.api.contracts import HoldoutRef

    path = tmp_path / "frozen.parquet"
    frozen = mixed_frame(150)
    frozen.to_parquet(path, index=False)
    spec = DatasetSpec.model_validate({"source": {"uri": str(path)}, "schema": {
        "target": "churn", "task": "classification", "features": [
            {"name": "age", "type": "numeric", "nullable": True},
            {"name": "plan", "type": "categorical", "nullable": True},
            {"name": "member", "type": "boolean"}]}})
    validated = run_validation(spec, "ns", "frozen", store)
    assert validated["ok"], validated
    ref = HoldoutRef(name="frozen", snapshot=validated["snapshotUri"], digest=validated["digest"])
    weak = _train(store, churn, {"C": 0.0005, "max_iter": 500}, RegistryContext(holdout=ref))
    production = ProductionRef(version=1, uri=weak["artifact"]["uri"], digest=weak["artifact"]["digest"])
    strong = _train(store, churn, {"C": 10.0, "max_iter": 500}, RegistryContext(production=production, holdout=ref))
    for result in (weak, strong):
        block = result["evaluation"]
        assert (block["source"], block["dataset"], block["rows"]) == ("holdout", "frozen", 150)
        assert block["dataDigest"] == validated["digest"] and "splitSeed" not in block
    # The same rows for both versions: v1's holdout score as a candidate is its score as production later.
    assert strong["evaluation"]["production"]["metrics"] == pytest.approx(weak["evaluation"]["candidate"])
    decision = gate(Promotion(), {"metric": "accuracy", "evaluation": strong["evaluation"]},
                    {"version": 1, "metrics": {}})
    assert "held-out rows of holdout Dataset frozen (sha256:" in decision.message
    tampered = ref.model_copy(update={"digest": "sha256:" + "0" * 64})
    failed = run_training(TrainingRunSpec.model_validate({
        "datasetRef": {"name": "churn"}, "modelRef": {"name": "churn"},
        "estimator": {"className": "sklearn.linear_model.LogisticRegression"}}), churn["snapshotUri"],
        churn["digest"], None, "classification", "churn", churn["features"], "ns", "r", uuid.uuid4().hex, store,
        registry=RegistryContext(holdout=tampered))
    assert failed["ok"] is False and "re-validate holdout Dataset frozen" in failed["message"]


def test_the_evaluation_survives_the_termination_message_limit() -> None:
    from kultivar.api.contracts import decode_termination, encode_termination

    metrics = {m: 0.123456789 for m in ("accuracy", "f1", "precision", "recall", "roc_auc")}
    segments = [{"feature": "region", "value": f"value-{i}-" + "x" * 50, "rows": 1000 + i, "candidate": 0.9,
                 "production": 0.8} for i in range(24)]
    block = {**evaluation(0.9, 0.8, interval=(0.05, 0.15), segments=segments), "candidate": metrics,
             "baseline": metrics}
    result = TrainingResult(metric="accuracy", score=0.9, metrics=metrics, manifestUri="file:///s/" + "m" * 200,
                            artifact={"uri": "file:///s/" + "a" * 200, "digest": DIGEST, "sizeBytes": 1},
                            datasetDigest=DIGEST, evaluation=block, cardUri="file:///s/card.md")
    text = encode_termination(result)
    assert len(text.encode()) <= 4096
    decoded = TrainingResult.model_validate(decode_termination(text))
    assert decoded.evaluation is not None and decoded.evaluation.interval is not None
    assert decoded.evaluation.production is not None and decoded.evaluation.segments is None  # dropped first
    assert decoded.evaluation.omitted == ["segment table: left out of the termination message (4 KiB) to fit; it "
                                          "is in the model's manifest.json"]


@pytest.mark.parametrize("first, second", [
    ("xgboost.XGBClassifier", "sklearn.linear_model.LogisticRegression"),
    ("sklearn.linear_model.LogisticRegression", "xgboost.XGBClassifier"),
], ids=["xgboost-production", "xgboost-candidate"])
def test_a_model_fitted_on_class_indexes_is_compared_in_the_labels(store: ArtifactStore, churn: dict[str, Any],
                                                                    first: str, second: str) -> None:
    # XGBoost's classifiers are fitted on class indexes (labelsEncoded); on either side of the comparison their
    # predictions must be mapped back to the labels ("yes"/"no"), or one side would score as always wrong.
    params = {"n_estimators": 20, "max_depth": 2} if first.startswith("xgboost") else {"max_iter": 500}
    v1 = _train(store, churn, params, RegistryContext(model="churn"), first)
    production = ProductionRef(version=1, uri=v1["artifact"]["uri"], digest=v1["artifact"]["digest"])
    params = {"n_estimators": 20, "max_depth": 2} if second.startswith("xgboost") else {"max_iter": 500}
    v2 = _train(store, churn, params, RegistryContext(production=production, model="churn"), second)
    block = TrainingResult.model_validate(v2).evaluation
    assert block is not None and block.production is not None
    assert block.production.metrics == pytest.approx(v1["metrics"])
    assert block.candidate == pytest.approx(v2["metrics"])
    assert block.production.metrics["accuracy"] > 0.5 and block.candidate["accuracy"] > 0.5
    # the candidate's confusion matrix too is in the labels, and its diagonal is its accuracy
    matrix = block.confusionMatrix
    assert matrix is not None and matrix.labels == ["no", "yes"]
    rows = sum(map(sum, matrix.counts))
    assert rows == block.rows and (matrix.counts[0][0] + matrix.counts[1][1]) / rows == pytest.approx(
        block.candidate["accuracy"])
