"""The served model: verified loading, its feature contract, and batched prediction.

The model file is loaded with :func:`kultivar.workloads.artifact.load_model`, which hashes it and refuses it
unless the sha256 equals the digest the registry recorded (``KULTIVAR_MODEL_DIGEST``) - before deserialising a
single byte - and trusts only types from the permitted estimator packages (scikit-learn, XGBoost, LightGBM by
default), numpy and scipy. The training manifest beside the model says
which features the model takes, their types and the classes; it must describe the same digest.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from kultivar.api.contracts import ModelManifest
from kultivar.domain.profile import CategoricalProfile, NumericProfile, Profile, normalize_category
from kultivar.serving.config import ServingConfig
from kultivar.serving.payload import FeatureSpec, Rows

log = logging.getLogger("kultivar.serving")

BOUND_ROWS = 64  # batches of up to this many rows run through a kept onnxruntime binding (one per row count)
BOUND_VALUES = 16_384  # input values one binding's buffer holds at most (wide models bind fewer rows)


class ModelLoadError(Exception):
    """The server cannot serve this model. ``permanent``: retrying the same settings cannot help."""

    def __init__(self, reason: str, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.reason, self.message, self.permanent = reason, message, permanent


@dataclass(slots=True)
class Prediction:
    """A batch's answers: one label (or value) per row and, when asked for, per-class probabilities. (Made per
    request: slotted, not frozen, whose ``__init__`` costs three times as much.)"""

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    backend: str = "sklearn"

    def __getitem__(self, rows: slice) -> Prediction:
        proba = self.probabilities[rows] if self.probabilities is not None else None
        return Prediction(self.labels[rows], proba, self.backend)


class _Bound:
    """An onnxruntime IOBinding whose inputs are views of one float32 [rows, features] buffer, one column per
    feature. Column-major, so that each column is contiguous (as onnxruntime reads an input) and a request's
    row-major matrix is copied in with one assignment."""

    def __init__(self, session: Any, inputs: Sequence[str], outputs: Sequence[str], rows: int) -> None:
        self.buffer = np.zeros((rows, len(inputs)), dtype=np.float32, order="F")
        self.binding = session.io_binding()
        for j, name in enumerate(inputs):
            # By reference: filling the buffer fills the input.
            self.binding.bind_cpu_input(name, self.buffer[:, j:j + 1])
        for name in outputs:
            self.binding.bind_output(name)


class OnnxRunner:
    """The ONNX graph of the pipeline (see :mod:`kultivar.workloads.compile`), run by onnxruntime.

    Not for concurrent use from several threads: the server calls it from its event loop only."""

    def __init__(self, model_bytes: bytes, features: Sequence[FeatureSpec], threads: int) -> None:
        from kultivar.workloads.compile import input_names, session

        self.features = tuple(features)
        self.session = session(model_bytes, threads)
        self.inputs = input_names(self.session)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.label_output = self.outputs[:1]
        self.numeric = all(f.type != "categorical" for f in self.features)
        # A numeric graph (every input float [rows, 1]) with numeric outputs is run through bindings kept per row
        # count: a run then reads its inputs from one preallocated buffer instead of converting a numpy array per
        # feature, which halves onnxruntime's cost for the few rows of a micro-batch (~11 -> ~6 us for one row).
        # Not with text labels: onnxruntime 1.32 crashes copying a bound string output.
        self.bindable = (self.numeric
                         and all(i.type == "tensor(float)" and len(i.shape) == 2 and i.shape[1] == 1
                                 for i in self.session.get_inputs())
                         and all(o.type.startswith("tensor(") and o.type != "tensor(string)"
                                 for o in self.session.get_outputs()))
        # Batches of up to this many rows are bound; at most 2 x BOUND_ROWS bindings (per row count, with and
        # without probabilities), whose buffers stay within BOUND_VALUES floats each for wide models.
        self.bound_rows = min(BOUND_ROWS, BOUND_VALUES // max(len(self.inputs), 1))
        self._bound: dict[tuple[int, bool], _Bound] = {}

    def run(self, rows: Rows, probabilities: bool) -> Prediction | None:
        """The graph's answers, or None for rows it cannot take (empty-text categories: scikit-learn's)."""
        if self.bindable and rows.count <= self.bound_rows:
            out = self._run_bound(rows, probabilities)
        else:
            from kultivar.workloads.compile import onnx_feed

            if self.numeric:  # float32 [rows, 1] per feature, as onnx_feed makes them, without its per-column checks
                feed: list[np.ndarray] | None = [column.astype(np.float32).reshape(-1, 1) for column in rows.columns]
            else:
                feed = onnx_feed(rows.columns, self.features)
            if feed is None:
                return None
            out = self.session.run(self.outputs if probabilities else self.label_output,
                                   dict(zip(self.inputs, feed, strict=True)))
        labels = np.asarray(out[0]).reshape(rows.count)
        if labels.dtype == np.float32:
            labels = labels.astype(np.float64)
        proba = np.asarray(out[1], dtype=np.float64) if probabilities else None
        return Prediction(labels, proba, "onnx")

    def _run_bound(self, rows: Rows, probabilities: bool) -> list[np.ndarray]:
        key = (rows.count, probabilities)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = _Bound(self.session, self.inputs,
                                              self.outputs if probabilities else self.label_output, rows.count)
        buffer = bound.buffer
        if rows.matrix is not None:
            buffer[...] = rows.matrix
        else:
            for j, column in enumerate(rows.columns):
                buffer[:, j] = column
        self.session.run_with_iobinding(bound.binding)
        outputs: list[np.ndarray] = bound.binding.copy_outputs_to_cpu()
        return outputs


@dataclass
class ServedModel:
    estimator: Any
    features: tuple[FeatureSpec, ...]
    task: str
    classes: list[Any] | None
    profile: Profile | None
    manifest: ModelManifest
    compiled: OnnxRunner | None = None
    compiled_note: str | None = None  # why a compiled model exists but is not used, when that is so
    # A compiled model was recorded (by the registry or the manifest) but refused: missing, altered, unloadable or
    # disagreeing. The operator turns this into a Warning Event (CompiledModelRejected).
    compiled_rejected: bool = False
    _class_array: np.ndarray | None = None  # the classes by index, for labelsEncoded models

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def backend(self) -> str:
        return "onnx" if self.compiled is not None else "sklearn"

    @property
    def has_probabilities(self) -> bool:
        return self.task == "classification" and hasattr(self.estimator, "predict_proba")

    def predict(self, rows: Rows, probabilities: bool = False) -> Prediction:
        """Answers for ``rows`` from one call of the compiled model, else of the scikit-learn pipeline."""
        if self.compiled is not None:
            answer = self.compiled.run(rows, probabilities)
            if answer is not None:
                return self._decoded(answer)
        return self.predict_sklearn(rows, probabilities)

    def _decoded(self, prediction: Prediction) -> Prediction:
        """The classes for a model fitted on class indexes (``labelsEncoded``: XGBoost's classifiers)."""
        if not self.manifest.labelsEncoded or self.classes is None:
            return prediction
        if self._class_array is None:
            # Original types: strings as objects (V2 BYTES), integers as int64.
            self._class_array = (np.asarray(self.classes) if all(type(c) is int for c in self.classes)
                                 else np.asarray(self.classes, dtype=object))
        labels = self._class_array[np.asarray(prediction.labels, dtype=np.int64)]
        return Prediction(labels, prediction.probabilities, prediction.backend)

    def predict_sklearn(self, rows: Rows, probabilities: bool = False) -> Prediction:
        import pandas as pd

        if rows.matrix is not None:
            # A copy, as column_stack below makes one: the request's matrix is also kept for drift accounting, and
            # a pipeline step may write into its input.
            frame = pd.DataFrame(rows.matrix.copy(), columns=self.names, copy=False)
        elif all(c.dtype == np.float64 for c in rows.columns):
            # One float block, as in training: pandas and the pipeline's column selection work on it directly.
            frame = pd.DataFrame(np.column_stack(rows.columns), columns=self.names, copy=False)
        else:
            frame = pd.DataFrame(dict(zip(self.names, rows.columns, strict=True)), copy=False)
        out = np.asarray(self.estimator.predict(frame))
        if out.shape[:1] != (rows.count,):
            raise RuntimeError(f"the model returned {out.shape[:1]} predictions for {rows.count} rows")
        labels = out.reshape(rows.count) if out.ndim > 1 and out.size == rows.count else out
        proba = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64) if probabilities else None
        return self._decoded(Prediction(labels, proba, "sklearn"))

    def sample_rows(self) -> Rows:
        """One typical row for the readiness test inference: profile centres and top categories, else missing."""
        columns = []
        for f in self.features:
            ref = self.profile.features.get(f.name) if self.profile else None
            if f.type == "categorical":
                value: Any = math.nan
                if isinstance(ref, CategoricalProfile):
                    top = [k for k in ref.proportions if not k.startswith("__")]
                    value = top[0] if top else math.nan
                columns.append(np.array([value], dtype=object))
                continue
            x = math.nan  # the pipeline imputes missing values, so a row of NaN is valid input too
            if isinstance(ref, NumericProfile) and ref.mean is not None:
                x = ref.mean
            elif isinstance(ref, CategoricalProfile) and f.type == "boolean":
                x = 1.0 if ref.proportions.get("true", 0.0) >= ref.proportions.get("false", 0.0) else 0.0
            columns.append(np.array([x], dtype=np.float64))
        return Rows(tuple(columns), 1)

    def check_prediction(self, predictions: np.ndarray) -> None:
        """Raise unless ``predictions`` look like this model's output (the readiness test inference)."""
        if predictions.shape != (1,):
            raise RuntimeError(f"the test inference returned shape {predictions.shape}, expected (1,)")
        value = predictions[0]
        if self.task == "classification" and self.classes is not None:
            known = {str(c) for c in self.classes}
            if str(value) not in known:
                raise RuntimeError(f"the test inference predicted {value!r}, which is not one of the classes "
                                   f"{sorted(known)} in the manifest")
        if self.task == "regression" and not math.isfinite(float(value)):
            raise RuntimeError(f"the test inference predicted {value!r}, not a finite number")


