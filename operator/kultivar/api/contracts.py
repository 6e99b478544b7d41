"""What crosses the process boundary between the operator and its pods, defined once for both sides.

* :class:`ValidationInput`, :class:`TrainingInput`: what a workload pod is given, as ``KULTIVAR_*`` environment
  variables (the operator calls :meth:`WorkloadInput.to_env` when it plans the Job, the pod
  :meth:`WorkloadInput.from_env`).
* :class:`ValidationResult`, :class:`TrainingResult`, :class:`FailureResult`: what a pod reports back in its
  termination message, written with :func:`encode_termination` and read with :func:`decode_termination`.
* :class:`ModelManifest`: ``manifest.json`` beside a trained model, written by training and read by serving.

Every model ignores fields it does not know (``extra="ignore"``): an operator and a pod of different Kultivar
versions, or a server loading a manifest written by a newer trainer, still understand each other. The field names
are the wire format; renaming one breaks artifacts and pods already out there.

The termination message is capped at 4096 bytes by the kubelet. :func:`encode_termination` makes a result fit by
dropping optional bulky fields first and shortening the message last. With ``terminationMessagePolicy:
FallbackToLogsOnError`` a pod that wrote no message gets the tail of its log instead; the workload CLI prints the
result as its last log line, so :func:`decode_termination` takes the last line that is a result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FeatureType = Literal["numeric", "categorical", "boolean"]
Task = Literal["classification", "regression"]

# Top-level packages estimators may come from, by default. The chart value operator.estimatorPackages replaces it:
# the operator refuses other packages before a Job is spent, passes the list to the training pod (TrainingInput),
# and the pod imports and saves only estimators from these packages (plus numpy and scipy types in the file).
# XGBoost and LightGBM (their scikit-learn APIs) are in the runtime image (the `boosting` extra) and saved as safely
# as scikit-learn (see kultivar.workloads.artifact), so they are permitted by default.
DEFAULT_ESTIMATOR_PACKAGES: tuple[str, ...] = ("sklearn", "xgboost", "lightgbm")
ESTIMATOR_PACKAGES_SETTING = "operator.estimatorPackages"


def estimator_not_allowed(class_path: str, packages: Sequence[str]) -> str | None:
    """Why ``class_path`` may not be used (its package is not permitted), or None. Reason: EstimatorNotAllowed."""
    package = class_path.split(".", 1)[0]
    if package in packages:
        return None
    return (f"{class_path} comes from the package {package!r}, which is not permitted: estimators may come from "
            f"{', '.join(packages) or 'no package'} (the chart value {ESTIMATOR_PACKAGES_SETTING}); use e.g. "
            "sklearn.ensemble.RandomForestClassifier, or ask the cluster admin to add the package to that value "
            "and to the runtime image")


class Contract(BaseModel):
    """A payload between processes: unknown fields are ignored so either side may be the newer one."""

    model_config = ConfigDict(extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)


class ContractError(ValueError):
    """A payload that does not match its contract; the message names the environment variable or field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# ------------------------------------------------------------------------------------------------ inputs


class FeatureRef(Contract):
    """A feature column as the pods are told about it."""

    name: str = Field(min_length=1)
    type: FeatureType


class TrainingFeature(FeatureRef):
    """A feature as the training pod is told about it, with what its manifest records for the server."""

    allowed: list[str] | None = Field(
        default=None, description="Categorical: the Dataset schema's allowed values (unset: none declared).")
    missingTokens: list[str] | None = Field(
        default=None,
        description="Categorical: the texts the Dataset's reader took as missing values in this column (a CSV's "
                    "'None', 'nan', 'NA', '' ...; empty for Parquet and JSON lines, where a text is a category).")


