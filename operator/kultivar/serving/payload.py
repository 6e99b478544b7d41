"""Request parsing and validation: V2 (Open Inference Protocol) and V1 bodies into per-feature columns.

The model takes one column per feature, in the manifest's order, typed as in training: numeric and boolean
features as float64 (booleans as 1.0/0.0), categorical features as text, NaN marking a missing value everywhere
(the model's pipeline imputes it). Everything a client can get wrong is caught here and reported as a
:class:`PayloadError` (HTTP 400) that names the input, the position and what to send instead; the model never
sees a malformed batch, so one bad request cannot fail the requests batched with it.

Accepted V2 layouts (``POST /v2/models/<name>/infer``):

* one tensor of shape ``[rows, features]`` holding the features in the model's order; any numeric datatype
  (FP16/32/64, INT*, UINT*), for models whose features are all numeric or boolean;
* one tensor per feature, named after it, of shape ``[rows]`` or ``[rows, 1]``: numeric datatypes for numeric
  features, BOOL (or 0/1 numbers, or BYTES such as "true"/"no") for boolean ones, BYTES for categorical ones.

``data`` may be flat (row-major) or nested. ``null`` marks a missing value (NaN too, in binary FP tensors).

Categorical values, in every layout and protocol alike (V2 JSON, V2 binary, V1): a text the training data's reader
took as missing (the manifest's ``missingTokens``: a CSV source's "None", "nan", "NA", "" ...) is missing here
too, and any other text is a category, so "None" means what it meant in training. With ``allowed`` set (the
Deployment refuses unknown categories) a value outside it is a 400 naming the input, the feature and the value.

Outputs: ``predict`` (the label, in the classes' own type: INT64, or BYTES for text) and, for classifiers with
probabilities, ``predict_proba`` (FP64, ``[rows, classes]`` in the metadata's class order). A request gets
``predict`` unless its ``outputs`` list names what it wants, or ``parameters: {"probabilities": true}`` adds
``predict_proba``.

The V2 binary tensor extension (what tritonclient sends by default): with the header
``Inference-Header-Content-Length: N`` the body's first N bytes are the JSON request and the rest holds the raw
tensors, in input order, of every input whose ``parameters.binary_data_size`` gives its byte length: little-endian
values of its datatype, BOOL one byte each, BYTES each a 4-byte little-endian length then the bytes. An output
is answered the same way when its request entry has ``parameters.binary_data: true`` (or, without an
``outputs`` list, when the request has ``parameters.binary_data_output: true``).

V1 (``POST /v1/models/<name>:predict``): ``{"instances": [row, ...]}`` where a row is a list of values in the
model's feature order or an object keyed by feature name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from kultivar.domain.profile import normalize_category

FeatureType = Literal["numeric", "boolean", "categorical"]

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
NUMERIC_TYPES = FLOAT_TYPES | INT_TYPES
DATATYPES = NUMERIC_TYPES | {"BOOL", "BYTES"}
OUTPUT = "predict"
PROBA_OUTPUT = "predict_proba"
OUTPUTS = (OUTPUT, PROBA_OUTPUT)
BINARY_DTYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4",
                 "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "BOOL": "|b1"}
_REPR_LIMIT = 60


class PayloadError(ValueError):
    """A request the server cannot use; the message is the 400 response's ``error``."""


@dataclass(frozen=True)
class FeatureSpec:
    """A model input. For a categorical feature: ``missing``, the texts read as missing values (those the training
    data's reader took as missing, from the manifest's ``missingTokens``); ``allowed``, when set, the only values
    accepted (the manifest's ``allowed``, set only when the Deployment refuses unknown categories)."""

    name: str
    type: FeatureType
    missing: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None


