"""Dataset: where the data lives, what it must look like, and what validation found."""

from __future__ import annotations

import posixpath
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from kultivar.api.common import (
    CONDITIONS_FIELD,
    Condition,
    Duration,
    DurationFloor,
    KModel,
    SecretReference,
    cel_list,
)

SOURCE_URI_PATTERN = r"^(/|file://|pvc://|s3://|gs://|https://|http://|sklearn://)\S+$"
SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "diabetes", "digits")
SKLEARN_URIS = tuple(f"sklearn://{n}" for n in SKLEARN_DATASETS)
UNKNOWN_SKLEARN = f"sklearn:// names a scikit-learn bundled set: one of {', '.join(SKLEARN_URIS)}"

# File formats by extension (``format: auto``); compressed files are named by the extension under the compression's.
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}

# The cell texts a CSV source's reader takes as missing values, in every column: exactly pandas' default NA
# spellings (pandas._libs.parsers.STR_NA_VALUES, checked in tests), passed to the reader explicitly so that what
# validation reads and what the model manifest tells the server (ManifestFeature.missingTokens) are one list.
# Parquet and JSON lines carry missing values as nulls: there a text "None" is a category like any other.
CSV_MISSING_TOKENS: tuple[str, ...] = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
)


def source_format(uri: str, declared: str = "auto") -> str | None:
    """csv, parquet or jsonl: ``declared``, or (auto) by the URI's extension; None when the extension says nothing."""
    if declared != "auto":
        return declared
    return EXTENSIONS.get(source_extension(uri))


def source_extension(uri: str) -> str:
    """The extension of the URI's file name under any compression suffix (``.csv`` for ``a.csv.gz``); may be empty."""
    name = uri.split("?", 1)[0].rstrip("/").lower()
    for compression in COMPRESSIONS:
        if name.endswith(compression):
            name = name[: -len(compression)]
            break
    return posixpath.splitext(name)[1]


def missing_tokens(uri: str, declared: str = "auto") -> tuple[str, ...]:
    """The texts the source's reader takes as missing (CSV: :data:`CSV_MISSING_TOKENS`; other formats: none)."""
    if uri.startswith("sklearn://"):
        return ()
    return CSV_MISSING_TOKENS if source_format(uri, declared) == "csv" else ()


class DatasetSource(KModel):
    """Where the data is read from."""

    uri: str = Field(
        description=(
            "fsspec URI of the data: an absolute path or file:// (e.g. on a mounted PVC), s3://bucket/key, "
            "gs://bucket/key, https://host/file.csv, or sklearn://<name> for a scikit-learn bundled set "
            f"({', '.join(SKLEARN_DATASETS)})."
        ),
        min_length=2,
        max_length=2048,
        pattern=SOURCE_URI_PATTERN,
    )
    format: Literal["auto", "csv", "parquet", "jsonl"] = Field(
        default="auto",
        description="File format; auto picks it from the file extension. Ignored for sklearn:// sources.",
    )
    secretRef: SecretReference | None = Field(
        default=None,
        description=(
            "Secret with storage credentials, exposed to the validation and training pods as environment "
            "variables (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."
        ),
    )

    # The Dataset planner refuses the same with its own reason (domain/dataset.spec_problem).
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"!self.uri.startsWith('sklearn://') || self.uri in {cel_list(SKLEARN_URIS)}",
         "message": UNKNOWN_SKLEARN, "fieldPath": ".uri"},
    ]})


FEATURE_RULES: list[Any] = [
    {"rule": "!has(self.allowed) || self.type == 'categorical'",
     "message": "allowed values apply only to categorical features", "fieldPath": ".allowed"},
    {"rule": "!has(self.minimum) || self.type == 'numeric'",
     "message": "minimum applies only to numeric features", "fieldPath": ".minimum"},
    {"rule": "!has(self.maximum) || self.type == 'numeric'",
     "message": "maximum applies only to numeric features", "fieldPath": ".maximum"},
    {"rule": "!has(self.minimum) || !has(self.maximum) || self.minimum <= self.maximum",
     "message": "minimum must not exceed maximum", "fieldPath": ".minimum"},
]


