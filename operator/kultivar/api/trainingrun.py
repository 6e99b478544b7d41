"""TrainingRun: train one model on one Dataset version inside a Kubernetes Job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from kultivar.api.common import (
    CONDITIONS_FIELD,
    ArtifactRef,
    Condition,
    FreeForm,
    KModel,
    LocalObjectReference,
    Metrics,
    ObjectName,
    ResourceRequirements,
)

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall")
REGRESSION_METRICS = ("r2", "rmse", "mae")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
Metric = Literal["accuracy", "f1", "roc_auc", "precision", "recall", "r2", "rmse", "mae"]
BOUNDED_METRICS = CLASSIFICATION_METRICS  # scores in [0, 1]
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
SPACE_VALUES_ARE_LISTS = "each value must be a non-empty list of candidate values, e.g. {C: [0.1, 1, 10]}"
# The held-out diagnostics a version records travel in the training pod's 4 KiB termination message: a confusion
# matrix of 20 classes (400 counts, about 1-2 KiB) still fits beside the rest of the result, and is about as many
# classes as an annotated heatmap can show legibly. More classes: the matrix is left out, with a note, and stays in
# the model's manifest.json.
CONFUSION_MATRIX_MAX_CLASSES = 20
RESIDUAL_BINS = 20  # bins of the residual histogram (numpy.histogram over the residuals' range)
MAX_OMITTED_NOTES = 8


class DatasetReference(KModel):
    """The Dataset to train on, optionally pinned to one version."""

    name: ObjectName = Field(description="Name of the Dataset in the same namespace.")
    digest: str | None = Field(
        default=None,
        description="Pin to this validated version (sha256:<hex>). Unset uses the Dataset's latest valid version.",
        pattern=r"^sha256:[a-f0-9]{64}$",
    )


class Estimator(KModel):
    """The scikit-learn estimator to fit, by import path."""

    className: str = Field(
        description="Import path of an estimator class, e.g. sklearn.linear_model.LogisticRegression.",
        min_length=3,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
    )
    params: FreeForm = Field(
        default_factory=dict, description="Constructor arguments of the estimator, e.g. {C: 0.5, max_iter: 500}."
    )


# Parameter name -> candidate values: the schema itself refuses a value that is not a non-empty list. The
# candidates stay free-form (numbers, strings, null, objects), which CEL could not see, so no CEL rule here.
SearchSpace = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "additionalProperties": {
        "type": "array", "minItems": 1,
        "items": {"nullable": True, "x-kubernetes-preserve-unknown-fields": True}}}),
]


class Search(KModel):
    """Hyperparameter search with cross-validation on the training split."""

    method: Literal["grid", "random"] = Field(default="grid", description="grid tries every combination; "
                                              "random samples `iterations` of them.")
    space: SearchSpace = Field(
        description="Candidate values per estimator parameter, e.g. {C: [0.1, 1, 10]}. Each value must be a "
                    "non-empty list.",
        json_schema_extra={"minProperties": 1, "maxProperties": 64},
    )
    cv: int = Field(default=3, ge=2, le=20, description="Number of cross-validation folds.")
    iterations: int = Field(default=10, ge=1, le=1000, description="Candidates sampled by the random method.")

    @field_validator("space")
    @classmethod
    def _values_are_lists(cls, space: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k, v in space.items() if not isinstance(v, list) or not v]
        if bad:
            raise ValueError(f"search.space {', '.join(bad)}: {SPACE_VALUES_ARE_LISTS}")
        return space



class Evaluation(KModel):
    """How the model is evaluated on data held out from training."""

    metric: Metric | None = Field(
        default=None,
        description="Headline metric reported in status and used by the Model's gate by default. Unset: "
                    "accuracy for classification, r2 for regression.",
    )
    testFraction: float = Field(default=0.2, ge=0.05, le=0.9, description="Share of rows held out for evaluation.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Random seed for the split and the estimator.")
    stratify: bool = Field(default=True, description="Keep class proportions in the split (classification only).")
    holdout: LocalObjectReference | None = Field(
        default=None,
        description="A second Dataset (same features and target) every version of the Model is also judged on: "
                    "the gate then compares candidate and production on this frozen set instead of the run's "
                    "held-out split, so scores are comparable across versions and data versions.",
    )
    segments: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=10,
        description="Categorical features of the Dataset whose values are segments: the gate metric is reported "
                    "per value for the candidate and production, and the Model's promotion.segmentMargin judges "
                    "them.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


def immutable(field: str) -> dict[str, Any]:
    """CEL transition rule: the field keeps the value it was created with."""
    message = f"{field} is immutable after creation; create a new TrainingRun instead"
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


HOLDOUT_IS_TRAINING_DATA = "evaluation.holdout must be another Dataset than datasetRef: rows the model trained on " \
                           "would be in the holdout"


class TrainingRunSpec(KModel):
    """Desired state of a TrainingRun."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.evaluation) || !has(self.evaluation.holdout) "
                 "|| self.evaluation.holdout.name != self.datasetRef.name",
         "message": HOLDOUT_IS_TRAINING_DATA, "fieldPath": ".evaluation.holdout"},
    ]})

    datasetRef: DatasetReference = Field(
        description="The Dataset to train on.",
        json_schema_extra=immutable("datasetRef"),
    )
    modelRef: LocalObjectReference = Field(
        description="The Model whose registry receives the trained version.",
        json_schema_extra=immutable("modelRef"),
    )
    estimator: Estimator = Field(description="The scikit-learn estimator to fit.")
    search: Search | None = Field(default=None, description="Optional hyperparameter search.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Evaluation split and metric.")
    resources: ResourceRequirements | None = Field(default=None, description="Resources of the training pod.")
    backoffLimit: int = Field(default=1, ge=0, le=10, description="Retries of the training pod before the run fails.")
    activeDeadlineSeconds: int = Field(
        default=3600, ge=30, le=7 * 86400, description="The run fails when training takes longer than this."
    )
    image: str | None = Field(
        default=None, max_length=512,
        description="Runtime image for the training pod. Unset uses the operator's configured runtime image.",
    )
    # Only values something sets: "schedule" was accepted and never used, so it is gone (no ignored fields).
    trigger: Literal["manual", "drift", "performance"] = Field(
        default="manual",
        description="Why the run exists: manual (a person or pipeline created it), drift or performance (the "
                    "Deployment's monitoring created it on drift or on live performance below its floor). Fixed at "
                    "creation.",
        json_schema_extra=immutable("trigger"),
    )

    @model_validator(mode="after")
    def _holdout_is_other_data(self) -> TrainingRunSpec:
        if self.evaluation.holdout is not None and self.evaluation.holdout.name == self.datasetRef.name:
            raise ValueError(HOLDOUT_IS_TRAINING_DATA)
        return self