def _read_json(store: Any, uri: str, what: str, hint: str) -> Any:
    try:
        return json.loads(store.read_bytes(uri))
    except FileNotFoundError:
        raise ModelLoadError(f"{what}NotFound", f"the {what.lower()} {uri} does not exist; {hint}") from None
    except ValueError as e:
        raise ModelLoadError(f"{what}Invalid", f"the {what.lower()} {uri} is not valid JSON: {e}") from None
    except OSError as e:
        raise ModelLoadError("StorageUnavailable", f"cannot read the {what.lower()} {uri}: {e}",
                             permanent=False) from None


def load_served_model(config: ServingConfig) -> ServedModel:
    """Verify and load the model, its manifest and (when known) its reference profile."""
    from kultivar.workloads.artifact import ModelIntegrityError, UntrustedModelError, load_model
    from kultivar.workloads.storage import ArtifactStore

    store = ArtifactStore(config.store_url)
    try:
        estimator = load_model(config.model_uri, config.model_digest, store, config.estimator_packages)
    except ModelIntegrityError as e:
        raise ModelLoadError("ModelDigestMismatch", str(e)) from None
    except UntrustedModelError as e:
        raise ModelLoadError("UntrustedModel", str(e)) from None
    except FileNotFoundError:
        raise ModelLoadError("ModelNotFound", f"the model file {config.model_uri} does not exist; check "
                                              "KULTIVAR_MODEL_URI (and KULTIVAR_STORE)") from None
    except OSError as e:
        raise ModelLoadError("StorageUnavailable", f"cannot read the model {config.model_uri}: {e}",
                             permanent=False) from None

    manifest_uri = config.resolved_manifest_uri
    raw = _read_json(store, manifest_uri, "Manifest",
                     "set KULTIVAR_MANIFEST_URI to the manifest.json written with the model")
    try:
        manifest = ModelManifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
                             for err in e.errors()[:3])
        raise ModelLoadError("ManifestInvalid", f"the manifest {manifest_uri} is not a Kultivar model manifest "
                                                f"({problems}); it must come from `kultivar train`") from None
    described = manifest.artifact.digest
    if described != config.model_digest:
        raise ModelLoadError("ManifestMismatch",
                             f"the manifest {manifest_uri} describes the model {described}, not {config.model_digest}: "
                             "it belongs to another model; set KULTIVAR_MANIFEST_URI to this model's manifest")
    features = feature_specs(manifest, refuse_unknown=config.unknown_categories == "refuse")
    task = manifest.task
    classes = manifest.classes if task == "classification" else None

    profile = None
    profile_uri = config.profile_uri or manifest.profileUri
    if profile_uri:
        try:
            profile = Profile.model_validate(_read_json(store, profile_uri, "Profile",
                                                        "set KULTIVAR_PROFILE_URI to the dataset's profile.json"))
        except ModelLoadError as e:
            if config.profile_uri:  # asked for explicitly: serving without it would hide drift silently
                raise
            log.warning("serving without input drift buckets: %s", e.message)
        except ValueError as e:
            raise ModelLoadError("ProfileInvalid",
                                 f"the profile {profile_uri} is not a Kultivar profile: {e}") from None
    else:
        log.warning("no reference profile (neither KULTIVAR_PROFILE_URI nor the manifest's profileUri): serving "
                    "without input drift buckets")
    compiled, note, rejected = _load_compiled(store, manifest, features, config)
    return ServedModel(estimator, features, task, list(classes) if classes is not None else None, profile, manifest,
                       compiled, note, rejected)


