"""The data checks of a Dataset: every failure is reported (not just the first) so one fix round is enough."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kultivar.api.dataset import DatasetChecks, DatasetSchema, Feature
from kultivar.domain.profile import (
    normalize_category,
)
from kultivar.workloads.canonical import Failure, coerce_frame, example_text, first_index

MAX_REPORTED_FAILURES = 20


def infer_type(series: pd.Series) -> str:
    if ptypes.is_bool_dtype(series):
        return "boolean"
    if ptypes.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def resolve_features(df: pd.DataFrame, schema: DatasetSchema) -> list[Feature]:
    """The declared features, or when none are declared every column but the target with inferred types.

    Inferred features are nullable: a user who declared nothing has not asked for non-null columns; the
    ``maxMissingFraction`` check still applies.
    """
    if schema.features:
        return list(schema.features)
    return [Feature(name=str(c), type=infer_type(df[c]), nullable=True) for c in df.columns if c != schema.target]


@dataclass
class ValidationReport:
    rows: int
    features: list[Feature]
    failures: list[Failure] = field(default_factory=list)
    frame: pd.DataFrame | None = None  # canonical form; set when every check passed
    missing: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def message(self) -> str:
        shown = self.failures[:MAX_REPORTED_FAILURES]
        text = "; ".join(f"{f.check}: {f.message}" for f in shown)
        if len(self.failures) > len(shown):
            text += f"; and {len(self.failures) - len(shown)} more failures"
        return text


def _pct(count: int, rows: int) -> str:
    return f"{100.0 * count / rows:.1f}%" if rows else "0%"


def validate(df: pd.DataFrame, schema: DatasetSchema, checks: DatasetChecks) -> ValidationReport:
    """Run every check; the report lists all failures (not just the first) so one fix round is enough."""
    rows = len(df)
    features = resolve_features(df, schema)
    report = ValidationReport(rows=rows, features=features)
    fail = report.failures.append
    target = schema.target
    names = [f.name for f in features]

    if target in names:
        fail(Failure("TargetListedAsFeature",
                     f"the target {target!r} is also listed in spec.schema.features; remove it from the features",
                     column=target))
    if rows < checks.minRows:
        fail(Failure("TooFewRows",
                     f"the data has {rows} rows but spec.checks.minRows is {checks.minRows}; add data or lower "
                     "minRows", count=rows))
    if target not in df.columns:
        fail(Failure("MissingTarget",
                     f"the target column {target!r} is not in the data (columns: {_cols(df.columns)}); fix "
                     f"spec.schema.target or the data{_separator_hint(df.columns)}", column=target))
    for name in names:
        if name not in df.columns:
            fail(Failure("MissingColumn",
                         f"feature column {name!r} is not in the data (columns: {_cols(df.columns)}); fix the "
                         "name in spec.schema.features or add the column", column=name))
    if schema.features and not checks.allowExtraColumns:
        extra = [c for c in df.columns if c not in set(names) | {target}]
        if extra:
            fail(Failure("UnexpectedColumns",
                         f"{len(extra)} columns are not declared in spec.schema.features: {_cols(extra)}; declare "
                         "them, drop them from the data, or set spec.checks.allowExtraColumns: true",
                         count=len(extra), example=extra[0]))
    if not [n for n in names if n != target]:
        fail(Failure("NoFeatures", "there are no feature columns besides the target; add columns to the data "
                                   "or list them in spec.schema.features"))

    present_features = [f for f in features if f.name in df.columns and f.name != target]
    frame, mismatches = coerce_frame(df, present_features, target, schema.task)
    report.failures.extend(mismatches)
    mismatched = {f.column for f in mismatches}

    for feat in present_features:
        name = feat.name
        raw_missing = df[name].isna().to_numpy()
        n_missing = int(raw_missing.sum())
        report.missing[name] = n_missing / rows if rows else 0.0
        if n_missing and not feat.nullable:
            row = first_index(raw_missing)
            fail(Failure("NullsNotAllowed",
                         f"column {name!r} has {n_missing} missing values ({_pct(n_missing, rows)} of {rows} rows, "
                         f"first at row {row}, counting from 0) but is not nullable; fill or drop those rows, or "
                         f"set nullable: true for {name!r} in spec.schema.features", column=name, count=n_missing))
        if report.missing[name] > checks.maxMissingFraction:
            fail(Failure("TooManyMissing",
                         f"column {name!r} is {_pct(n_missing, rows)} missing ({n_missing} of {rows} rows), above "
                         f"spec.checks.maxMissingFraction {checks.maxMissingFraction}; fill the gaps, drop the "
                         "column, or raise maxMissingFraction", column=name, count=n_missing))
        if name in mismatched:
            continue
        if feat.type == "numeric":
            _check_range(report, feat, frame[name].to_numpy(), df[name], rows)
        if feat.type == "categorical" and feat.allowed is not None:
            _check_allowed(report, feat, frame[name], df[name], rows)

    if target in df.columns:
        _check_target(report, schema, frame[target] if target in frame else df[target], df[target], rows)

    if checks.maxDuplicateFraction < 1.0 and rows and target in frame.columns:
        # Hash rows instead of comparing them: one uint64 per row keeps this linear and cheap on wide data.
        hashed = pd.util.hash_pandas_object(frame, index=False)
        dup = hashed.duplicated().to_numpy()
        n_dup = int(dup.sum())
        if n_dup / rows > checks.maxDuplicateFraction:
            row = first_index(dup)
            fail(Failure("TooManyDuplicates",
                         f"{n_dup} of {rows} rows ({_pct(n_dup, rows)}) repeat an earlier row (first at row {row}, "
                         f"counting from 0), above spec.checks.maxDuplicateFraction {checks.maxDuplicateFraction}; "
                         "deduplicate the data or raise maxDuplicateFraction", count=n_dup))

    if report.ok:
        report.frame = frame
    return report


def _separator_hint(columns: Any) -> str:
    """When the whole header was read as one column holding another separator, the likely cause."""
    if len(columns) != 1:
        return ""
    found = [name for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars"))
             if sep in str(columns[0])]
    if not found:
        return ""
    return (f" (the header was read as one column: the file seems to separate values with {found[0]}; CSV "
            "sources are read with commas, and files named .tsv with tabs)")


def _cols(columns: Iterable[Any], limit: int = 12) -> str:
    cols = [str(c) for c in columns]
    shown = ", ".join(repr(c) for c in cols[:limit])
    return shown + (f", ... ({len(cols)} in all)" if len(cols) > limit else "")


def _check_range(report: ValidationReport, feat: Feature, values: np.ndarray, raw: pd.Series, rows: int) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        # No bound admits infinity and no estimator can fit it: refuse it here rather than fail in training.
        count, row = int(infinite.sum()), first_index(infinite)
        report.failures.append(Failure(
            "ValueOutOfRange",
            f"column {feat.name!r} has {count} of {rows} infinite values (e.g. {example_text(raw.iloc[row])} at row "
            f"{row}, counting from 0); replace them with finite numbers or leave them empty (missing)",
            column=feat.name, count=count, example=example_text(raw.iloc[row]),
        ))
        return
    if feat.minimum is None and feat.maximum is None:
        return
    with np.errstate(invalid="ignore"):
        low = values < feat.minimum if feat.minimum is not None else np.zeros(len(values), bool)
        high = values > feat.maximum if feat.maximum is not None else np.zeros(len(values), bool)
    bad = low | high
    count = int(bad.sum())
    if not count:
        return
    row = first_index(bad)
    bounds = (f"[{feat.minimum if feat.minimum is not None else '-inf'}, "
              f"{feat.maximum if feat.maximum is not None else 'inf'}]")
    example = example_text(raw.iloc[row])
    report.failures.append(Failure(
        "ValueOutOfRange",
        f"column {feat.name!r} has {count} of {rows} values outside {bounds} (e.g. {example} at row {row}, "
        f"counting from 0); fix the data or widen minimum/maximum for {feat.name!r} in spec.schema.features",
        column=feat.name, count=count, example=example,
    ))


def _check_allowed(report: ValidationReport, feat: Feature, values: pd.Series, raw: pd.Series, rows: int) -> None:
    allowed = {normalize_category(a) for a in feat.allowed or []}
    present = values.notna().to_numpy()
    bad = present & ~values.isin(allowed).to_numpy()
    count = int(bad.sum())
    if not count:
        return
    unknown = pd.unique(values[bad])
    row = first_index(bad)
    example = example_text(raw.iloc[row])
    shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    report.failures.append(Failure(
        "UnknownCategory",
        f"column {feat.name!r} has {count} of {rows} values not in its allowed list ({len(unknown)} distinct: "
        f"{shown}; e.g. {example} at row {row}, counting from 0); fix the data or add them to allowed for "
        f"{feat.name!r} in spec.schema.features",
        column=feat.name, count=count, example=example,
    ))


def _check_target(report: ValidationReport, schema: DatasetSchema, values: pd.Series, raw: pd.Series,
                  rows: int) -> None:
    name = schema.target
    missing = raw.isna().to_numpy()
    n_missing = int(missing.sum())
    if n_missing:
        report.failures.append(Failure(
            "NullsNotAllowed",
            f"the target column {name!r} has {n_missing} missing values ({_pct(n_missing, rows)} of {rows} rows, "
            f"first at row {first_index(missing)}, counting from 0); drop those rows: a model cannot learn from rows "
            "without a target", column=name, count=n_missing))
    if schema.task == "classification" and rows:
        classes = pd.unique(values.dropna())
        if len(classes) < 2:
            report.failures.append(Failure(
                "TooFewClasses",
                f"the target column {name!r} has {len(classes)} distinct value(s) "
                f"({', '.join(example_text(c) for c in classes[:3])}); classification needs at least 2 classes: add "
                "data of other classes or use task: regression", column=name, count=len(classes)))