class EnvContract(Contract):
    """A pod's input carried in environment variables. ``ENV`` maps each field to its variable."""

    ENV: ClassVar[dict[str, str]] = {}
    # Fields carried as JSON text, and lists carried as comma-separated words; the rest are plain text.
    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset()
    CSV_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def to_env(self) -> dict[str, str]:
        """The environment variables of the Job's container (``HOME`` included: the root filesystem is read-only)."""
        env = {"HOME": "/tmp"}
        for field, variable in self.ENV.items():
            value = getattr(self, field)
            if value is None:
                continue
            if field in self.JSON_FIELDS:
                env[variable] = json.dumps(_plain(value), sort_keys=field == "spec")
            elif field in self.CSV_FIELDS:
                env[variable] = ",".join(value)
            else:
                env[variable] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str], overrides: Mapping[str, str | None] | None = None) -> Self:
        """Parse the environment; ``overrides`` (by field name, e.g. from command-line flags) win over it."""
        raw: dict[str, Any] = {}
        for field, variable in cls.ENV.items():
            text = (overrides or {}).get(field) or environ.get(variable)
            if not text:
                if cls.model_fields[field].is_required():
                    raise ContractError(f"missing input: set the {variable} environment variable", field)
                continue
            if field in cls.JSON_FIELDS:
                try:
                    raw[field] = json.loads(text)
                except ValueError as e:
                    raise ContractError(f"{variable} is not valid JSON: {e}", field) from e
            elif field in cls.CSV_FIELDS:
                raw[field] = tuple(p.strip() for p in text.split(",") if p.strip())
            else:
                raw[field] = text
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            errors = e.errors()
            problems = "; ".join(f"{cls._where(err['loc'])}: {err['msg']}" for err in errors[:5])
            first = errors[0]["loc"]
            raise ContractError(f"invalid input: {problems}", str(first[0]) if first else None) from e

    @classmethod
    def _where(cls, loc: tuple[int | str, ...]) -> str:
        """A validation error's location in the variables' terms, e.g. ``KULTIVAR_FEATURES[0].type``."""
        if not loc:
            return cls.__name__
        head = cls.ENV.get(str(loc[0]), str(loc[0]))
        return head + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])


class WorkloadInput(EnvContract):
    """What every dataset and training pod is given."""

    ENV: ClassVar[dict[str, str]] = {
        "spec": "KULTIVAR_SPEC",
        "namespace": "KULTIVAR_NAMESPACE",
        "name": "KULTIVAR_NAME",
        "store": "KULTIVAR_STORE",
    }
    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset({"spec"})

    spec: dict[str, Any] = Field(description="The resource's spec as the user wrote it.")
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    store: str = Field(min_length=1, description="Base URL of the artifact store.")


class ValidationInput(WorkloadInput):
    """``kultivar validate-dataset``: validate a Dataset's source and snapshot it."""


class ProductionRef(Contract):
    """The Model's production version when the run started: the pod scores it on the candidate's held-out rows."""

    version: int = Field(ge=1)
    uri: str = Field(min_length=1, description="Its model file.")
    digest: str = Field(min_length=1, description="The digest it was registered with; checked before loading.")


class HoldoutRef(Contract):
    """A fixed holdout Dataset's validated version: every model is scored on it."""

    name: str = Field(min_length=1, description="The holdout Dataset.")
    snapshot: str = Field(min_length=1, description="URI of its snapshot.")
    digest: str = Field(min_length=1, description="Digest the snapshot must have.")