class ComparedProduction(KModel):
    """The production version as scored on the candidate's held-out rows."""

    version: int = Field(ge=1, description="The production version compared with.")
    digest: str = Field(description="Digest of its model file, verified before it was loaded.")
    metrics: Metrics = Field(default_factory=dict, description="Its metrics on the same rows as the candidate.")


class DifferenceInterval(KModel):
    """Paired bootstrap interval of metric(candidate) - metric(other) on the same rows."""

    against: Literal["production", "baseline"] = Field(description="What the candidate is compared with.")
    metric: str = Field(description="The gate metric.")
    estimate: float = Field(description="The difference on all rows (negative is better for rmse and mae).")
    low: float | None = Field(default=None, description="Lower end of the interval.")
    high: float | None = Field(default=None, description="Upper end of the interval.")
    confidence: float = Field(description="Confidence of the interval, e.g. 0.95.")
    resamples: int = Field(description="Bootstrap resamples drawn.")
    seed: int = Field(description="Seed of the resampling (reproducible).")
    method: str = Field(description="How the interval was computed.")


class SegmentScore(KModel):
    """The gate metric on the held-out rows where one categorical feature has one value."""

    feature: str = Field(description="The segment feature.")
    value: str = Field(description="The feature's value (as text).")
    rows: int = Field(description="Held-out rows in the segment.")
    candidate: float | None = Field(default=None, description="The candidate's metric (unset: undefined here).")
    production: float | None = Field(default=None, description="Production's metric on the same rows.")


class ConfusionMatrix(KModel):
    """Held-out rows counted by actual class (rows) and predicted class (columns), as
    sklearn.metrics.confusion_matrix."""

    labels: list[Annotated[str, Field(max_length=256)]] = Field(
        max_length=CONFUSION_MATRIX_MAX_CLASSES,
        description="The classes as text (the labels' original values, e.g. 0, 1 or setosa), in the order of the "
                    f"rows and columns: the model's classes, then any other label of the rows. At most "
                    f"{CONFUSION_MATRIX_MAX_CLASSES}.")
    counts: list[Annotated[list[int], Field(max_length=CONFUSION_MATRIX_MAX_CLASSES)]] = Field(
        max_length=CONFUSION_MATRIX_MAX_CLASSES,
        description="counts[i][j]: held-out rows of class labels[i] predicted as labels[j].")


