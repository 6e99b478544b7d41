"""Model: the registry of immutable, numbered versions and the gate that picks production."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from kultivar.api.common import CONDITIONS_FIELD, ArtifactRef, Condition, KModel, Metrics, cel_list
from kultivar.api.trainingrun import BOUNDED_METRICS, LOWER_IS_BETTER, Metric, VersionEvaluation

MINIMUM_IN_RANGE = "must be between 0 and 1 for accuracy, f1, precision, recall and roc_auc"


class Significance(KModel):
    """Require a significant improvement before promoting."""

    confidence: float = Field(
        default=0.95, ge=0.5, le=0.999,
        description="Confidence of the paired bootstrap interval of candidate minus production, e.g. 0.95.",
    )


class Promotion(KModel):
    """The gate a new version must pass to become production."""

    policy: Literal["Automatic", "Manual"] = Field(
        default="Automatic",
        description="Automatic promotes every version that passes the gate; Manual serves spec.production only.",
    )
    metric: Metric | None = Field(
        default=None, description="Metric the gate compares. Unset uses each run's headline metric."
    )
    minimum: float | None = Field(
        default=None,
        description="Absolute bar on the metric (a maximum for error metrics such as rmse and mae). With an explicit "
                    "metric it must be reachable: within [0, 1] for accuracy, f1, precision, recall and roc_auc, at "
                    "most 1 for r2, at least 0 for rmse and mae.",
    )
    minImprovement: float = Field(
        default=0.0, ge=0.0,
        description="How much a version must beat the current production version on the metric to replace it "
                    "(both scored on the same held-out rows). An exact tie never counts as an improvement.",
    )
    significance: Significance | None = Field(
        default=None,
        description="Also require the improvement to be significant: the paired bootstrap interval of candidate "
                    "minus production on the same held-out rows must lie entirely on the better side of "
                    "minImprovement. Unset: the point estimate decides.",
    )
    segmentMargin: float | None = Field(
        default=None, ge=0.0,
        description="Refuse a version that is worse than production by more than this (in the metric's units) "
                    "in any segment (TrainingRun spec.evaluation.segments) with at least segmentMinRows held-out "
                    "rows. Unset: segments are reported, not judged.",
    )
    segmentMinRows: int = Field(
        default=30, ge=1, le=1_000_000,
        description="Segments with fewer held-out rows than this are reported but not judged by segmentMargin.",
    )

    # Only with an explicit metric: unset, the bar applies to each run's headline metric, unknown at apply time.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"!has(self.minimum) || !has(self.metric) || !(self.metric in {cel_list(BOUNDED_METRICS)}) "
                 "|| (self.minimum >= 0.0 && self.minimum <= 1.0)",
         "message": MINIMUM_IN_RANGE, "fieldPath": ".minimum"},
        {"rule": "!has(self.minimum) || !has(self.metric) || self.metric != 'r2' || self.minimum <= 1.0",
         "message": "must be at most 1 for r2", "fieldPath": ".minimum"},
        {"rule": f"!has(self.minimum) || !has(self.metric) || !(self.metric in {cel_list(sorted(LOWER_IS_BETTER))}) "
                 "|| self.minimum >= 0.0",
         "message": "must be at least 0 for rmse and mae (it is their maximum)", "fieldPath": ".minimum"},
    ]})

    @model_validator(mode="after")
    def _minimum_reachable(self) -> Promotion:
        low, high = metric_range(self.metric)
        if self.minimum is not None and not low <= self.minimum <= high:
            raise ValueError(f"minimum {self.minimum:g} can never be met by {self.metric}: it must lie in "
                             f"[{low:g}, {high:g}]")
        return self


def metric_range(metric: str | None) -> tuple[float, float]:
    """The values a metric can take (unbounded for an unknown metric)."""
    if metric in BOUNDED_METRICS:
        return 0.0, 1.0
    if metric == "r2":
        return float("-inf"), 1.0
    if metric in LOWER_IS_BETTER:
        return 0.0, float("inf")
    return float("-inf"), float("inf")


class Retention(KModel):
    """How many versions the registry keeps."""

    keepVersions: int = Field(
        default=20, ge=1, le=1000,
        description="Newest versions to keep; older ones are removed from status and the artifact store, "
                    "except the production version and versions a Deployment serves.",
    )


class ModelSpec(KModel):
    """Desired state of a Model."""

    description: str | None = Field(default=None, max_length=4096, description="What the model is for.")
    promotion: Promotion = Field(default_factory=Promotion, description="The promotion gate.")
    production: int | None = Field(
        default=None, ge=1,
        description="Version to serve as production under the Manual policy (pinned from Git).",
    )
    retention: Retention = Field(default_factory=Retention, description="Version retention.")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.production) || self.promotion.policy == 'Manual'",
         "message": "production can only be pinned with promotion.policy: Manual", "fieldPath": ".production"},
    ]})


class GateResult(KModel):
    """What the promotion gate decided for a version."""

    passed: bool = Field(description="Whether the version passed the gate.")
    reason: str = Field(description="CamelCase reason, e.g. Promoted, BelowMinimum, NoImprovement.")
    message: str = Field(default="", description="The comparison that decided it.")


class ModelVersion(KModel):
    """One immutable registered version."""

    version: int = Field(ge=1, description="Version number, allocated in order.")
    trainingRun: str = Field(description="The TrainingRun that produced it.")
    trainingRunUid: str | None = Field(default=None, description="UID of that TrainingRun.")
    datasetDigest: str = Field(description="Digest of the Dataset version it was trained on.")
    dataset: str | None = Field(default=None, description="Name of that Dataset.")
    artifact: ArtifactRef = Field(description="The model file (skops) and its digest.")
    manifestUri: str | None = Field(default=None, description="The model's manifest (features, classes, metrics).")
    compiledArtifact: ArtifactRef | None = Field(
        default=None, description="The compiled model (ONNX) and its sha256; serving runs it only when the file has "
                                  "this digest, else the skops file answers (Event CompiledModelRejected).")
    profileUri: str | None = Field(default=None, description="Reference profile of the training data (drift).")
    metric: str | None = Field(default=None, description="Headline metric name.")
    metrics: Metrics = Field(default_factory=dict, description="Evaluation metrics.")
    image: str | None = Field(default=None, description="Runtime image that trained it.")
    createdAt: str = Field(description="When it was registered (RFC 3339).", json_schema_extra={"format": "date-time"})
    gate: GateResult | None = Field(default=None, description="The promotion gate's decision.")
    evaluation: VersionEvaluation | None = Field(
        default=None, description="Candidate, production and baseline on the same held-out rows.")
    cardUri: str | None = Field(default=None, description="The model card (Markdown) beside the artifact.")
    rolledBack: bool | None = Field(default=None, description="A canary of this version was rolled back.")
    rollbackReason: str | None = Field(default=None, description="Why its canary was rolled back.")


class RetiredVersion(KModel):
    """A version removed by retention whose artifacts a cleanup Job is deleting."""

    version: int = Field(description="The retired version.")
    artifactUri: str = Field(description="Its model file; the directory holding it is deleted.")
    job: str = Field(description="The cleanup Job.")


class HistoryEntry(KModel):
    """One thing that happened to the Model."""

    time: str = Field(description="When it happened (RFC 3339).", json_schema_extra={"format": "date-time"})
    type: Literal["Registered", "Promoted", "Pinned", "RolledBack", "TrainingStarted"] = Field(
        description="What happened: a version registered, promoted by the gate, pinned as production, rolled back "
                    "by a failed canary, or a TrainingRun for this Model started.")
    version: int | None = Field(default=None, description="The version it concerns.")
    trainingRun: str | None = Field(default=None, description="The TrainingRun it concerns.")
    reason: str = Field(default="", max_length=1024, description="Why, in words.")
    actor: str = Field(default="operator", max_length=256,
                       description="Who caused it: operator, or the field manager of the user's change "
                                   "(e.g. kubectl-kultivar, kubectl-client-side-apply, argocd-controller).")


class ModelStatus(KModel):
    """Observed state of a Model."""

    observedGeneration: int | None = Field(default=None, description="The generation last reconciled.")
    conditions: list[Condition] = CONDITIONS_FIELD
    latestVersion: int | None = Field(default=None, description="Highest version number allocated.")
    productionVersion: int | None = Field(default=None, description="Version currently serving as production.")
    productionMetric: float | None = Field(default=None, description="Gate metric of the production version.")
    versions: list[ModelVersion] = Field(
        default_factory=list,
        description="Registered versions, oldest first.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"]},
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, description="What happened to the Model, oldest first; the newest 50 are kept.",
        json_schema_extra={"maxItems": 50},
    )
    retiring: list[RetiredVersion] = Field(
        default_factory=list, description="Versions removed by retention whose artifacts are being deleted."
    )