class TrainingInput(WorkloadInput):
    """``kultivar train``: train a TrainingRun's model on one validated version of its Dataset."""

    ENV: ClassVar[dict[str, str]] = {
        **WorkloadInput.ENV,
        "uid": "KULTIVAR_UID",
        "dataset_snapshot": "KULTIVAR_DATASET_SNAPSHOT",
        "dataset_digest": "KULTIVAR_DATASET_DIGEST",
        "profile_uri": "KULTIVAR_PROFILE_URI",
        "task": "KULTIVAR_TASK",
        "target": "KULTIVAR_TARGET",
        "features": "KULTIVAR_FEATURES",
        "estimator_packages": "KULTIVAR_ESTIMATOR_PACKAGES",
        "production": "KULTIVAR_PRODUCTION",
        "promotion": "KULTIVAR_PROMOTION",
        "model": "KULTIVAR_MODEL",
        "model_description": "KULTIVAR_MODEL_DESCRIPTION",
        "holdout": "KULTIVAR_HOLDOUT",
    }
    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset({"spec", "features", "production", "promotion", "holdout"})
    CSV_FIELDS: ClassVar[frozenset[str]] = frozenset({"estimator_packages"})

    uid: str = Field(min_length=1, description="UID of the TrainingRun: its artifacts' directory is keyed by it.")
    dataset_snapshot: str = Field(min_length=1, description="URI of the dataset version's snapshot.")
    dataset_digest: str = Field(min_length=1, description="Digest the snapshot must have.")
    profile_uri: str | None = Field(default=None, description="Reference profile of the dataset version.")
    task: Task
    target: str = Field(min_length=1)
    features: list[TrainingFeature] = Field(min_length=1)
    estimator_packages: tuple[str, ...] = Field(
        default=DEFAULT_ESTIMATOR_PACKAGES,
        description="Top-level packages estimators may come from (the chart value operator.estimatorPackages).")
    production: ProductionRef | None = Field(
        default=None, description="The Model's production version to compare with on the same rows (none: first).")
    promotion: dict[str, Any] | None = Field(
        default=None, description="The Model's spec.promotion: the gate metric and the confidence of the interval.")
    model: str | None = Field(default=None, description="The Model's name (the model card's title).")
    model_description: str | None = Field(default=None, description="The Model's spec.description (the card).")
    holdout: HoldoutRef | None = Field(default=None, description="spec.evaluation.holdout's validated version.")


class RetentionInput(EnvContract):
    """``kultivar delete-artifacts``: delete the directories of retired model versions' artifacts."""

    ENV: ClassVar[dict[str, str]] = {
        "store": "KULTIVAR_STORE",
        "delete": "KULTIVAR_DELETE",
        "namespace": "KULTIVAR_NAMESPACE",
        "name": "KULTIVAR_NAME",
    }
    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset({"delete"})

    store: str = Field(min_length=1)
    delete: list[str] = Field(default_factory=list, description="Artifact URIs whose directories go.")
    namespace: str | None = Field(default=None, description="The Model's namespace (for the log).")
    name: str | None = Field(default=None, description="The Model's name (for the log).")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)  # unset optional fields stay out of the variable
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------- results


class FailureResult(Contract):
    """A workload that could not do its job; ``retryable`` tells whether another attempt may help."""

    ok: Literal[False] = False
    reason: str = "Failed"
    message: str = ""
    check: str | None = Field(default=None, description="The first failed data check (validation).")
    retryable: bool = False
    failures: list[dict[str, Any]] | None = Field(default=None, description="Every failed check (droppable).")


class FeatureSummary(FeatureRef):
    missingFraction: float = 0.0


class ValidationResult(Contract):
    ok: Literal[True] = True
    digest: str
    rows: int
    columns: int | None = None
    snapshotUri: str
    profileUri: str
    features: list[FeatureSummary] | None = None
    timings: dict[str, float] | None = None


class ArtifactRef(Contract):
    uri: str
    digest: str
    sizeBytes: int


class ComparedProductionResult(Contract):
    version: int
    digest: str
    metrics: dict[str, float] = Field(default_factory=dict)


class DifferenceIntervalResult(Contract):
    against: Literal["production", "baseline"]
    metric: str
    estimate: float
    low: float | None = None
    high: float | None = None
    confidence: float
    resamples: int
    seed: int
    method: str


class SegmentScoreResult(Contract):
    feature: str
    value: str
    rows: int
    candidate: float | None = None
    production: float | None = None


class ConfusionMatrixResult(Contract):
    """:class:`kultivar.api.trainingrun.ConfusionMatrix` on the wire."""

    labels: list[str]
    counts: list[list[int]]


class ResidualHistogramResult(Contract):
    """:class:`kultivar.api.trainingrun.ResidualHistogram` on the wire."""

    edges: list[float]
    counts: list[int]