class Rows:
    """Validated model input: one array per feature in model order (float64, or object for categorical).

    ``matrix``: the same values as one C-ordered [count, features] float64 array when they came as one (a numeric
    V2 tensor, V1 numeric rows, or a batch of those); ``columns`` are then views of it, made when first asked for.
    A compiled model reads the matrix whole and drift accounting reads its rows, so the usual request never needs
    the per-feature views. (A plain class rather than a dataclass: it is made per request, and a frozen
    dataclass's ``__init__`` costs several times as much.)"""

    __slots__ = ("_columns", "count", "matrix")

    def __init__(self, columns: tuple[np.ndarray, ...], count: int) -> None:
        self._columns: tuple[np.ndarray, ...] | None = columns
        self.count = count
        self.matrix: np.ndarray | None = None

    @classmethod
    def of_matrix(cls, matrix: np.ndarray) -> Rows:
        """Rows holding ``matrix`` (C-ordered float64 [rows, features], as the parsers and ``concat`` make it)."""
        rows = cls.__new__(cls)
        rows._columns, rows.count, rows.matrix = None, len(matrix), matrix
        return rows

    @property
    def columns(self) -> tuple[np.ndarray, ...]:
        if self._columns is None:
            assert self.matrix is not None
            self._columns = tuple(self.matrix.T)
        return self._columns

    def __repr__(self) -> str:
        return f"Rows({self.count} rows of {len(self.columns)} features)"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False


DEFAULT_OUTPUTS = (RequestedOutput(OUTPUT),)


@dataclass(slots=True)
class V2Request:
    """A parsed V2 request (made per request: a slotted dataclass, not a frozen one, whose ``__init__`` costs
    three times as much)."""

    rows: Rows
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] = DEFAULT_OUTPUTS

    @property
    def probabilities(self) -> bool:
        return self.outputs is not DEFAULT_OUTPUTS and any(o.name == PROBA_OUTPUT for o in self.outputs)


@dataclass(slots=True)
class V1Request:
    rows: Rows
    probabilities: bool = False


# ------------------------------------------------------------------------------------------------- helpers


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT - 3] + "..."


def _names(features: Sequence[FeatureSpec]) -> str:
    names = [f.name for f in features]
    return ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + f", ... ({len(names)} in all)"