class Feature(KModel):
    """One input column and what its values may be."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": FEATURE_RULES})

    name: str = Field(description="Column name in the data.", min_length=1, max_length=256)
    type: Literal["numeric", "categorical", "boolean"] = Field(description="Kind of values in the column.")
    nullable: bool = Field(default=False, description="Whether missing values are allowed in this column.")
    allowed: list[str] | None = Field(
        default=None,
        description="For categorical columns: the only values allowed. Unset allows any value.",
        json_schema_extra={"maxItems": 1000},
    )
    minimum: float | None = Field(default=None, description="For numeric columns: smallest allowed value.")
    maximum: float | None = Field(default=None, description="For numeric columns: largest allowed value.")

    @model_validator(mode="after")
    def _bounds_fit_the_type(self) -> Feature:
        if self.allowed is not None and self.type != "categorical":
            raise ValueError(f"feature {self.name}: allowed values apply only to categorical features")
        for bound in ("minimum", "maximum"):
            if getattr(self, bound) is not None and self.type != "numeric":
                raise ValueError(f"feature {self.name}: {bound} applies only to numeric features")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name}: minimum must not exceed maximum")
        return self


class DatasetSchema(KModel):
    """The columns of the data and which one is predicted."""

    target: str = Field(description="Name of the column the model predicts.", min_length=1, max_length=256)
    task: Literal["classification", "regression"] = Field(
        description="classification (the target is a class) or regression (the target is a number)."
    )
    features: list[Feature] = Field(
        default_factory=list,
        description=(
            "Input columns. Empty means every column but the target, with types inferred from the data at "
            "validation and reported in status.features."
        ),
        json_schema_extra={
            "maxItems": 500,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )

    # The Dataset planner refuses the same with its own reason (domain/dataset.spec_problem).
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.features) || !self.features.exists(f, f.name == self.target)",
         "message": "the target must not also be listed in features", "fieldPath": ".target"},
    ]})


class DatasetChecks(KModel):
    """Data quality checks; a failing check rejects that version of the data."""

    minRows: int = Field(default=1, ge=1, description="The data must have at least this many rows.")
    maxMissingFraction: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="Highest allowed share of missing values in any one feature column (0 to 1).",
    )
    maxDuplicateFraction: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Highest allowed share of fully duplicated rows (0 to 1)."
    )
    allowExtraColumns: bool = Field(
        default=True, description="Whether columns not listed in schema.features are tolerated (and ignored)."
    )


REFRESH_FLOOR = DurationFloor("1m", "each refresh runs a validation Job")


class DatasetRefresh(KModel):
    """Re-reading the source on a schedule picks up new data as a new version."""

    interval: Annotated[Duration, REFRESH_FLOOR.validator] = Field(
        description="How often to re-validate the source, e.g. 1h or 1d; at least 1m, since each refresh runs a "
                    "validation Job.",
        json_schema_extra=REFRESH_FLOOR.schema,
    )


class DatasetSpec(KModel):
    """Desired state of a Dataset."""

    source: DatasetSource = Field(description="Where the data is read from.")
    schema_: DatasetSchema = Field(alias="schema", description="The columns of the data and the target.")
    checks: DatasetChecks = Field(default_factory=DatasetChecks, description="Data quality checks.")
    refresh: DatasetRefresh | None = Field(
        default=None, description="Re-validate the source periodically. Unset validates on changes only."
    )


class DatasetVersion(KModel):
    """One validated version of the data, identified by its content digest."""

    digest: str = Field(description="sha256 over a canonical serialisation of the content.")
    rows: int = Field(ge=0, description="Number of rows.")
    snapshotUri: str = Field(description="Immutable copy of this version in the artifact store.")
    profileUri: str = Field(description="Per-feature reference profile (the baseline for drift).")
    validatedAt: str = Field(description="When this version was validated (RFC 3339).",
                             json_schema_extra={"format": "date-time"})


class FeatureStatus(KModel):
    """A feature as validation saw it."""

    name: str = Field(description="Column name.")
    type: Literal["numeric", "categorical", "boolean"] = Field(description="Declared or inferred kind of values.")
    missingFraction: float = Field(default=0.0, description="Share of missing values in the latest version.")


class ValidationProgress(KModel):
    """Bookkeeping of validation attempts, so a restart never starts a second Job for one attempt."""

    attempt: int = Field(ge=1, description="Number of the latest attempt; its Job is <name>-validate-<attempt>.")
    generation: int = Field(ge=0, description="The spec generation that attempt validates.")
    job: str = Field(description="Name of that attempt's Job.")
    startedAt: str = Field(description="When that attempt started.", json_schema_extra={"format": "date-time"})
    completedAttempt: int | None = Field(default=None, description="The latest attempt whose result is recorded.")
    completedAt: str | None = Field(default=None, description="When that result was recorded.",
                                    json_schema_extra={"format": "date-time"})


class DatasetStatus(KModel):
    """Observed state of a Dataset."""

    observedGeneration: int | None = Field(default=None, description="The generation last reconciled.")
    conditions: list[Condition] = CONDITIONS_FIELD
    digest: str | None = Field(default=None, description="Digest of the latest valid version (sha256:<hex>).")
    rows: int | None = Field(default=None, description="Rows in the latest valid version.")
    columns: int | None = Field(default=None, description="Columns in the latest valid version.")
    profileUri: str | None = Field(default=None, description="Reference profile of the latest valid version.")
    snapshotUri: str | None = Field(default=None, description="Snapshot of the latest valid version.")
    validatedAt: str | None = Field(default=None, description="When the latest valid version was validated.",
                                    json_schema_extra={"format": "date-time"})
    features: list[FeatureStatus] = Field(default_factory=list, description="Features of the latest valid version.")
    versions: list[DatasetVersion] = Field(
        default_factory=list, description="Recent valid versions, newest last (at most 10)."
    )
    validation: ValidationProgress | None = Field(default=None, description="Progress of validation attempts.")
    lastFailure: str | None = Field(default=None, description="Why the last validation failed, if it did.")