class EvaluationResult(Contract):
    """Candidate, production and baseline on the same rows: the Model's ``status.versions[].evaluation``
    (:class:`kultivar.api.trainingrun.VersionEvaluation` is its schema in the CRDs)."""

    source: Literal["split", "holdout"] = "split"
    dataset: str | None = None
    dataDigest: str
    rows: int
    splitSeed: int | None = None
    metric: str
    candidate: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, float] = Field(default_factory=dict)
    baselineStrategy: str | None = None
    production: ComparedProductionResult | None = None
    productionError: str | None = None
    difference: float | None = None
    interval: DifferenceIntervalResult | None = None
    segments: list[SegmentScoreResult] | None = None
    confusionMatrix: ConfusionMatrixResult | None = None
    residuals: ResidualHistogramResult | None = None
    omitted: list[str] | None = None


class TrainingResult(Contract):
    ok: Literal[True] = True
    metric: str
    score: float | None = None
    metrics: dict[str, float] | None = None
    artifact: ArtifactRef
    manifestUri: str
    datasetDigest: str
    bestParams: dict[str, Any] | None = None
    sklearnVersion: str | None = None
    adopted: bool | None = Field(default=None, description="A retried pod found a finished attempt and reports it.")
    evaluation: EvaluationResult | None = None
    cardUri: str | None = Field(default=None, description="The model card beside the artifact.")
    compiledArtifact: ArtifactRef | None = Field(
        default=None, description="The compiled model (model.onnx) and its sha256, when it passed the parity check.")
    timings: dict[str, float] | None = None
    warnings: list[str] | None = None


class RetentionResult(Contract):
    ok: Literal[True] = True
    deleted: int = 0


Success = TypeVar("Success", bound=Contract)


def success(model: type[Success], result: Mapping[str, Any] | None) -> Success | None:
    """The successful result of the given kind, or None when the pod failed or reported something else."""
    if not result or result.get("ok") is not True:
        return None
    try:
        return model.model_validate(result)
    except ValidationError:
        return None


def failure(result: Mapping[str, Any] | None) -> FailureResult | None:
    """The failure a pod reported, or None when it reported none (or succeeded)."""
    if not result or result.get("ok") is not False:
        return None
    try:
        return FailureResult.model_validate(result)
    except ValidationError:
        return FailureResult(message=str(result.get("message") or ""))


# ------------------------------------------------------------------------------------ termination codec

TERMINATION_LIMIT = 4096
# Dropped in this order until the message fits; the essential fields (ok, reason, digest, uris, score) stay. A dotted
# name is a field of the evaluation: its held-out diagnostics (drawn by the report, kept in manifest.json) go before
# the version's metrics, and its segment table, which the gate judges, goes last.
DROPPABLE = ("features", "bestParams", "failures", "warnings", "timings", "evaluation.confusionMatrix",
             "evaluation.residuals", "metrics", "evaluation.segments")
DROPPED_NOTE = "{what}: left out of the termination message (4 KiB) to fit; it is in the model's manifest.json"
DROPPED_NAMES = {"confusionMatrix": "confusion matrix", "residuals": "residual histogram",
                 "segments": "segment table"}
ESSENTIAL_OK = ("ok", "digest", "rows", "columns", "snapshotUri", "profileUri", "metric", "score", "artifact",
                "manifestUri", "datasetDigest", "sklearnVersion", "adopted", "evaluation", "cardUri")
ESSENTIAL_FAIL = ("ok", "reason", "check", "retryable")
ELLIPSIS = "…"
CRASH_TAIL_CHARS = 2000


def _clean(value: Any) -> Any:
    # json.dumps would write NaN/Infinity, which is not JSON; the operator's parser would reject the message.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _dump(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    budget = max(0, max_bytes - len(ELLIPSIS.encode()))
    return data[:budget].decode(errors="ignore") + ELLIPSIS


