"""TrainingRun: train one model on one Dataset version inside a Kubernetes Job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator

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


def immutable(field: str) -> dict[str, Any]:
    """CEL transition rule: the field keeps the value it was created with."""
    message = f"{field} is immutable after creation; create a new TrainingRun instead"
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


class TrainingRunSpec(KModel):
    """Desired state of a TrainingRun."""

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
    modelVersion: int | None = Field(default=None, description="The version registered in the Model.")
    attempts: int | None = Field(default=None, description="Pods the Job started (1 plus retries).")
    specAttempt: int | None = Field(
        default=None, description="The spec generation the current Job trains; a fixed spec starts a new Job."
    )
