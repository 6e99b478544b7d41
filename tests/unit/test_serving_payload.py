"""Request parsing and validation (V2 and V1) into the model's per-feature columns."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest

from kultivar.api.dataset import Feature
from kultivar.domain.profile import FALSE_WORDS, TRUE_WORDS
from kultivar.serving.payload import (
    FeatureSpec,
    PayloadError,
    Rows,
    concat,
    datatype_of,
    parse_v1,
    parse_v2,
)

IRIS = [FeatureSpec(n, "numeric") for n in ("sl", "sw", "pl", "pw")]
MIXED = [FeatureSpec("age", "numeric"), FeatureSpec("member", "boolean"), FeatureSpec("plan", "categorical")]


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def tensor(data: Any, shape: list[int], datatype: str = "FP64", name: str = "input-0") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def v2(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return body({"inputs": list(inputs), **extra})


def columns(rows: Rows) -> list[list[Any]]:
    return [c.tolist() for c in rows.columns]


# ----------------------------------------------------------------------------------------------- V2 valid


def test_v2_matrix_flat_and_nested_give_the_same_columns() -> None:
    flat = parse_v2(v2(tensor([5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3], [2, 4], "FP32")), IRIS, "iris")
    nested = parse_v2(v2(tensor([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], [2, 4])), IRIS, "iris")
    assert flat.rows.count == nested.rows.count == 2
    assert columns(flat.rows) == columns(nested.rows) == [[5.1, 6.7], [3.5, 3.0], [1.4, 5.2], [0.2, 2.3]]
    assert all(c.dtype == np.float64 for c in flat.rows.columns)


def test_v2_integers_nulls_and_request_id() -> None:
    parsed = parse_v2(v2(tensor([5, None, 1, 0], [1, 4], "INT64"), id="req-1"), IRIS, "iris")
    assert parsed.id == "req-1"
    values = [c[0] for c in parsed.rows.columns]
    assert values[0] == 5.0 and math.isnan(values[1]) and values[2:] == [1.0, 0.0]


def test_v2_one_input_per_feature_with_mixed_types() -> None:
    parsed = parse_v2(v2(
        tensor(["pro", None, 3], [3], "BYTES", name="plan"),
        tensor([41.5, None, 30], [3, 1], "FP32", name="age"),
        tensor([True, False, None], [3], "BOOL", name="member"),
    ), MIXED, "churn")
    age, member, plan = parsed.rows.columns
    assert age.dtype == np.float64 and member.dtype == np.float64 and plan.dtype == object
    assert age[0] == 41.5 and math.isnan(age[1]) and age[2] == 30.0
    assert member[:2].tolist() == [1.0, 0.0] and math.isnan(member[2])
    assert plan[0] == "pro" and math.isnan(plan[1]) and plan[2] == "3"  # numbers become training's text


@pytest.mark.parametrize(("data", "datatype", "expected"), [
    ([1, 0], "INT32", [1.0, 0.0]),
    (["yes", "False"], "BYTES", [1.0, 0.0]),
    ([True, False], "BOOL", [1.0, 0.0]),
])
def test_v2_boolean_feature_spellings(data: list[Any], datatype: str, expected: list[float]) -> None:
    parsed = parse_v2(v2(tensor([1.0, 2.0], [2], name="age"), tensor(data, [2], datatype, name="member"),
                         tensor(["a", "b"], [2], "BYTES", name="plan")), MIXED, "churn")
    assert parsed.rows.columns[1].tolist() == expected


def test_v2_single_feature_model_named_input() -> None:
    one = [FeatureSpec("x", "numeric")]
    parsed = parse_v2(v2(tensor([1.0, 2.0, 3.0], [3], name="x")), one, "m")
    assert parsed.rows.count == 3 and columns(parsed.rows) == [[1.0, 2.0, 3.0]]


def test_v2_asking_for_the_predict_output_is_fine() -> None:
    parse_v2(v2(tensor([1, 2, 3, 4], [1, 4]), outputs=[{"name": "predict"}]), IRIS, "iris")


# ---------------------------------------------------------------------------------------------- V2 errors


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "empty"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"inputs": 1e999}', "not valid JSON"),  # infinity cannot come through JSON
    (body({"instances": [[1, 2, 3, 4]]}), "'inputs' must be a non-empty list"),
    (body({"inputs": []}), "'inputs' must be a non-empty list"),
    (body({"inputs": ["x"]}), "inputs[0] must be an object"),
    (body({"inputs": [{"name": "x", "shape": [1, 4]}]}), "inputs[0] lacks datatype, data"),
    (v2(tensor([1, 2, 3, 4], [1, 4], "FLOAT32")), "not a V2 datatype"),
    (v2(tensor([1, 2, 3, 4], [1, -4])), "shape must be a list of non-negative integers"),
    (v2(tensor([1, 2, 3, 4], [4])), "send shape [1, 4]"),
    (v2(tensor([1, 2, 3, 4], [1, 2, 2])), "must be [rows, features]"),
    (v2(tensor([1, 2, 3], [1, 3])), "takes 4 features (sl, sw, pl, pw) but inputs[0] has 3 columns"),
    (v2(tensor([1, 2, 3], [1, 4])), "shape [1, 4] needs 4 values but data has 3"),
    (v2(tensor([], [0, 4])), "has no rows"),
    (v2(tensor([1, "abc", 3, 4], [1, 4])), "inputs[0].data[1] is 'abc', not a number"),
    (v2(tensor([1, {"a": 1}, 3, 4], [1, 4])), "mixes values and lists"),
    (v2(tensor([[1, 2], [3, 4, 5]], [2, 4])), "ragged"),
    (v2(tensor("1,2,3,4", [1, 4])), "data must be a list"),
    (v2(tensor([1, 2.5, 3, 4], [1, 4], "INT64")), "data[1] is 2.5, not an integer"),
    (v2(tensor([1, -2, 3, 4], [1, 4], "UINT8")), "UINT8 cannot be negative"),
    (v2(tensor(["a", "b", "c", "d"], [1, 4], "BYTES")), "datatype BYTES cannot carry numeric features"),
    (v2(tensor([1, 2, 3, 4], [1, 4]), outputs=[{"name": "proba"}]), "outputs are 'predict' and 'predict_proba'"),
    (v2(tensor([1, 2, 3, 4], [1, 4]), outputs=[{"name": "predict"}, {"name": "predict"}]), "'predict' twice"),
    (v2(tensor([1, 2, 3, 4], [1, 4]), id=5), "'id' must be a string"),
])
def test_v2_bad_requests_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_v2(raw, IRIS, "iris")
    assert message in str(e.value)


@pytest.mark.parametrize(("inputs", "message"), [
    ([tensor([1.0, 2.0, 0.0, 1.0, 0.0, 1.0], [2, 3])], "has categorical features (plan)"),
    ([tensor([1.0], [1], name="age"), tensor([1], [1], "INT8", name="member")], "missing plan"),
    ([tensor([1.0], [1], name="age")], "inputs are missing member, plan"),
    ([tensor([1.0], [1], name="age"), tensor([1], [1], name="member"), tensor(["a"], [1], "BYTES", name="plan"),
      tensor([1.0], [1], name="age")], "both named 'age'"),
    ([tensor([1.0], [1], name="agee"), tensor([1], [1], name="member"), tensor(["a"], [1], "BYTES", name="plan")],
     "'agee', which is not a feature"),
    ([tensor([1.0, 2.0], [2], name="age"), tensor([1], [1], name="member"), tensor(["a"], [1], "BYTES", name="plan")],
     "has 1 rows but inputs[0] ('age') has 2"),
    ([tensor(["1.5"], [1], "BYTES", name="age"), tensor([1], [1], name="member"),
      tensor(["a"], [1], "BYTES", name="plan")], "feature 'age' is numeric; send it as FP64"),
    ([tensor([1.0], [1], name="age"), tensor([2], [1], "INT8", name="member"),
      tensor(["a"], [1], "BYTES", name="plan")],
     "a boolean feature takes 0 or 1"),
    ([tensor([1.0], [1], name="age"), tensor(["maybe"], [1], "BYTES", name="member"),
      tensor(["a"], [1], "BYTES", name="plan")], "'maybe'; a boolean feature takes true/false"),
    ([tensor([1.0], [1], name="age"), tensor([1], [1], "BOOL", name="member"),
      tensor(["a"], [1], "BYTES", name="plan")],
     "BOOL data must be true or false"),
    ([tensor([1.0], [1], name="age"), tensor([1], [1], name="member"), tensor([{"a": 1}], [1], "BYTES", name="plan")],
     "mixes values and lists"),
    ([tensor([1.0], [1, 2], name="age"), tensor([1], [1], name="member"), tensor(["a"], [1], "BYTES", name="plan")],
     "must be [rows] or [rows, 1]"),
])
def test_v2_per_feature_errors(inputs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_v2(v2(*inputs), MIXED, "churn")
    assert message in str(e.value)


def test_v2_boolean_column_of_a_numeric_matrix_must_be_zero_or_one() -> None:
    features = [FeatureSpec("x", "numeric"), FeatureSpec("flag", "boolean")]
    assert columns(parse_v2(v2(tensor([0.5, 1, 2.0, 0], [2, 2])), features, "m").rows) == [[0.5, 2.0], [1.0, 0.0]]
    with pytest.raises(PayloadError, match=r"row 1, column 1 \('flag'\) is 3"):
        parse_v2(v2(tensor([0.5, 1, 2.0, 3], [2, 2])), features, "m")


# ------------------------------------------------------------------------------------------------------ V1


def test_v1_lists_and_objects() -> None:
    request = parse_v1(body({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}), IRIS, "iris")
    assert not request.probabilities
    assert columns(request.rows) == [[1.0, 5.0], [2.0, 6.0], [3.0, 7.0], [4.0, 8.0]]
    mixed = parse_v1(body({"instances": [{"age": 30, "member": "yes", "plan": "pro"},
                                         {"age": None, "member": 0, "plan": None},
                                         [41.0, True, 2]]}), MIXED, "churn").rows
    age, member, plan = mixed.columns
    assert age[0] == 30.0 and math.isnan(age[1]) and age[2] == 41.0
    assert member.tolist() == [1.0, 0.0, 1.0]
    assert plan[0] == "pro" and math.isnan(plan[1]) and plan[2] == "2"


@pytest.mark.parametrize(("doc", "features", "message"), [
    ({"instances": []}, IRIS, "'instances' must be a non-empty list"),
    ({"inputs": {"sl": [1]}}, IRIS, "not the columnar 'inputs' form"),
    ({"instances": [[1, 2, 3]]}, IRIS, "instances[0] has 3 values but model 'iris' takes 4 features"),
    ({"instances": [[1, 2, 3, "x"]]}, IRIS, "instances[0]['pw'] is 'x', not a number"),
    ({"instances": [{"sl": 1, "petal": 2}]}, IRIS, "unknown feature 'petal'"),
    ({"instances": ["1,2,3,4"]}, IRIS, "instances[0] must be a list of values"),
    ({"instances": [[1, 2, 3, 4], [1, 2]]}, IRIS, "instances[1] has 2 values"),
    ({"instances": [{"age": 1, "member": 3, "plan": "a"}]}, MIXED, "is boolean and takes true/false or 1/0"),
    ({"instances": [{"age": 1, "member": 1, "plan": ["a"]}]}, MIXED, "is categorical and takes text"),
])
def test_v1_bad_requests(doc: dict[str, Any], features: list[FeatureSpec], message: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_v1(body(doc), features, "iris" if features is IRIS else "churn")
    assert message in str(e.value)


def test_v1_boolean_column_in_the_fast_path_is_checked() -> None:
    features = [FeatureSpec("x", "numeric"), FeatureSpec("flag", "boolean")]
    with pytest.raises(PayloadError, match="'flag' is 2"):
        parse_v1(body({"instances": [[1.5, 2]]}), features, "m")


# ------------------------------------------------------------------------------------------------- helpers


def test_concat_keeps_row_order_per_feature() -> None:
    a = Rows((np.array([1.0]), np.array(["x"], dtype=object)), 1)
    b = Rows((np.array([2.0, 3.0]), np.array(["y", "z"], dtype=object)), 2)
    joined = concat([a, b])
    assert joined.count == 3
    assert columns(joined) == [[1.0, 2.0, 3.0], ["x", "y", "z"]]
    assert concat([a]) is a


@pytest.mark.parametrize(("values", "datatype"), [
    (np.array([1, 2]), "INT64"), (np.array([0.5]), "FP64"), (np.array([True]), "BOOL"),
    (np.array(["a"], dtype=object), "BYTES"),
])
def test_output_datatype(values: np.ndarray, datatype: str) -> None:
    assert datatype_of(values) == datatype


@pytest.mark.parametrize("word", [
    *sorted(TRUE_WORDS | FALSE_WORDS), "TRUE", " Yes ", "N", "1.0", "0.0",
    "2", "1.00", "on", "off", "maybe", "", "-1", "truee", "nan",
])
def test_serving_accepts_exactly_the_boolean_words_training_accepts(word: str) -> None:
    import pandas as pd

    from kultivar.workloads.canonical import coerce_frame

    frame, mismatches = coerce_frame(pd.DataFrame({"b": [word], "y": [0]}),
                                     [Feature(name="b", type="boolean", nullable=True)], "y", "classification")
    trained = None if mismatches or np.isnan(frame["b"][0]) else float(frame["b"][0])
    feature = [FeatureSpec("b", "boolean")]
    served: dict[str, float | None] = {}
    for protocol, body, parse in (
        ("v2", {"inputs": [{"name": "b", "shape": [1], "datatype": "BYTES", "data": [word]}]}, parse_v2),
        ("v1", {"instances": [[word]]}, parse_v1),
    ):
        try:
            parsed = parse(json.dumps(body).encode(), feature, "m")
            rows = parsed if isinstance(parsed, Rows) else parsed.rows
            served[protocol] = float(rows.columns[0][0])
        except PayloadError:
            served[protocol] = None
    if word == "":
        # Empty text: missing in a data file (NaN), an error in a request; neither reads it as true or false.
        assert trained is None and set(served.values()) == {None}
        return
    assert served == {"v2": trained, "v1": trained}, f"{word!r}: training read {trained}, serving read {served}"


# ---------------------------------------------------------------------------------- outputs and binary data


def test_requested_outputs() -> None:
    one = tensor([1, 2, 3, 4], [1, 4])
    assert [o.name for o in parse_v2(v2(one), IRIS, "m").outputs] == ["predict"]
    both = parse_v2(v2(one, parameters={"probabilities": True}), IRIS, "m")
    assert [o.name for o in both.outputs] == ["predict", "predict_proba"] and both.probabilities
    only = parse_v2(v2(one, outputs=[{"name": "predict_proba", "parameters": {"binary_data": True}}]), IRIS, "m")
    assert [(o.name, o.binary) for o in only.outputs] == [("predict_proba", True)]
    default_binary = parse_v2(v2(one, parameters={"binary_data_output": True}), IRIS, "m")
    assert [(o.name, o.binary) for o in default_binary.outputs] == [("predict", True)]
    v1 = parse_v1(body({"instances": [[1, 2, 3, 4]], "parameters": {"probabilities": True}}), IRIS, "m")
    assert v1.probabilities


@pytest.mark.parametrize("request_body,problem", [
    ({"parameters": {"probabilities": "yes"}}, "parameters.probabilities must be true or false, got 'yes'"),
    ({"parameters": {"binary_data_output": 1}}, "parameters.binary_data_output must be true or false, got 1"),
    ({"outputs": [{"name": "predict", "parameters": {"binary_data": "true"}}]},
     "outputs[0].parameters.binary_data must be true or false"),
    ({"outputs": [{"name": "predict", "parameters": ["binary_data"]}]}, "outputs[0].parameters must be an object"),
])
def test_flags_of_ours_with_other_values_are_refused(request_body: dict[str, Any], problem: str) -> None:
    """A flag this server reads, given something other than true or false, is a 400 naming it - not silently
    read as false. Parameters it does not read (a client's priority or timeout) are left alone."""
    one = tensor([1, 2, 3, 4], [1, 4])
    with pytest.raises(PayloadError, match=re.escape(problem)):
        parse_v2(v2(one, **request_body), IRIS, "m")
    with pytest.raises(PayloadError, match=re.escape("parameters.probabilities must be true or false")):
        parse_v1(body({"instances": [[1, 2, 3, 4]], "parameters": {"probabilities": 1}}), IRIS, "m")
    assert parse_v2(v2(one, parameters={"priority": 3, "timeout": 1000}), IRIS, "m").outputs[0].name == "predict"


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    text = json.dumps(header).encode()
    return text + b"".join(chunks), len(text)


def test_binary_inputs_as_tritonclient_lays_them_out() -> None:
    ages = np.array([30.5, np.nan], dtype="<f4")
    members = np.array([True, False])
    plans = [b"pro", "b\u00e4sic".encode()]
    plan_bytes = b"".join(len(p).to_bytes(4, "little") + p for p in plans)
    raw, length = binary_body({"inputs": [
        {"name": "age", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "plan", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(plan_bytes)}},
        {"name": "member", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}},
    ]}, ages.tobytes(), plan_bytes, members.tobytes())
    parsed = parse_v2(raw, MIXED, "churn", header_length=length)
    age, member, plan = parsed.rows.columns
    assert age[0] == 30.5 and math.isnan(age[1])  # NaN in an FP tensor is a missing value
    assert member.tolist() == [1.0, 0.0] and plan.tolist() == ["pro", "b\u00e4sic"]
    matrix = np.arange(8, dtype="<f8").reshape(2, 4)
    raw, length = binary_body({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64",
                                           "parameters": {"binary_data_size": 64}}]}, matrix.tobytes())
    assert columns(parse_v2(raw, IRIS, "iris", header_length=length).rows) == matrix.T.tolist()