def _without(out: dict[str, Any], key: str) -> bool:
    """Drop one DROPPABLE field from ``out`` (in place); whether it was there. A dropped part of the evaluation is
    named in its ``omitted`` notes, so the record says what is missing rather than silently lacking it."""
    if "." not in key:
        return out.pop(key, None) is not None
    _, field = key.split(".", 1)
    evaluation = out.get("evaluation")
    if not isinstance(evaluation, dict) or evaluation.get(field) is None:
        return False
    notes = [*(evaluation.get("omitted") or []), DROPPED_NOTE.format(what=DROPPED_NAMES.get(field, field))]
    out["evaluation"] = {**{k: v for k, v in evaluation.items() if k != field}, "omitted": notes}
    return True


def encode_termination(result: Contract | Mapping[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """Compact JSON of ``result`` no longer than ``limit`` bytes (UTF-8)."""
    out = _clean(result.wire() if isinstance(result, Contract) else dict(result))
    data = _dump(out)
    for key in DROPPABLE:
        if len(data) <= limit:
            break
        if _without(out, key):
            data = _dump(out)
    if len(data) > limit and isinstance(out.get("message"), str):
        excess = len(data) - limit
        message_bytes = len(out["message"].encode())
        out["message"] = _truncate_utf8(out["message"], max(0, message_bytes - excess - 8))
        data = _dump(out)
        while len(data) > limit and out["message"]:
            out["message"] = _truncate_utf8(out["message"], len(out["message"].encode()) // 2)
            data = _dump(out)
    if len(data) > limit:
        # Something unexpected is huge (e.g. a very long URI): keep only what the operator cannot do without.
        keep = ESSENTIAL_OK if out.get("ok") else ESSENTIAL_FAIL
        out = {k: out[k] for k in keep if k in out}
        out["message"] = "result truncated to fit the termination message; see the pod log"
        data = _dump(out)
    if len(data) > limit:
        out = {"ok": bool(out.get("ok")), "reason": "ResultTooLarge",
               "message": "the result did not fit in the termination message; see the pod log"}
        data = _dump(out)
    return data.decode()


def _parse(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(value, dict) and isinstance(value.get("ok"), bool)):
        return None
    if not value["ok"]:
        value.setdefault("reason", "Failed")
        value.setdefault("message", "")
    return value


def decode_termination(text: str | None) -> dict[str, Any] | None:
    """The result a pod reported (a dict with a boolean ``ok``); None when it left no message at all.

    Text that holds no result (a crash before the workload reported, e.g. a traceback in the log tail) gives
    ``{"ok": False, "reason": "WorkloadCrashed", ...}`` with the end of that text as the message.
    """
    raw = (text or "").strip()
    if not raw:
        return None
    value = _parse(raw)
    if value is not None:
        return value
    # With FallbackToLogsOnError the text is the log tail; the CLI prints the result as its last line.
    for line in reversed(raw.splitlines()):
        line = line.strip()
        if line.startswith("{") and (value := _parse(line)) is not None:
            return value
    return {"ok": False, "reason": "WorkloadCrashed",
            "message": f"the pod did not report a result; the end of its output was: {raw[-CRASH_TAIL_CHARS:]}"}


# ---------------------------------------------------------------------------------------- model manifest

MANIFEST_FORMAT = "kultivar.io/model-manifest/v1"


class ManifestFeature(TrainingFeature):
    """A model input: its column, the dtype the pipeline takes it in and, for a categorical feature, which values
    the server may refuse (``allowed``) and which texts it reads as missing (``missingTokens``).

    ``missingTokens`` unset (a manifest written before Kultivar recorded it): the server keeps every text as a
    category, as it always did. ``allowed`` unset: the Dataset declared none (or the manifest predates it), so
    ``spec.serving.unknownCategories: Refuse`` has nothing to check for this feature.
    """

    dtype: Literal["float64", "string"] | None = None


class CompiledInput(Contract):
    feature: str = Field(description="The feature this graph input carries.")
    name: str = Field(description="The graph input's name (skl2onnx sanitises names, e.g. spaces to '_').")


class CompiledModel(Contract):
    """The model's ONNX twin (``model.onnx``, see kultivar.workloads.compile), or why there is none."""

    compiled: bool = Field(description="True when model.onnx exists and passed the parity check.")
    reason: str | None = Field(default=None, description="Why the model was not compiled.")
    format: Literal["onnx"] | None = None
    artifact: ArtifactRef | None = Field(default=None, description="model.onnx and its sha256; the server runs "
                                                                   "it only when the digest matches.")
    tolerances: dict[str, float] = Field(default_factory=dict,
                                         description="probabilityAbsolute and regressionRelative parity bounds.")
    parity: dict[str, float] = Field(default_factory=dict,
                                     description="What the check measured: the held-out rows and the "
                                                 "training rows it compared (rows, trainingRows) and the worst "
                                                 "difference on either (labelsDiffering, maxProbabilityError or "
                                                 "maxRelativeError).")
    inputs: list[CompiledInput] = Field(default_factory=list, description="Graph inputs in feature order.")
    probabilities: bool | None = Field(default=None, description="The 'probabilities' output holds the "
                                                                 "classifier's predict_proba.")
    versions: dict[str, str] = Field(default_factory=dict, description="skl2onnx, onnx and onnxruntime versions.")


class ModelManifest(Contract):
    """``manifest.json``, written last beside ``model.skops``: what the model takes, what it scored, its lineage.

    Serving needs ``artifact``, ``task`` and ``features``; the rest is lineage and defaults to unset so that
    manifests of any earlier version still load.
    """

    format: str = MANIFEST_FORMAT
    createdAt: str | None = None
    artifact: ArtifactRef
    sha256: str | None = None
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    bestParams: dict[str, Any] | None = None
    task: Task
    target: str | None = None
    features: list[ManifestFeature] = Field(min_length=1)
    classes: list[Any] | None = None
    labelsEncoded: bool = Field(
        default=False,
        description="The estimator was fitted on class indexes (XGBoost's classifiers take no other labels): it "
                    "predicts the position of the class in `classes`, which the server answers with.",
    )
    metric: str | None = None
    score: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    datasetDigest: str | None = None
    datasetSnapshotUri: str | None = None
    profileUri: str | None = None
    trainRows: int | None = None
    testRows: int | None = None
    seed: int | None = None
    sklearnVersion: str | None = None
    skopsVersion: str | None = None
    numpyVersion: str | None = None
    pythonVersion: str | None = None
    evaluation: EvaluationResult | None = Field(
        default=None, description="Candidate, production and baseline on the same rows (see TrainingResult).")
    cardUri: str | None = None
    trustedTypes: list[str] = Field(
        default_factory=list,
        description="Types outside skops' defaults the model file holds, each from an allowed package; loading "
                    "trusts exactly these.")
    compiled: CompiledModel | None = Field(default=None, description="The ONNX twin of the model, or why none.")

    def to_json(self) -> bytes:
        # Every field, unset ones as null: the file is read by people as well as by the server.
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ModelManifest:
        """Parse a manifest; raises ContractError naming the first wrong fields."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
                                 for err in e.errors()[:3])
            raise ContractError(problems) from e

    def training_result(self, manifest_uri: str) -> TrainingResult:
        """The result a finished training reports (also what a retried pod reports when it finds this manifest)."""
        if self.metric is None or self.datasetDigest is None:
            raise ContractError("the manifest has no metric or datasetDigest; it was not written by `kultivar train`")
        return TrainingResult(
            metric=self.metric, score=self.score, metrics=self.metrics, artifact=self.artifact,
            manifestUri=manifest_uri, datasetDigest=self.datasetDigest, bestParams=self.bestParams,
            sklearnVersion=self.sklearnVersion, evaluation=self.evaluation, cardUri=self.cardUri,
            compiledArtifact=self.compiled.artifact if self.compiled is not None and self.compiled.compiled else None,
        )