def load_json(body: bytes) -> Any:
    if not body:
        raise PayloadError("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise PayloadError(f"the request body is not valid JSON: {e}") from None


@dataclass(frozen=True)
class _Layout:
    """What validation needs to know about a model's features, worked out once per feature list (not per
    request: these requests take tens of microseconds, so the sets and lists below would be a visible share)."""

    features: Sequence[FeatureSpec]
    names: frozenset[str]
    categorical: tuple[str, ...]
    boolean: tuple[int, ...]  # positions of the boolean features


_layouts: dict[int, _Layout] = {}


def _layout(features: Sequence[FeatureSpec]) -> _Layout:
    layout = _layouts.get(id(features))
    if layout is None or layout.features is not features:  # ids are reused once an object is freed
        layout = _Layout(features, frozenset(f.name for f in features),
                         tuple(f.name for f in features if f.type == "categorical"),
                         tuple(j for j, f in enumerate(features) if f.type == "boolean"))
        if len(_layouts) > 64:
            _layouts.clear()
        _layouts[id(features)] = layout
    return layout


def _object(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise PayloadError(f"the request body must be a JSON object with {what}, got {type(doc).__name__}")
    return doc


# ------------------------------------------------------------------------------------------ value columns


def _flat(data: Any, where: str) -> np.ndarray:
    """``data`` (flat or nested lists, or an array decoded from binary data) as a 1-D array."""
    if isinstance(data, np.ndarray):
        return data.ravel()
    if not isinstance(data, list):
        raise PayloadError(f"{where}.data must be a list of values, got {type(data).__name__}")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise PayloadError(f"{where}.data is ragged: nested lists must all have the same length (or send the "
                           "values flat, in row-major order)") from None
    if arr.dtype.kind in "US":
        # numpy turned every value into text because one was text; go back to the values as sent, so the error
        # can point at the real offender.
        arr = np.asarray(data, dtype=object)
    if arr.dtype.kind == "O" and any(isinstance(v, list | dict) for v in arr.ravel()):
        raise PayloadError(f"{where}.data mixes values and lists; nest every row the same way or send it flat")
    return arr.ravel()


def _floats(arr: np.ndarray, where: str, datatype: str) -> np.ndarray:
    """Numbers (null as NaN) as float64; anything else is a 400 naming the first offender."""
    kind = arr.dtype.kind
    if kind in "fiub":
        out = arr.astype(np.float64)
    else:
        out = np.empty(arr.size, dtype=np.float64)
        for i, v in enumerate(arr):
            if v is None:
                out[i] = math.nan
            elif isinstance(v, int | float):  # bool is an int: true/false count as 1/0
                out[i] = float(v)
            else:
                raise PayloadError(f"{where}.data[{i}] is {_show(v)}, not a number; {datatype} data must be numbers "
                                   "(null for a missing value)")
    if datatype in INT_TYPES:
        fractional = np.isfinite(out) & (out != np.floor(out))
        if fractional.any():
            i = int(np.argmax(fractional))
            raise PayloadError(f"{where}.data[{i}] is {out[i]:g}, not an integer; use FP32/FP64 for fractional "
                               "values")
        if datatype.startswith("UINT") and (out < 0).any():
            i = int(np.argmax(out < 0))
            raise PayloadError(f"{where}.data[{i}] is {out[i]:g} but {datatype} cannot be negative")
    return out


def _finite(values: np.ndarray, where: str) -> None:
    if values.size <= 16 and not any(map(math.isinf, values.ravel().tolist())):
        return  # a few values (a one-row request): a Python loop beats two numpy calls
    bad = np.isinf(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise PayloadError(f"{where} holds an infinite value at position {i}; send finite numbers, or null for a "
                           "missing value")


def _boolean_value(v: Any) -> float | None:
    """1.0/0.0 for true/false, 1/0 and yes/no-like text; None for anything else (2 is not a boolean)."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v) if v in (0, 1) else None
    if isinstance(v, str):
        key = normalize_category(v, boolean=True)
        return 1.0 if key == "true" else 0.0 if key == "false" else None
    return None


def _booleans(arr: np.ndarray, where: str, datatype: str) -> np.ndarray:
    """A boolean feature: true/false, 0/1 or yes/no-like text, as 1.0/0.0 (NaN missing)."""
    if datatype in NUMERIC_TYPES:
        out = _floats(arr, where, datatype)
        bad = ~np.isnan(out) & (out != 0.0) & (out != 1.0)
        if bad.any():
            i = int(np.argmax(bad))
            raise PayloadError(f"{where}.data[{i}] is {out[i]:g}; a boolean feature takes 0 or 1 (or true/false)")
        return out
    out = np.empty(arr.size, dtype=np.float64)
    for i, v in enumerate(arr.tolist()):
        if v is None:
            out[i] = math.nan
            continue
        if datatype == "BOOL" and not isinstance(v, bool):
            raise PayloadError(f"{where}.data[{i}] is {_show(v)}; BOOL data must be true or false (null if missing)")
        value = _boolean_value(v)
        if value is None:
            raise PayloadError(f"{where}.data[{i}] is {_show(v)}; a boolean feature takes true/false, yes/no or 1/0")
        out[i] = value
    return out


def _unknown_category(feature: FeatureSpec, value: str, where: str) -> PayloadError:
    allowed = sorted(feature.allowed or ())
    shown = ", ".join(map(repr, allowed[:10])) + (f", ... ({len(allowed)} in all)" if len(allowed) > 10 else "")
    return PayloadError(
        f"{where} is {_show(value)}, which is not an allowed value of feature {feature.name!r} (allowed: {shown}); "
        "this Deployment refuses unknown categories (spec.serving.unknownCategories: Refuse). Send an allowed "
        f"value or null; or add {_show(value)} to allowed for {feature.name!r} in the Dataset's "
        "spec.schema.features and retrain; or set spec.serving.unknownCategories to Accept")


def _category(v: Any, feature: FeatureSpec, where: str) -> Any:
    """One categorical value as the model takes it: its text key (numbers normalised as in training), or NaN when
    missing (null, or a text the training data's reader took as missing); a 400 for a value outside ``allowed``."""
    if isinstance(v, str):
        if v in feature.missing:
            return math.nan
        key = v
    elif v is None or isinstance(v, int | float):
        normalized = normalize_category(v)
        if normalized is None:
            return math.nan
        key = normalized
    else:
        raise PayloadError(f"{where} is {_show(v)}; feature {feature.name!r} is categorical and takes text (or null)")
    if feature.allowed is not None and key not in feature.allowed:
        raise _unknown_category(feature, key, where)
    return key


def _categories(arr: np.ndarray, feature: FeatureSpec, where: str) -> np.ndarray:
    """A categorical feature's values (see :func:`_category`); missing as NaN."""
    out = np.empty(arr.size, dtype=object)
    for i, v in enumerate(arr.tolist()):
        out[i] = _category(v, feature, f"{where}.data[{i}]")
    return out


def _column(arr: np.ndarray, feature: FeatureSpec, where: str, datatype: str) -> np.ndarray:
    if feature.type == "numeric":
        if datatype not in NUMERIC_TYPES:
            raise PayloadError(f"{where} has datatype {datatype} but feature {feature.name!r} is numeric; send it as "
                               "FP64, FP32 or an INT type")
        values = _floats(arr, where, datatype)
        _finite(values, where)
        return values
    if feature.type == "boolean":
        return _booleans(arr, where, datatype)
    return _categories(arr, feature, where)


# ------------------------------------------------------------------------------------------------------ V2


def _tensor(raw: Any, index: int) -> tuple[str, list[int], str, Any]:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object with name, shape, datatype and data, got "
                           f"{type(raw).__name__}")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in raw]
    if missing:
        raise PayloadError(f"{where} lacks {', '.join(missing)}; every input needs name, shape, datatype and data")
    name, shape, datatype = raw["name"], raw["shape"], raw["datatype"]
    if not isinstance(name, str) or not name:
        raise PayloadError(f"{where}.name must be a non-empty string")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise PayloadError(f"{where}.shape must be a list of non-negative integers such as [1, 4], got "
                           f"{_show(shape)}")
    if datatype not in DATATYPES:
        raise PayloadError(f"{where}.datatype {_show(datatype)} is not a V2 datatype; use one of "
                           f"{', '.join(sorted(DATATYPES))}")
    return name, shape, datatype, raw["data"]


def _sized(raw_data: Any, shape: list[int], where: str) -> np.ndarray:
    arr = _flat(raw_data, where)
    expected = math.prod(shape)
    if arr.size != expected:
        raise PayloadError(f"{where}.shape {shape} needs {expected} values but data has {arr.size}")
    return arr


def _matrix(tensor: tuple[str, list[int], str, Any], features: Sequence[FeatureSpec], model: str) -> Rows:
    _, shape, datatype, data = tensor
    where = "inputs[0]"
    if len(shape) != 2:
        hint = f"[1, {shape[0]}]" if len(shape) == 1 else f"[rows, {len(features)}]"
        raise PayloadError(f"{where}.shape {shape} must be [rows, features]; for one row of {len(features)} "
                           f"features send shape {hint}")
    rows, width = shape
    if width != len(features):
        raise PayloadError(f"model {model!r} takes {len(features)} features ({_names(features)}) but {where} has "
                           f"{width} columns (shape {shape})")
    if rows == 0:
        raise PayloadError(f"{where} has no rows; send at least one")
    layout = _layout(features)
    categorical = layout.categorical
    if categorical:
        raise PayloadError(f"model {model!r} has categorical features ({', '.join(categorical)}), which one numeric "
                           "tensor cannot carry; send one input per feature, named after it")
    if datatype not in NUMERIC_TYPES and datatype != "BOOL":
        raise PayloadError(f"{where}.datatype {datatype} cannot carry numeric features; use FP64, FP32 or an INT "
                           "type")
    arr = _sized(data, shape, where)
    if datatype == "BOOL" and arr.dtype.kind != "b":
        raise PayloadError(f"{where}.data must be true/false for datatype BOOL; use FP64 for numbers")
    values = _floats(arr, where, datatype if datatype != "BOOL" else "FP64").reshape(rows, width)
    _finite(values, where)
    for j in layout.boolean:
        column = values[:, j]
        bad = ~np.isnan(column) & (column != 0.0) & (column != 1.0)
        if bad.any():
            i = int(np.argmax(bad))
            raise PayloadError(f"{where}: row {i}, column {j} ({features[j].name!r}) is {column[i]:g}; that feature "
                               "is boolean and takes 0 or 1")
    return Rows.of_matrix(values)


def _plain_matrix(inputs: list[Any], layout: _Layout) -> Rows | None:
    """The common request - one FP tensor of all-numeric features, its data a flat list of JSON numbers - validated
    with a handful of checks; None for anything else (the general path then validates it, or names the problem).
    What it accepts the general path accepts the same way (floats; a boolean feature 0 or 1)."""
    if len(inputs) != 1 or layout.categorical:
        return None
    raw = inputs[0]
    if type(raw) is not dict or len(raw) != 4 or raw.get("datatype") not in FLOAT_TYPES:
        return None  # parameters (binary data), a missing key, or another datatype
    name, shape, data = raw.get("name"), raw.get("shape"), raw.get("data")
    if (type(name) is not str or name in layout.names or type(shape) is not list or len(shape) != 2
            or type(data) is not list):
        return None
    rows, width = shape
    if type(rows) is not int or type(width) is not int or rows < 1 or width != len(layout.features):
        return None
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):  # ragged nesting
        return None
    # float64: numbers only (text, nested lists and null give other dtypes, integers alone int64). No infinity
    # check: JSON numbers are finite (the parser refuses 1e999; binary tensors take the general path).
    if values.dtype != np.float64 or values.ndim != 1 or values.size != rows * width:
        return None
    values = values.reshape(rows, width)
    for j in layout.boolean:
        column = values[:, j]
        if (~np.isnan(column) & (column != 0.0) & (column != 1.0)).any():
            return None  # the general path names the row and column
    return Rows.of_matrix(values)


def _per_feature(tensors: list[tuple[str, list[int], str, Any]], features: Sequence[FeatureSpec], model: str
                 ) -> Rows:
    by_name = {f.name: f for f in features}
    seen: dict[str, int] = {}
    for i, (name, _, _, _) in enumerate(tensors):
        if name not in by_name:
            raise PayloadError(f"inputs[{i}] is named {name!r}, which is not a feature of model {model!r}; name each "
                               f"input after a feature ({_names(features)}), or send one [rows, features] tensor")
        if name in seen:
            raise PayloadError(f"inputs[{seen[name]}] and inputs[{i}] are both named {name!r}; send each feature once")
        seen[name] = i
    absent = [f.name for f in features if f.name not in seen]
    if absent:
        raise PayloadError(f"model {model!r} needs every feature; inputs are missing {', '.join(absent)} "
                           "(send null values for missing data)")
    rows: int | None = None
    first = ""
    columns = []
    for feature in features:
        i = seen[feature.name]
        name, shape, datatype, data = tensors[i]
        where = f"inputs[{i}] ({name!r})"
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise PayloadError(f"{where}.shape {shape} must be [rows] or [rows, 1]: one value per row")
        if rows is None:
            rows, first = shape[0], where
        elif shape[0] != rows:
            raise PayloadError(f"{where} has {shape[0]} rows but {first} has {rows}; all inputs need the same rows")
        columns.append(_column(_sized(data, shape, where), feature, where, datatype))
    if not rows:
        raise PayloadError("the inputs have no rows; send at least one")
    return Rows(tuple(columns), rows)


def _binary_tensor(chunk: bytes, shape: list[int], datatype: str, where: str) -> np.ndarray:
    """One input's raw bytes (binary data extension) as values."""
    count = math.prod(shape)
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise PayloadError(f"{where}: binary BYTES data ends inside a 4-byte length prefix")
            size = int.from_bytes(chunk[offset:offset + 4], "little")
            offset += 4
            if offset + size > len(chunk):
                raise PayloadError(f"{where}: binary BYTES element {len(values)} claims {size} bytes but only "
                                   f"{len(chunk) - offset} remain")
            try:
                values.append(chunk[offset:offset + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise PayloadError(f"{where}: binary BYTES element {len(values)} is not UTF-8 text") from None
            offset += size
        if len(values) != count:
            raise PayloadError(f"{where}.shape {shape} needs {count} values but the binary data holds {len(values)}")
        return np.asarray(values, dtype=object)
    dtype = np.dtype(BINARY_DTYPES[datatype])
    if len(chunk) != count * dtype.itemsize:
        raise PayloadError(f"{where}: binary_data_size is {len(chunk)} bytes but shape {shape} of {datatype} needs "
                           f"{count * dtype.itemsize}")
    return np.frombuffer(chunk, dtype=dtype)


def _attach_binary(inputs: list[Any], rest: bytes) -> None:
    """Put each binary input's decoded values in its ``data`` (in input order, as the extension lays them out)."""
    offset = 0
    for i, raw in enumerate(inputs):
        params = raw.get("parameters") if isinstance(raw, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        where = f"inputs[{i}]"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PayloadError(f"{where}.parameters.binary_data_size must be a byte count, got {_show(size)}")
        if "data" in raw:
            raise PayloadError(f"{where} has both data and binary_data_size; send its values one way")
        if offset + size > len(rest):
            raise PayloadError(f"{where}.parameters.binary_data_size is {size} but only {len(rest) - offset} bytes of "
                               "binary data follow the JSON header")
        shape, datatype = raw.get("shape"), raw.get("datatype")
        if datatype not in DATATYPES or not isinstance(shape, list) \
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            continue  # _tensor reports the bad shape or datatype
        raw["data"] = _binary_tensor(rest[offset:offset + size], shape, datatype, where)
        offset += size
    if offset != len(rest):
        raise PayloadError(f"{len(rest) - offset} bytes follow the JSON header and the inputs' binary data; "
                           "Inference-Header-Content-Length or binary_data_size is wrong")


def _requested_outputs(doc: dict[str, Any]) -> tuple[RequestedOutput, ...]:
    params = doc.get("parameters")
    if params is None and "outputs" not in doc:
        return DEFAULT_OUTPUTS
    if params is not None and not isinstance(params, dict):
        raise PayloadError("'parameters' must be an object")
    params = params or {}
    binary_default = _flag(params, "binary_data_output", "parameters")
    probabilities = _flag(params, "probabilities", "parameters")
    outputs = doc.get("outputs")
    if outputs is None:
        names = [OUTPUT, PROBA_OUTPUT] if probabilities else [OUTPUT]
        return tuple(RequestedOutput(n, binary_default) for n in names)
    if not isinstance(outputs, list) or not outputs:
        raise PayloadError("'outputs' must be a non-empty list such as [{\"name\": \"predict\"}]")
    wanted: list[RequestedOutput] = []
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or out.get("name") not in OUTPUTS:
            raise PayloadError(f"outputs[{i}] asks for {_show(out)}; this model's outputs are "
                               f"{' and '.join(map(repr, OUTPUTS))}")
        out_params = out.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise PayloadError(f"outputs[{i}].parameters must be an object such as {{\"binary_data\": true}}")
        binary = _flag(out_params, "binary_data", f"outputs[{i}].parameters")
        if any(w.name == out["name"] for w in wanted):
            raise PayloadError(f"outputs[{i}] asks for {out['name']!r} twice")
        wanted.append(RequestedOutput(out["name"], binary))
    if probabilities and not any(w.name == PROBA_OUTPUT for w in wanted):
        wanted.append(RequestedOutput(PROBA_OUTPUT, binary_default))
    return tuple(wanted)


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    """A boolean parameter this server reads (absent: false). Other parameters are the client's business (V2
    clients send their own, such as priority or timeout) and are left alone; but a flag of ours with another
    value would otherwise be ignored without a word."""
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise PayloadError(f"{where}.{key} must be true or false, got {_show(value)}")
    return value


def parse_v2(body: bytes, features: Sequence[FeatureSpec], model: str, header_length: int | None = None
             ) -> V2Request:
    """Validate a V2 inference request body for a model taking ``features``.

    ``header_length``: the ``Inference-Header-Content-Length`` header (binary data extension), else None.
    """
    rest = b""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise PayloadError(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} "
                               "bytes")
        body, rest = body[:header_length], body[header_length:]
    doc = _object(load_json(body), "an 'inputs' list (Open Inference Protocol V2)")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise PayloadError(f"'id' must be a string, got {type(request_id).__name__}")
    outputs = _requested_outputs(doc)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise PayloadError("'inputs' must be a non-empty list of tensors, each {name, shape, datatype, data}")
    if header_length is not None:
        _attach_binary(inputs, rest)
    elif (plain := _plain_matrix(inputs, _layout(features))) is not None:
        return V2Request(plain, request_id, outputs)
    tensors = [_tensor(raw, i) for i, raw in enumerate(inputs)]
    # One tensor not named after a feature carries all features; otherwise each input is one feature (and a
    # missing one is reported as such rather than as a wrong matrix shape).
    if len(tensors) == 1 and tensors[0][0] not in _layout(features).names:
        return V2Request(_matrix(tensors[0], features, model), request_id, outputs)
    return V2Request(_per_feature(tensors, features, model), request_id, outputs)


# ------------------------------------------------------------------------------------------------------ V1


def _v1_value(v: Any, feature: FeatureSpec, where: str) -> Any:
    if feature.type == "categorical":
        return _category(v, feature, where)
    if v is None:
        return math.nan
    if feature.type == "boolean":
        value = _boolean_value(v)
        if value is None:
            raise PayloadError(f"{where} is {_show(v)}; feature {feature.name!r} is boolean and takes true/false "
                               "or 1/0")
        return value
    if isinstance(v, int | float):
        x = float(v)
        if math.isinf(x):
            raise PayloadError(f"{where} is infinite; send finite numbers, or null for a missing value")
        return x
    raise PayloadError(f"{where} is {_show(v)}, not a number; feature {feature.name!r} is numeric")


def parse_v1(body: bytes, features: Sequence[FeatureSpec], model: str) -> V1Request:
    """Validate a V1 ``:predict`` body (``{"instances": [...]}``, optionally ``"parameters": {"probabilities":
    true}``) for a model taking ``features``."""
    doc = _object(load_json(body), "an 'instances' list (V1 predict protocol)")
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise PayloadError("'parameters' must be an object such as {\"probabilities\": true}")
    return V1Request(_v1_rows(doc, features, model), _flag(params or {}, "probabilities", "parameters"))


def _v1_rows(doc: dict[str, Any], features: Sequence[FeatureSpec], model: str) -> Rows:
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        hint = "; this server takes row instances, not the columnar 'inputs' form" if "inputs" in doc else ""
        raise PayloadError(f"'instances' must be a non-empty list of rows{hint}")
    width = len(features)
    if all(f.type != "categorical" for f in features):
        # Fast path: a rectangular list of numeric rows converts in one step.
        try:
            arr = np.asarray(instances) if all(isinstance(r, list) for r in instances) else None
        except ValueError:  # ragged: the row-by-row path below names the row
            arr = None
        if arr is not None and arr.dtype.kind in "fiub" and arr.ndim == 2 and arr.shape[1] == width:
            values = arr.astype(np.float64)
            _finite(values, "instances")
            rows = Rows.of_matrix(values)
            for f, col in zip(features, rows.columns, strict=True):
                if f.type == "boolean" and (bad := ~np.isnan(col) & (col != 0) & (col != 1)).any():
                    i = int(np.argmax(bad))
                    raise PayloadError(f"instances[{i}] {f.name!r} is {col[i]:g}; that feature is boolean and takes "
                                       "0 or 1")
            return rows
    columns: list[list[Any]] = [[] for _ in features]
    for r, row in enumerate(instances):
        if isinstance(row, list):
            if len(row) != width:
                raise PayloadError(f"instances[{r}] has {len(row)} values but model {model!r} takes {width} features "
                                   f"({_names(features)})")
            values_in_order = row
        elif isinstance(row, dict):
            unknown = [k for k in row if k not in {f.name for f in features}]
            if unknown:
                raise PayloadError(f"instances[{r}] has unknown feature {unknown[0]!r}; the features are "
                                   f"{_names(features)}")
            values_in_order = [row.get(f.name) for f in features]
        else:
            raise PayloadError(f"instances[{r}] must be a list of values in feature order or an object keyed by "
                               f"feature name, got {type(row).__name__}")
        for j, (feature, v) in enumerate(zip(features, values_in_order, strict=True)):
            columns[j].append(_v1_value(v, feature, f"instances[{r}][{feature.name!r}]"))
    out = tuple(np.array(c, dtype=object if f.type == "categorical" else np.float64)
                for c, f in zip(columns, features, strict=True))
    return Rows(out, len(instances))


# ------------------------------------------------------------------------------------------------ outputs


def encode_binary(values: np.ndarray, datatype: str) -> bytes:
    """``values`` as the binary data extension lays them out (row-major)."""
    if datatype == "BYTES":
        parts = []
        for v in values.ravel().tolist():
            data = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(len(data).to_bytes(4, "little") + data)
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=np.dtype(BINARY_DTYPES[datatype])).tobytes()


def datatype_of(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def concat(batch: Sequence[Rows]) -> Rows:
    """One Rows holding the rows of every item in order (what a batch's single predict call gets)."""
    if len(batch) == 1:
        return batch[0]
    if all(rows.matrix is not None for rows in batch):
        return Rows.of_matrix(np.concatenate([rows.matrix for rows in batch if rows.matrix is not None]))
    width = len(batch[0].columns)
    columns = tuple(np.concatenate([rows.columns[j] for rows in batch]) for j in range(width))
    return Rows(columns, sum(rows.count for rows in batch))