@pytest.mark.parametrize(("size", "extra", "header", "message"), [
    (31, b"", None, "binary_data_size is 31 bytes but shape [2, 4] of FP32 needs 32"),
    (32, b"x", None, "1 bytes follow the JSON header and the inputs' binary data"),
    (64, b"", None, "binary_data_size is 64 but only 32 bytes"),
    (32, b"", 10_000, "Inference-Header-Content-Length is 10000"),
])
def test_bad_binary_requests_say_what_is_wrong(size: int, extra: bytes, header: int | None, message: str) -> None:
    raw, length = binary_body({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                           "parameters": {"binary_data_size": size}}]},
                              np.zeros(8, dtype="<f4").tobytes() + extra)
    with pytest.raises(PayloadError, match=re.escape(message)):
        parse_v2(raw, IRIS, "iris", header_length=header or length)


def test_binary_outputs_round_trip() -> None:
    from kultivar.serving.payload import encode_binary

    labels = np.array(["yes", "n\u00f6"], dtype=object)
    raw = encode_binary(labels, "BYTES")
    assert raw == b"\x03\x00\x00\x00yes" + b"\x03\x00\x00\x00n\xc3\xb6"
    proba = np.array([[0.25, 0.75], [1.0, 0.0]])
    assert np.frombuffer(encode_binary(proba, "FP64"), dtype="<f8").tolist() == [0.25, 0.75, 1.0, 0.0]
    assert np.frombuffer(encode_binary(np.array([3, 1]), "INT64"), dtype="<i8").tolist() == [3, 1]