def feature_specs(manifest: ModelManifest, refuse_unknown: bool) -> tuple[FeatureSpec, ...]:
    """The model's inputs as requests are parsed: each categorical feature with the texts training read as
    missing and, when unknown categories are refused, its allowed values (keys normalised as validation compares
    them). Refusing with no feature recording allowed values would refuse nothing: a ModelLoadError says so."""
    specs = []
    for f in manifest.features:
        allowed = None
        if refuse_unknown and f.type == "categorical" and f.allowed is not None:
            allowed = frozenset(key for a in f.allowed if (key := normalize_category(a)) is not None)
        specs.append(FeatureSpec(f.name, f.type, frozenset(f.missingTokens or ()), allowed))
    if refuse_unknown and not any(s.allowed is not None for s in specs):
        categorical = [f.name for f in manifest.features if f.type == "categorical"]
        which = (f"its categorical features ({', '.join(categorical)}) record no allowed values: the Dataset declared "
                 "none, or the version was trained before Kultivar recorded them" if categorical
                 else "it has no categorical features")
        raise ModelLoadError(
            "NoAllowedValues",
            "unknown categories are to be refused (spec.serving.unknownCategories: Refuse, "
            f"KULTIVAR_UNKNOWN_CATEGORIES=refuse) but this model version has nothing to refuse them by: {which}. "
            "Declare allowed "
            "values for the categorical features in the Dataset's spec.schema.features and train a new version, or "
            "set spec.serving.unknownCategories to Accept")
    return tuple(specs)