class ResidualHistogram(KModel):
    """Histogram of the held-out residuals (actual - predicted), as numpy.histogram."""

    edges: list[float] = Field(max_length=RESIDUAL_BINS + 1,
                               description="Bin edges, ascending: one more than the counts.")
    counts: list[int] = Field(max_length=RESIDUAL_BINS, description="Held-out rows per bin.")


class VersionEvaluation(KModel):
    """Candidate, production and a trivial baseline scored on the same held-out rows, by the training Job."""

    source: Literal["split", "holdout"] = Field(
        default="split", description="split: the run's held-out split; holdout: a fixed holdout Dataset.")
    dataset: str | None = Field(default=None, description="The holdout Dataset, when source is holdout.")
    dataDigest: str = Field(description="Digest of the data the rows come from.")
    rows: int = Field(description="Rows every model was scored on.")
    splitSeed: int | None = Field(default=None, description="Seed of the held-out split (source split).")
    metric: str = Field(description="The gate metric the difference and interval are computed on.")
    candidate: Metrics = Field(default_factory=dict, description="The new version's metrics.")
    baseline: Metrics = Field(default_factory=dict, description="The baseline's metrics.")
    baselineStrategy: str | None = Field(
        default=None, description="The baseline: a dummy estimator fitted on the same training rows.")
    production: ComparedProduction | None = Field(default=None, description="Production on the same rows.")
    productionError: str | None = Field(
        default=None, description="Why production could not be scored (then the version is not promoted).")
    difference: float | None = Field(default=None, description="candidate - production on the gate metric.")
    interval: DifferenceInterval | None = Field(default=None, description="Bootstrap interval of the difference.")
    segments: list[SegmentScore] | None = Field(default=None, description="The gate metric per segment.")
    confusionMatrix: ConfusionMatrix | None = Field(
        default=None, description="The candidate's confusion matrix on the held-out rows (classification).")
    residuals: ResidualHistogram | None = Field(
        default=None, description="The candidate's residuals on the held-out rows (regression).")
    omitted: list[Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=MAX_OMITTED_NOTES,
        description="What the training Job computed but left out of this record, and why (e.g. the confusion "
                    "matrix of more classes than fit).")


class TrainingRunStatus(KModel):
    """Observed state of a TrainingRun."""

    observedGeneration: int | None = Field(default=None, description="The generation last reconciled.")
    conditions: list[Condition] = CONDITIONS_FIELD
    jobName: str | None = Field(default=None, description="The training Job of the current attempt.")
    startTime: str | None = Field(default=None, description="When the training Job started.",
                                  json_schema_extra={"format": "date-time"})
    completionTime: str | None = Field(default=None, description="When the run succeeded or failed.",
                                       json_schema_extra={"format": "date-time"})
    datasetDigest: str | None = Field(default=None, description="The Dataset version trained on.")
    metric: str | None = Field(default=None, description="Name of the headline metric.")
    score: float | None = Field(default=None, description="Value of the headline metric on the held-out split.")
    metrics: Metrics | None = Field(default=None, description="All evaluation metrics on the held-out split.")
    bestParams: FreeForm | None = Field(default=None, description="Parameters chosen by the search, if any.")
    artifact: ArtifactRef | None = Field(default=None, description="The saved model (skops format).")
    manifestUri: str | None = Field(
        default=None, description="Manifest next to the model: feature names and types, classes, versions, metrics."
    )
    evaluation: VersionEvaluation | None = Field(
        default=None, description="Candidate, production and baseline on the same held-out rows.")
    cardUri: str | None = Field(default=None, description="The model card (Markdown) beside the artifact.")
    compiledArtifact: ArtifactRef | None = Field(
        default=None, description="The compiled model (ONNX) and its sha256, when training proved it answers like "
                                  "the saved model; unset when it was not compiled (the manifest says why).")
    modelVersion: int | None = Field(default=None, description="The version registered in the Model.")
    attempts: int | None = Field(default=None, description="Pods the Job started (1 plus retries).")
    specAttempt: int | None = Field(
        default=None, description="The spec generation the current Job trains; a fixed spec starts a new Job."
    )
