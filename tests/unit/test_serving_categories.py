"""Categorical values as training read them (issue 20 item 4): texts the training data's reader took as missing
are missing in requests too, and a Deployment that refuses unknown categories answers a value outside the
Dataset's allowed values with a 400 naming the feature and the value, in V2 JSON, V2 binary and V1 alike. The
allowed values and missing texts travel from the Dataset through the training pod into the model manifest."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from kultivar.api.contracts import ManifestFeature, ModelManifest, TrainingInput
from kultivar.api.dataset import CSV_MISSING_TOKENS, missing_tokens, source_format
from kultivar.api.deployment import DeploymentSpec
from kultivar.domain.trainingrun import dataset_features
from kultivar.serving.config import ConfigError, ServingConfig
from kultivar.serving.model import ModelLoadError, feature_specs
from kultivar.serving.payload import FeatureSpec, PayloadError, parse_v1, parse_v2
from kultivar.workloads.training import manifest_features

DIGEST = "sha256:" + "ab" * 32
REGION = frozenset({"north", "south", "east", "west"})
CSV_READ = frozenset(CSV_MISSING_TOKENS)
# A model trained from a CSV: region declares allowed values, plan does not.
REFUSING = [FeatureSpec("age", "numeric"), FeatureSpec("region", "categorical", CSV_READ, REGION),
            FeatureSpec("plan", "categorical", CSV_READ)]
ACCEPTING = [FeatureSpec("age", "numeric"), FeatureSpec("region", "categorical", CSV_READ),
             FeatureSpec("plan", "categorical", CSV_READ)]


def v2_json(region: list[Any], plan: list[Any] | None = None) -> bytes:
    plan = plan if plan is not None else ["pro"] * len(region)
    return json.dumps({"inputs": [
        {"name": "age", "shape": [len(region)], "datatype": "FP64", "data": [30.0] * len(region)},
        {"name": "region", "shape": [len(region)], "datatype": "BYTES", "data": region},
        {"name": "plan", "shape": [len(plan)], "datatype": "BYTES", "data": plan},
    ]}).encode()


def v2_binary(region: list[str], plan: list[str] | None = None) -> tuple[bytes, int]:
    """The same request with every input in the binary data extension, as tritonclient sends it."""
    import numpy as np

    plan = plan if plan is not None else ["pro"] * len(region)

    def texts(values: list[str]) -> bytes:
        return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)

    ages = np.full(len(region), 30.0, dtype="<f8").tobytes()
    chunks = [ages, texts(region), texts(plan)]
    header = json.dumps({"inputs": [
        {"name": name, "shape": [len(region)], "datatype": datatype, "parameters": {"binary_data_size": len(chunk)}}
        for (name, datatype), chunk in zip((("age", "FP64"), ("region", "BYTES"), ("plan", "BYTES")), chunks,
                                           strict=True)
    ]}).encode()
    return header + b"".join(chunks), len(header)


def v1(region: list[Any], plan: list[Any] | None = None) -> bytes:
    plan = plan if plan is not None else ["pro"] * len(region)
    return json.dumps({"instances": [{"age": 30, "region": r, "plan": p}
                                     for r, p in zip(region, plan, strict=True)]}).encode()


def region_column(body: str, region: list[Any], features: list[FeatureSpec]) -> list[Any]:
    if body == "v2":
        rows = parse_v2(v2_json(region), features, "churn").rows
    elif body == "binary":
        raw, length = v2_binary(region)
        rows = parse_v2(raw, features, "churn", header_length=length).rows
    else:
        rows = parse_v1(v1(region), features, "churn").rows
    return rows.columns[1].tolist()


BODIES = ("v2", "binary", "v1")

# ------------------------------------------------------------------------------------------------ refusal


@pytest.mark.parametrize("body", BODIES)
def test_a_value_outside_allowed_is_refused_naming_feature_and_value(body: str) -> None:
    with pytest.raises(PayloadError) as refused:
        region_column(body, ["north", "mars"], REFUSING)
    message = str(refused.value)
    assert "'region'" in message and "'mars'" in message
    assert "allowed: 'east', 'north', 'south', 'west'" in message  # what may be sent instead
    assert "spec.serving.unknownCategories" in message and "retrain" in message  # and how to change it
    where = {"v2": "inputs[1] ('region').data[1]", "binary": "inputs[1] ('region').data[1]",
             "v1": "instances[1]['region']"}[body]
    assert message.startswith(where), message


@pytest.mark.parametrize("body", BODIES)
def test_allowed_values_and_missing_ones_pass_and_unrestricted_features_take_anything(body: str) -> None:
    assert region_column(body, ["north", "west"], REFUSING) == ["north", "west"]
    if body != "binary":  # null has no binary BYTES spelling
        column = region_column(body, ["south", None], REFUSING)
        assert column[0] == "south" and math.isnan(column[1])
    # plan declares no allowed values: any text is a category, refused or not.
    rows = parse_v2(v2_json(["east"], ["platinum"]), REFUSING, "churn").rows
    assert rows.columns[2].tolist() == ["platinum"]


@pytest.mark.parametrize("body", BODIES)
def test_accepting_deployments_pass_unknown_values_to_the_model(body: str) -> None:
    assert region_column(body, ["mars"], ACCEPTING) == ["mars"]


def test_numbers_are_compared_with_allowed_as_validation_compares_them() -> None:
    codes = [FeatureSpec("code", "categorical", frozenset(), frozenset({"1", "2"}))]
    doc = {"inputs": [{"name": "code", "shape": [2], "datatype": "INT64", "data": [1, 2.0]}]}
    assert parse_v2(json.dumps(doc).encode(), codes, "m").rows.columns[0].tolist() == ["1", "2"]
    with pytest.raises(PayloadError, match=r"is '3', which is not an allowed value of feature 'code'"):
        parse_v1(json.dumps({"instances": [[3]]}).encode(), codes, "m")


# ---------------------------------------------------------------------------------------- missing spellings


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("token", ["None", "nan", "NaN", "NA", "N/A", "null", "NULL", "<NA>", ""])
def test_missing_spellings_are_missing_when_training_read_them_so(body: str, token: str) -> None:
    # Refusing too: a missing value is not an unknown category.
    (value,) = region_column(body, [token], REFUSING)
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize("body", BODIES)
def test_missing_spellings_are_categories_when_training_kept_them(body: str) -> None:
    # Trained from Parquet or JSON lines (no missing texts recorded), or from an old manifest: "None" is a text.
    parquet = [FeatureSpec("age", "numeric"), FeatureSpec("region", "categorical"), FeatureSpec("plan", "categorical")]
    assert region_column(body, ["None", "nan"], parquet) == ["None", "nan"]


def test_similar_spellings_outside_the_list_stay_categories() -> None:
    # The reader compares exactly (pandas' CSV parser does not strip or fold case), and so does the server.
    assert region_column("v2", [" None", "NONE", "none"], ACCEPTING) == [" None", "NONE", "none"]


# ----------------------------------------------------------------------------------------- missing texts


def test_the_csv_missing_texts_are_pandas_defaults_which_the_reader_is_given() -> None:
    from pandas._libs.parsers import STR_NA_VALUES

    assert set(CSV_MISSING_TOKENS) == STR_NA_VALUES and len(CSV_MISSING_TOKENS) == len(STR_NA_VALUES)


@pytest.mark.parametrize(("uri", "declared", "fmt", "tokens"), [
    ("pvc://c/data/churn.csv", "auto", "csv", CSV_MISSING_TOKENS),
    ("s3://b/churn.csv.gz", "auto", "csv", CSV_MISSING_TOKENS),
    ("s3://b/churn.tsv", "auto", "csv", CSV_MISSING_TOKENS),
    ("s3://b/churn.parquet", "auto", "parquet", ()),
    ("s3://b/churn.jsonl", "auto", "jsonl", ()),
    ("s3://b/export", "csv", "csv", CSV_MISSING_TOKENS),
    ("s3://b/export", "auto", None, ()),
    ("sklearn://iris", "auto", None, ()),
])
def test_the_source_format_decides_the_missing_texts(uri: str, declared: str, fmt: str | None,
                                                     tokens: tuple[str, ...]) -> None:
    if not uri.startswith("sklearn://"):
        assert source_format(uri, declared) == fmt
    assert missing_tokens(uri, declared) == tokens


def test_csv_validation_reads_exactly_those_texts_as_missing(tmp_path: Any) -> None:
    from kultivar.api.dataset import DatasetSchema, DatasetSource
    from kultivar.workloads.data import load_source

    path = tmp_path / "d.csv"
    path.write_text("region,y\nNone,a\nnan,b\n,a\nnone,b\n NA,a\nnorth,b\n")
    schema = DatasetSchema.model_validate({"target": "y", "task": "classification",
                                           "features": [{"name": "region", "type": "categorical"}]})
    frame = load_source(DatasetSource(uri=str(path)), schema)
    assert frame["region"].isna().tolist() == [True, True, True, False, False, False]


# --------------------------------------------------------------------------------- Dataset -> pod -> manifest


def dataset(uri: str = "pvc://kultivar-artifacts/data/churn.csv") -> dict[str, Any]:
    return {"spec": {"source": {"uri": uri}, "schema": {"target": "churn", "task": "classification", "features": [
        {"name": "age", "type": "numeric"},
        {"name": "region", "type": "categorical", "allowed": ["north", "south"]},
        {"name": "plan", "type": "categorical", "nullable": True},
    ]}}}


def test_the_training_pod_is_told_allowed_values_and_missing_texts() -> None:
    features = {f.name: f for f in dataset_features(dataset())}
    assert features["region"].allowed == ["north", "south"]
    assert features["region"].missingTokens == list(CSV_MISSING_TOKENS)
    assert features["plan"].allowed is None and features["plan"].missingTokens == list(CSV_MISSING_TOKENS)
    assert features["age"].allowed is None and features["age"].missingTokens is None
    parquet = {f.name: f for f in dataset_features(dataset("s3://b/churn.parquet"))}
    assert parquet["region"].missingTokens == [] and parquet["region"].allowed == ["north", "south"]


def test_allowed_values_and_missing_texts_survive_the_environment_and_the_manifest() -> None:
    sent = TrainingInput(spec={}, namespace="ns", name="r", store="file:///s", uid="u", dataset_snapshot="s",
                         dataset_digest=DIGEST, task="classification", target="churn",
                         features=dataset_features(dataset()))
    env = sent.to_env()
    assert json.loads(env["KULTIVAR_FEATURES"])[0] == {"name": "age", "type": "numeric"}  # nothing unset written
    received = TrainingInput.from_env(env)
    described = manifest_features(received.features)
    manifest = ModelManifest(artifact={"uri": "file:///m", "digest": DIGEST, "sizeBytes": 1},
                             task="classification", features=described)
    again = ModelManifest.from_json(manifest.to_json())
    region = next(f for f in again.features if f.name == "region")
    assert region.allowed == ["north", "south"] and region.missingTokens == list(CSV_MISSING_TOKENS)
    assert region.dtype == "string" and again.features[0].dtype == "float64"
    assert again == manifest


def test_an_old_manifest_records_neither_and_serves_as_before() -> None:
    old = ModelManifest.model_validate({
        "artifact": {"uri": "file:///m", "digest": DIGEST, "sizeBytes": 1}, "task": "classification",
        "features": [{"name": "region", "type": "categorical", "dtype": "string"}]})
    assert old.features[0].allowed is None and old.features[0].missingTokens is None
    (spec,) = feature_specs(old, refuse_unknown=False)
    assert spec.missing == frozenset() and spec.allowed is None  # "None" stays a text, nothing refused


# ------------------------------------------------------------------------------------------- the server side


def manifest(*features: dict[str, Any]) -> ModelManifest:
    return ModelManifest(artifact={"uri": "file:///m", "digest": DIGEST, "sizeBytes": 1}, task="classification",
                         features=[ManifestFeature.model_validate(f) for f in features])


def test_refusing_takes_the_allowed_values_of_the_manifest() -> None:
    model = manifest({"name": "age", "type": "numeric"},
                     {"name": "region", "type": "categorical", "allowed": ["north", "1.0"], "missingTokens": ["NA"]},
                     {"name": "plan", "type": "categorical", "missingTokens": ["NA"]})
    age, region, plan = feature_specs(model, refuse_unknown=True)
    assert region.allowed == frozenset({"north", "1.0"}) and region.missing == frozenset({"NA"})
    assert plan.allowed is None and age.allowed is None
    assert feature_specs(model, refuse_unknown=False)[1].allowed is None  # Accept: nothing is refused


@pytest.mark.parametrize(("features", "says"), [
    ([{"name": "region", "type": "categorical"}], "categorical features (region) record no allowed values"),
    ([{"name": "age", "type": "numeric"}], "it has no categorical features"),
])
def test_refusing_with_nothing_to_refuse_by_stops_the_server_saying_why(features: list[dict[str, Any]],
                                                                        says: str) -> None:
    with pytest.raises(ModelLoadError) as stopped:
        feature_specs(manifest(*features), refuse_unknown=True)
    assert stopped.value.reason == "NoAllowedValues" and stopped.value.permanent
    assert says in stopped.value.message and "spec.serving.unknownCategories to Accept" in stopped.value.message


def test_the_server_setting() -> None:
    env = {"KULTIVAR_MODEL_NAME": "m", "KULTIVAR_MODEL_URI": "file:///m", "KULTIVAR_MODEL_DIGEST": DIGEST}
    assert ServingConfig.from_env(env).unknown_categories == "accept"
    assert ServingConfig.from_env({**env, "KULTIVAR_UNKNOWN_CATEGORIES": "Refuse"}).unknown_categories == "refuse"
    with pytest.raises(ConfigError, match="KULTIVAR_UNKNOWN_CATEGORIES must be one of accept, refuse"):
        ServingConfig.from_env({**env, "KULTIVAR_UNKNOWN_CATEGORIES": "drop"})


def test_the_deployment_option_defaults_to_accept() -> None:
    spec = DeploymentSpec.model_validate({"modelRef": {"name": "churn"}})
    assert spec.serving.unknownCategories == "Accept"
    refusing = DeploymentSpec.model_validate({"modelRef": {"name": "churn"},
                                              "serving": {"unknownCategories": "Refuse"}})
    assert refusing.serving.unknownCategories == "Refuse"