# --------------------------------------------------------------------- the plain-matrix fast path (floats)


@pytest.mark.parametrize("features", [IRIS, [FeatureSpec("a", "numeric"), FeatureSpec("b", "boolean")] * 2])
def test_plain_float_matrix_parses_as_the_general_path_does(features: list[FeatureSpec]) -> None:
    data = [[5.1, 1.0, 1.4, 0.0], [6.7, 0.0, 5.2, 1.0], [4.9, 1.0, 0.5, 1.0]]
    features = [FeatureSpec(f"{f.name}{j}", f.type) for j, f in enumerate(features)]
    fast = parse_v2(v2(tensor([x for row in data for x in row], [3, 4])), features, "m")  # flat floats
    general = parse_v2(v2(tensor(data, [3, 4])), features, "m")  # nested: the general path
    assert columns(fast.rows) == columns(general.rows) == [list(c) for c in zip(*data, strict=True)]
    assert fast.rows.count == 3 and all(c.dtype == np.float64 for c in fast.rows.columns)
    fast.rows.columns[0][0] = -1.0  # the columns are the request's own arrays, not views of something shared
    assert parse_v2(v2(tensor([x for row in data for x in row], [3, 4])), features, "m").rows.columns[0][0] == 5.1


@pytest.mark.parametrize(("doc", "message"), [
    (v2(tensor([1.5, "abc", 3.5, 4.5], [1, 4])), "inputs[0].data[1] is 'abc', not a number"),
    (v2(tensor([1.5, 2.5, 3.5], [1, 4])), "shape [1, 4] needs 4 values but data has 3"),
    (v2(tensor([1.5, 2.5, 3.5, 4.5], [1, 3])), "takes 4 features"),
    (v2(tensor([1.5, 2.5, 3.5, 4.5], [1, 4], "BYTES")), "datatype BYTES cannot carry numeric features"),
])
def test_plain_float_matrix_errors_are_the_general_paths(doc: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_v2(doc, IRIS, "iris")
    assert message in str(e.value)
    booleans = [FeatureSpec("a", "numeric"), FeatureSpec("b", "boolean")]
    with pytest.raises(PayloadError, match=re.escape("row 0, column 1 ('b') is 0.5")):
        parse_v2(v2(tensor([1.5, 0.5], [1, 2])), booleans, "m")