def _load_compiled(store: Any, manifest: ModelManifest, features: Sequence[FeatureSpec], config: ServingConfig
                   ) -> tuple[OnnxRunner | None, str | None, bool]:
    """The version's ONNX model when it has a verified one (and the backend setting allows it), else why not,
    and whether a recorded compiled model was refused.

    The file must have the registry's digest (``KULTIVAR_COMPILED_DIGEST``, from the version record) and the
    manifest must record the same one; without the registry's digest (a server started by hand), the manifest's.
    A missing or altered ONNX file is not fatal: the verified skops file serves instead, and the reason is
    logged, shown in the model metadata (``compiledNote``, ``compiledRejected``) and the metrics
    (``kultivar_model_backend``, ``kultivar_compiled_model_rejected``). Only ``KULTIVAR_BACKEND=onnx`` (which
    insists on the compiled model) turns it into a refusal.
    """
    from kultivar.workloads.compile import compiled_artifact
    from kultivar.workloads.storage import digest_of

    if config.backend == "sklearn":
        return None, "KULTIVAR_BACKEND=sklearn", False
    artifact = compiled_artifact(manifest)
    registered = config.compiled_digest
    note: str | None = None
    if artifact is None:
        why = manifest.compiled.reason if manifest.compiled is not None else None
        note = f"the version has no compiled model ({why or 'trained before models were compiled'})"
        if registered is not None:
            note = (f"the registry records the compiled model {registered} but the manifest "
                    f"{config.resolved_manifest_uri} has none ({why or 'no compiled entry'})")
    elif registered is not None and artifact.digest != registered:
        note = (f"the manifest records the compiled model {artifact.digest} but the registry {registered}: the "
                "manifest or the version record changed after training")
    else:
        uri, expected = artifact.uri, registered or artifact.digest
        try:
            data = store.read_bytes(uri)
        except FileNotFoundError:
            note = f"the compiled model {uri} does not exist"
        except OSError as e:
            note = f"cannot read the compiled model {uri}: {e}"
        else:
            actual = digest_of(data)
            if actual != expected:
                note = (f"the compiled model {uri} has digest {actual}, not the {expected} the "
                        f"{'registry' if registered else 'manifest'} records: it changed after training")
            else:
                try:
                    return OnnxRunner(data, features, config.onnx_threads), None, False
                except ImportError as e:
                    note = f"onnxruntime is not installed ({e})"
                except Exception as e:  # onnxruntime refuses the graph
                    note = f"onnxruntime cannot load the compiled model {uri}: {type(e).__name__}: {e}"
    if config.backend == "onnx":
        raise ModelLoadError("CompiledModelUnavailable", f"KULTIVAR_BACKEND=onnx but {note}")
    rejected = artifact is not None or registered is not None
    if rejected:  # a compiled model was recorded but cannot be used: worth a warning
        log.warning("serving with scikit-learn: %s; the verified skops file answers instead", note)
    else:
        log.info("serving with scikit-learn: %s", note)
    return None, note, rejected
