"""Dataset loading, validation checks, canonical digest, profile and the validation workload."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kultivar.api.dataset import DatasetChecks, DatasetSchema, DatasetSource, DatasetSpec, Feature
from kultivar.domain.profile import OTHER, CategoricalProfile, NumericProfile, Profile
from kultivar.workloads.canonical import as_features, canonical_columns, canonical_frame_digest, coerce_frame
from kultivar.workloads.checks import resolve_features, validate
from kultivar.workloads.data import SourceUnreadable, load_source, resolve_uri
from kultivar.workloads.profiling import build_profile
from kultivar.workloads.storage import ArtifactStore
from kultivar.workloads.validation import run_validation


def canonical_digest(df: pd.DataFrame, features: Any, target: str, task: str | None = None) -> str:
    """The digest of data in any representation: its canonical form's (what validation computes)."""
    feats = as_features(features)
    if task is None:
        task = "regression" if pd.api.types.is_numeric_dtype(df[target]) else "classification"
    frame, failures = coerce_frame(df, feats, target, task)
    if failures:
        raise ValueError("cannot digest data that does not match its schema: " + failures[0].message)
    missing = [c for c in canonical_columns(feats, target) if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot digest: columns {missing} are not in the data")
    return canonical_frame_digest(frame, feats, target)


def generated(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """Mixed data: numeric with gaps, categorical with gaps, boolean, and a string class label."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, rows).round(1)
    age[rng.random(rows) < 0.1] = np.nan
    income = rng.lognormal(10, 0.5, rows)
    plan = rng.choice(["basic", "plus", "pro"], rows, p=[0.6, 0.3, 0.1]).astype(object)
    plan[rng.random(rows) < 0.05] = None
    member = rng.random(rows) < 0.4
    score = income / 1e4 + np.where(member, 2, 0) - np.nan_to_num(age, nan=40) / 20
    churn = np.where(score + rng.normal(0, 1, rows) > np.median(score), "yes", "no")
    return pd.DataFrame({"age": age, "income": income, "plan": plan, "member": member, "churn": churn})


FEATURES = [
    Feature(name="age", type="numeric", nullable=True, minimum=0, maximum=120),
    Feature(name="income", type="numeric"),
    Feature(name="plan", type="categorical", nullable=True, allowed=["basic", "plus", "pro"]),
    Feature(name="member", type="boolean"),
]
SCHEMA = DatasetSchema(target="churn", task="classification", features=FEATURES)


def checks(**kw: Any) -> DatasetChecks:
    return DatasetChecks(**kw)


def failures(report: Any) -> dict[str, Any]:
    return {f.check: f for f in report.failures}


# --------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name,rows,cols", [("iris", 150, 5), ("wine", 178, 14), ("breast_cancer", 569, 31),
                                            ("diabetes", 442, 11)])
def test_sklearn_sources_rename_the_target(name: str, rows: int, cols: int) -> None:
    df = load_source(DatasetSource(uri=f"sklearn://{name}"), DatasetSchema(target="label", task="regression"))
    assert df.shape == (rows, cols)
    assert "label" in df.columns and "target" not in df.columns


def test_unknown_sklearn_set_and_bad_files(tmp_path: Path) -> None:
    schema = DatasetSchema(target="y", task="regression")
    with pytest.raises(SourceUnreadable, match="use one of iris"):
        load_source(DatasetSource(uri="sklearn://titanic"), schema)
    with pytest.raises(SourceUnreadable, match="does not exist") as info:
        load_source(DatasetSource(uri=str(tmp_path / "nope.csv")), schema)
    assert not info.value.transient
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(SourceUnreadable, match=r"set spec\.source\.format"):
        load_source(DatasetSource(uri=str(tmp_path / "data.xlsx")), schema)
    (tmp_path / "broken.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(SourceUnreadable, match="could not parse"):
        load_source(DatasetSource(uri=str(tmp_path / "broken.parquet")), schema)


def test_pvc_uris_map_to_the_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KULTIVAR_PVC_ROOT", str(tmp_path))
    assert resolve_uri("pvc://claim/dir/x.csv") == f"{tmp_path}/claim/dir/x.csv"
    assert resolve_uri("pvc://claim/../../etc/passwd") == f"{tmp_path}/claim/etc/passwd"
    (tmp_path / "claim").mkdir()
    generated(20).to_csv(tmp_path / "claim" / "data.csv.gz", index=False)
    df = load_source(DatasetSource(uri="pvc://claim/data.csv.gz"), SCHEMA)
    assert len(df) == 20
    assert str(df["plan"].dtype) != "object" or df["plan"].map(type).isin([str, float]).all()


def test_a_column_name_used_twice_is_refused(tmp_path: Path) -> None:
    """pandas would read the second 'x' of a CSV header as 'x.1': which one a feature means would be a guess."""
    schema = DatasetSchema(target="y", task="classification")
    (tmp_path / "twice.csv").write_text("x,x,y\n1,2,a\n3,4,b\n")
    with pytest.raises(SourceUnreadable, match="more than one column named 'x'") as info:
        load_source(DatasetSource(uri=str(tmp_path / "twice.csv")), schema)
    assert not info.value.transient
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2]), pa.array(["a"])], names=["x", "x", "y"]),
                   tmp_path / "twice.parquet")
    with pytest.raises(SourceUnreadable, match=r"twice\.parquet"):  # pyarrow itself refuses to pick one
        load_source(DatasetSource(uri=str(tmp_path / "twice.parquet")), schema)
    # A column really named like pandas' renaming is not a duplicate.
    (tmp_path / "dotted.csv").write_text("x,x.1,y\n1,2,a\n3,4,b\n")
    assert list(load_source(DatasetSource(uri=str(tmp_path / "dotted.csv")), schema).columns) == ["x", "x.1", "y"]


def test_a_header_read_as_one_column_names_the_likely_separator(tmp_path: Path) -> None:
    (tmp_path / "semi.csv").write_text("x;c;y\n1;a;p\n2;b;q\n")
    schema = DatasetSchema(target="y", task="classification")
    df = load_source(DatasetSource(uri=str(tmp_path / "semi.csv")), schema)
    message = failures(validate(df, schema, checks()))["MissingTarget"].message
    assert "separate values with semicolons" in message and "read with commas" in message


def test_categorical_codes_stay_text_in_csv(tmp_path: Path) -> None:
    (tmp_path / "z.csv").write_text("zip,y\n01234,1\n98765,0\n")
    schema = DatasetSchema(target="y", task="classification", features=[Feature(name="zip", type="categorical")])
    df = load_source(DatasetSource(uri=str(tmp_path / "z.csv")), schema)
    assert df["zip"].tolist() == ["01234", "98765"]


# ------------------------------------------------------------------------------------------ resolution


def test_resolve_features_infers_types_and_excludes_target() -> None:
    df = generated(50)
    inferred = resolve_features(df, DatasetSchema(target="churn", task="classification"))
    assert [(f.name, f.type, f.nullable) for f in inferred] == [
        ("age", "numeric", True), ("income", "numeric", True), ("plan", "categorical", True),
        ("member", "boolean", True),
    ]
    assert resolve_features(df, SCHEMA) == FEATURES


# -------------------------------------------------------------------------------------------- checks


def test_clean_data_passes_with_a_canonical_frame() -> None:
    report = validate(generated(), SCHEMA, checks(minRows=100, maxMissingFraction=0.2))
    assert report.ok, report.message()
    assert report.frame is not None
    assert list(report.frame.columns) == ["age", "income", "member", "plan", "churn"]
    assert report.frame["member"].dtype == np.float64
    assert set(report.frame["member"].unique()) == {0.0, 1.0}
    assert report.missing["age"] == pytest.approx(generated()["age"].isna().mean())


def test_missing_target_and_missing_column() -> None:
    df = generated(30).drop(columns=["churn", "income"])
    found = failures(validate(df, SCHEMA, checks()))
    assert "'churn'" in found["MissingTarget"].message
    assert found["MissingColumn"].column == "income"
    assert "spec.schema.features" in found["MissingColumn"].message


def test_type_mismatch_names_count_and_example() -> None:
    df = generated(30)
    df["income"] = df["income"].astype(object)
    df.loc[[4, 9], "income"] = ["n/a", "lots"]
    df["member"] = df["member"].astype(object)
    df.loc[2, "member"] = "maybe"
    found = [f for f in validate(df, SCHEMA, checks()).failures if f.check == "TypeMismatch"]
    by_col = {f.column: f for f in found}
    assert by_col["income"].count == 2
    assert "'n/a'" in by_col["income"].message and "row 4" in by_col["income"].message
    assert "declare 'income' as categorical" in by_col["income"].message
    assert by_col["member"].count == 1 and "'maybe'" in by_col["member"].message


def test_numeric_strings_are_accepted() -> None:
    df = generated(30)
    df["income"] = df["income"].map(lambda v: f"{v:.3f}")
    assert validate(df, SCHEMA, checks()).ok


def test_nulls_not_allowed() -> None:
    df = generated(40)
    df.loc[[3, 7, 8], "income"] = np.nan
    f = failures(validate(df, SCHEMA, checks()))["NullsNotAllowed"]
    assert f.column == "income" and f.count == 3
    assert "row 3" in f.message and "nullable: true" in f.message


def test_target_nulls_are_refused() -> None:
    df = generated(40)
    df.loc[5, "churn"] = None
    f = failures(validate(df, SCHEMA, checks()))["NullsNotAllowed"]
    assert f.column == "churn" and "drop those rows" in f.message


def test_value_out_of_range() -> None:
    df = generated(40)
    df.loc[[1, 2], "age"] = [-3.0, 130.0]
    f = failures(validate(df, SCHEMA, checks()))["ValueOutOfRange"]
    assert f.column == "age" and f.count == 2
    assert "[0.0, 120.0]" in f.message and "-3.0" in f.message


def test_infinite_values_are_out_of_range() -> None:
    df = generated(40)
    df.loc[[3, 4], "income"] = [np.inf, -np.inf]
    f = failures(validate(df, SCHEMA, checks()))["ValueOutOfRange"]
    assert f.column == "income" and f.count == 2 and "infinite" in f.message and "row 3" in f.message


def test_unknown_category() -> None:
    df = generated(40)
    df.loc[[0, 5, 6], "plan"] = ["enterprise", "free", "enterprise"]
    f = failures(validate(df, SCHEMA, checks()))["UnknownCategory"]
    assert f.column == "plan" and f.count == 3
    assert "'enterprise'" in f.message and "'free'" in f.message and "2 distinct" in f.message


def test_too_few_rows_and_too_many_missing() -> None:
    df = generated(40)
    found = failures(validate(df, SCHEMA, checks(minRows=100, maxMissingFraction=0.01)))
    assert "40 rows" in found["TooFewRows"].message and "minRows is 100" in found["TooFewRows"].message
    assert found["TooManyMissing"].column in {"age", "plan"}
    assert "maxMissingFraction 0.01" in found["TooManyMissing"].message


def test_too_many_duplicates() -> None:
    df = pd.concat([generated(50)] * 3, ignore_index=True)
    found = failures(validate(df, SCHEMA, checks(maxDuplicateFraction=0.5)))
    assert found["TooManyDuplicates"].count == 100
    assert "row 50" in found["TooManyDuplicates"].message
    assert validate(df, SCHEMA, checks(maxDuplicateFraction=0.7)).ok


def test_unexpected_columns() -> None:
    df = generated(20).assign(internal_id=range(20), note="x")
    f = failures(validate(df, SCHEMA, checks(allowExtraColumns=False)))["UnexpectedColumns"]
    assert "'internal_id'" in f.message and "'note'" in f.message and f.count == 2
    assert validate(df, SCHEMA, checks()).ok


def test_schema_level_failures() -> None:
    df = generated(20)
    bad_schema = DatasetSchema(target="churn", task="classification",
                               features=[*FEATURES, Feature(name="churn", type="categorical")])
    assert "TargetListedAsFeature" in failures(validate(df, bad_schema, checks()))
    only_target = df[["churn"]]
    assert "NoFeatures" in failures(validate(only_target, DatasetSchema(target="churn", task="classification"),
                                             checks()))
    one_class = df.assign(churn="yes")
    assert "TooFewClasses" in failures(validate(one_class, SCHEMA, checks()))
    text_target = df.assign(churn="x")
    reg = DatasetSchema(target="churn", task="regression", features=FEATURES)
    assert failures(validate(text_target, reg, checks()))["TypeMismatch"].column == "churn"


def test_all_failures_are_reported_together() -> None:
    df = generated(40).drop(columns=["income"])
    df.loc[0, "age"] = -1
    df.loc[1, "plan"] = "gold"
    report = validate(df, SCHEMA, checks(minRows=1000))
    assert {"TooFewRows", "MissingColumn", "ValueOutOfRange", "UnknownCategory"} <= set(failures(report))
    assert report.frame is None
    message = report.message()
    assert message.startswith("TooFewRows:") and "UnknownCategory:" in message


# -------------------------------------------------------------------------------------------- digest


def _load(path: Path, schema: DatasetSchema = SCHEMA) -> pd.DataFrame:
    return load_source(DatasetSource(uri=str(path)), schema)


def test_digest_is_the_same_across_formats_and_column_order(tmp_path: Path) -> None:
    df = generated()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    # json.dumps writes floats exactly (pandas' to_json keeps only 10 digits by default).
    records = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    df[["churn", "plan", "member", "income", "age"]].to_parquet(tmp_path / "shuffled.parquet", index=False)
    digests = {p: canonical_digest(_load(tmp_path / p), FEATURES, "churn", "classification")
               for p in ("d.csv", "d.parquet", "d.jsonl", "shuffled.parquet")}
    assert len(set(digests.values())) == 1, digests
    assert digests["d.csv"].startswith("sha256:") and len(digests["d.csv"]) == 71
    assert canonical_digest(df, list(reversed(FEATURES)), "churn", "classification") == digests["d.csv"]
    # Columns outside the schema do not enter the digest.
    assert canonical_digest(df.assign(extra=1), FEATURES, "churn", "classification") == digests["d.csv"]


def test_digest_with_inferred_features_ignores_column_order() -> None:
    df = load_source(DatasetSource(uri="sklearn://wine"), DatasetSchema(target="y", task="classification"))
    schema = DatasetSchema(target="y", task="classification")
    a = canonical_digest(df, resolve_features(df, schema), "y")
    shuffled = df[list(reversed(df.columns))]
    assert canonical_digest(shuffled, resolve_features(shuffled, schema), "y") == a


def test_digest_changes_with_content_and_row_order() -> None:
    df = generated()
    base = canonical_digest(df, FEATURES, "churn")
    assert canonical_digest(df.iloc[::-1].reset_index(drop=True), FEATURES, "churn") != base
    changed = df.copy()
    changed.loc[10, "income"] += 0.01
    assert canonical_digest(changed, FEATURES, "churn") != base
    relabelled = df.copy()
    relabelled.loc[0, "plan"] = "plus" if df.loc[0, "plan"] != "plus" else "pro"
    assert canonical_digest(relabelled, FEATURES, "churn") != base
    # None vs empty string, and a missing categorical vs the text "None", are different data.
    a = pd.DataFrame({"c": ["", None], "y": [0, 1]})
    b = pd.DataFrame({"c": [None, ""], "y": [0, 1]})
    c = pd.DataFrame({"c": ["None", ""], "y": [0, 1]})
    feats = [Feature(name="c", type="categorical", nullable=True)]
    assert len({canonical_digest(x, feats, "y") for x in (a, b, c)}) == 3


def test_digest_normalises_numeric_representations() -> None:
    ints = pd.DataFrame({"x": [1, 2, 3], "c": [1, 2, 2], "y": [0, 1, 0]})
    floats = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["1", "2", "2"], "y": [0.0, 1.0, 0.0]})
    feats = [Feature(name="x", type="numeric"), Feature(name="c", type="categorical")]
    assert canonical_digest(ints, feats, "y") == canonical_digest(floats, feats, "y")
    neg_zero = pd.DataFrame({"x": [-0.0, np.nan], "c": ["a", "b"], "y": [0, 1]})
    pos_zero = pd.DataFrame({"x": [0.0, float("nan")], "c": ["a", "b"], "y": [0, 1]})
    assert canonical_digest(neg_zero, feats, "y") == canonical_digest(pos_zero, feats, "y")


@pytest.mark.parametrize("rows", [0, 1, 65_535, 65_536, 65_537, 200_003])
def test_column_hashes_are_the_hash_of_the_whole_normalised_column(rows: int) -> None:
    # The columns are hashed in steps through a reused buffer; the result is the sha256 of the whole column in its
    # canonical bytes, wherever the steps fall.
    import hashlib

    import pyarrow as pa

    from kultivar.workloads.canonical import _hash_float, _hash_text

    rng = np.random.default_rng(rows)
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.1] = np.nan
    x[rng.random(rows) < 0.01] = -0.0
    if rows:
        x[-1] = np.frombuffer(np.uint64(0x7FF8000000000001).tobytes(), dtype="<f8")[0]  # another NaN payload
    whole = x + 0.0
    whole[np.isnan(whole)] = np.nan
    assert _hash_float(x) == hashlib.sha256(whole.astype("<f8").tobytes()).digest()
    ints = rng.integers(-5, 5, rows)
    assert _hash_float(ints) == hashlib.sha256(ints.astype("<f8").tobytes()).digest()
    text = pd.Series(pd.array(rng.choice(np.array(["a", "bb", None, "é"], dtype=object), rows),
                              dtype=pd.StringDtype("pyarrow")))
    arr = pa.array(text, type=pa.large_string(), from_pandas=True)
    lengths = np.array([-1 if v is None else len(v.encode()) for v in arr.to_pylist()], dtype="<i8")
    data = "".join(v for v in arr.to_pylist() if v is not None).encode()
    assert _hash_text(text) == hashlib.sha256(lengths.tobytes() + data).digest()


@pytest.mark.parametrize("labels", [
    np.array([0, 1, 1, 2], dtype=np.int8),
    np.array([3, 1, 2, 2], dtype=np.uint64),
    np.array([-(2**53) + 1, 2**53 - 1, 0, 0], dtype=np.int64),
    np.array([2**53, 0, 1, 1], dtype=np.int64),  # not exact as floats: text, as before
    np.array([2**63 + 5, 0, 1, 1], dtype=np.uint64),
])
def test_integer_class_labels_keep_their_values(labels: np.ndarray) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": labels})
    frame, problems = coerce_frame(df, [Feature(name="x", type="numeric")], "y", "classification")
    assert problems == []
    if np.all(np.abs(labels.astype(np.float64)) < 2**53):
        assert frame["y"].dtype == np.int64 and frame["y"].tolist() == labels.tolist()
    else:
        assert frame["y"].tolist() == [str(v) for v in labels.tolist()]
    # The same digest as the same labels given as floats (or text, past 2**53).
    as_floats = df.assign(y=labels.astype(np.float64)) if frame["y"].dtype == np.int64 else \
        df.assign(y=[str(v) for v in labels.tolist()])
    assert canonical_digest(df, [Feature(name="x", type="numeric")], "y", "classification") == \
        canonical_digest(as_floats, [Feature(name="x", type="numeric")], "y", "classification")


def test_digest_refuses_data_that_does_not_match_the_schema() -> None:
    df = pd.DataFrame({"x": ["a", "b"], "y": [0, 1]})
    with pytest.raises(ValueError, match="should be numeric"):
        canonical_digest(df, [Feature(name="x", type="numeric")], "y")


# ------------------------------------------------------------------------------------------- profile


def test_profile_of_generated_data() -> None:
    df = generated()
    frame, problems = coerce_frame(df, FEATURES, "churn", "classification")
    assert problems == []
    profile = build_profile(frame, FEATURES, "churn", "classification")
    assert profile.rows == len(df)
    age = profile.features["age"]
    assert isinstance(age, NumericProfile) and age.bins == 10
    assert age.missingFraction == pytest.approx(df["age"].isna().mean())
    plan = profile.features["plan"]
    assert isinstance(plan, CategoricalProfile)
    assert set(plan.proportions) == {"basic", "plus", "pro", OTHER}
    assert plan.proportions["basic"] > plan.proportions["pro"]
    member = profile.features["member"]
    assert isinstance(member, CategoricalProfile) and member.boolean
    assert set(member.proportions) == {"true", "false", OTHER}
    assert profile.targetName == "churn" and isinstance(profile.target, CategoricalProfile)
    # The raw frame gives the same profile as the canonical one.
    assert build_profile(df, FEATURES, "churn", "classification") == profile


@pytest.mark.parametrize("values, boolean", [
    (pd.array(["b", None, "a", "b", "1", "1.0"], dtype=pd.StringDtype("pyarrow")), False),
    (pd.array(["b", None, "a", "b"], dtype="str"), False),
    (pd.array(["Yes", None, "no", "TRUE"], dtype=pd.StringDtype("pyarrow")), True),
    (np.array([1.0, 0.0, np.nan, 1.0]), True),
    (np.array([1.0, 1.0, np.nan]), True),  # no zeros at all: no "false" key
    (np.array([1.0, 0.0, 2.5, np.nan]), False),  # not boolean-like: the general path
    (np.array([np.nan, np.nan]), True),
    (np.array(["x", None, 1, 1.0], dtype=object), False),
])
def test_categorical_counts_fast_paths_agree_with_value_counts(values: Any, boolean: bool) -> None:
    from kultivar.domain.profile import normalize_category
    from kultivar.workloads.profiling import _categorical_counts

    series = pd.Series(values)
    expected: dict[str, int] = {}
    for value, count in series.value_counts(dropna=True).items():
        key = normalize_category(value, boolean)
        if key is not None:
            expected[key] = expected.get(key, 0) + int(count)
    assert _categorical_counts(series, boolean) == (expected, int(series.isna().sum()))


def test_profile_of_regression_target() -> None:
    df = load_source(DatasetSource(uri="sklearn://diabetes"), DatasetSchema(target="y", task="regression"))
    schema = DatasetSchema(target="y", task="regression")
    profile = build_profile(df, resolve_features(df, schema), "y", "regression")
    assert isinstance(profile.target, NumericProfile)
    assert len(profile.features) == 10


# ------------------------------------------------------------------------------------------ workload


@pytest.fixture
def store() -> ArtifactStore:
    return ArtifactStore(f"memory://validation-{uuid.uuid4().hex[:8]}")


def _spec(uri: str, **schema: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"source": {"uri": uri}, "schema": schema})


def test_run_validation_writes_snapshot_and_profile(store: ArtifactStore) -> None:
    spec = _spec("sklearn://iris", target="species", task="classification")
    result = run_validation(spec, "team-a", "iris", store)
    assert result["ok"] is True
    assert result["rows"] == 150 and result["columns"] == 5
    hexdigest = result["digest"].removeprefix("sha256:")
    assert result["snapshotUri"] == store.uri_for(f"team-a/datasets/iris/{hexdigest}/snapshot.arrow")
    assert result["profileUri"] == store.uri_for(f"team-a/datasets/iris/{hexdigest}/profile.json")
    assert [f["type"] for f in result["features"]] == ["numeric"] * 4
    assert all(f["missingFraction"] == 0.0 for f in result["features"])
    profile = Profile.model_validate_json(store.read_bytes(result["profileUri"]))
    assert set(profile.features) == {f["name"] for f in result["features"]}
    # A plain Arrow IPC (Feather v2) file: readable without Kultivar.
    with store.open(result["snapshotUri"]) as f:
        snapshot = pd.read_feather(f)
    assert canonical_digest(snapshot, result["features"], "species", "classification") == result["digest"]
    # Re-validating the same data is idempotent: same digest, same files.
    again = run_validation(spec, "team-a", "iris", store)
    assert {k: again[k] for k in ("digest", "snapshotUri", "profileUri")} == \
           {k: result[k] for k in ("digest", "snapshotUri", "profileUri")}
    assert sorted(p.rsplit("/", 1)[1] for p in store.fs.find(store._path(""))) == ["profile.json",
                                                                                  "snapshot.arrow"]


def test_run_validation_on_generated_files(tmp_path: Path, store: ArtifactStore) -> None:
    generated().to_csv(tmp_path / "d.csv", index=False)
    generated().to_parquet(tmp_path / "d.parquet", index=False)
    schema = json.loads(SCHEMA.model_dump_json(by_alias=True, exclude_none=True))
    a = run_validation(_spec(f"file://{tmp_path}/d.csv", **schema), "ns", "churn", store)
    b = run_validation(_spec(str(tmp_path / "d.parquet"), **schema), "ns", "churn", store)
    assert a["ok"] and b["ok"]
    assert a["digest"] == b["digest"] and a["snapshotUri"] == b["snapshotUri"]
    types = {f["name"]: f["type"] for f in a["features"]}
    assert types == {"age": "numeric", "income": "numeric", "plan": "categorical", "member": "boolean"}


def test_run_validation_failures(tmp_path: Path, store: ArtifactStore) -> None:
    bad = generated(30)
    bad.loc[0, "age"] = 500
    bad.to_csv(tmp_path / "bad.csv", index=False)
    schema = json.loads(SCHEMA.model_dump_json(by_alias=True, exclude_none=True))
    result = run_validation(_spec(str(tmp_path / "bad.csv"), **schema), "ns", "churn", store)
    assert result["ok"] is False and result["reason"] == "DataValidationFailed"
    assert result["check"] == "ValueOutOfRange" and "'age'" in result["message"]
    assert result["retryable"] is False
    missing = run_validation(_spec(str(tmp_path / "none.csv"), **schema), "ns", "churn", store)
    assert missing["reason"] == "SourceUnreadable" and "does not exist" in missing["message"]
    assert store.fs.find(store._path("")) == []
