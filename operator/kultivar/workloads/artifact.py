"""The model artifact: saving it with skops, loading it back verified, and the manifest beside it.

Models are stored with ``skops.io`` only, never pickle or joblib. :func:`load_model` checks the file's sha256
before deserialising anything and trusts only types from the permitted packages. skops calls the types beyond its
defaults "untrusted"; the ones a model holds are recorded in the manifest as ``trustedTypes``, because Kultivar
checked each against the allow-list when it saved the model and trusts exactly those when loading it.

XGBoost and LightGBM estimators go through skops too: their state is the estimator's parameters plus a
``Booster`` that skops rebuilds from the library's own serialised model (XGBoost's raw model bytes, LightGBM's
model text) through ``__setstate__`` - no pickle. Their files hold ``xgboost.*`` / ``lightgbm.*`` types (trusted
when the package is permitted) and, for LightGBM, ``collections.OrderedDict``: the only types outside a permitted
package that are trusted (:data:`STDLIB_TYPES`), each a plain container.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kultivar.api.contracts import DEFAULT_ESTIMATOR_PACKAGES, ModelManifest
from kultivar.workloads.failure import TrainingFailure
from kultivar.workloads.storage import ArtifactStore, digest_of

MODEL_NAME = "model.skops"
MANIFEST_NAME = "manifest.json"
# Packages whose types a model file may hold besides the estimator's own: the arrays and matrices of its state.
ARRAY_PACKAGES = ("numpy", "scipy")
# Standard-library types a permitted estimator's state may hold beyond skops' defaults: plain containers only
# (LightGBM keeps its parameters in an OrderedDict). Trusted by exact name, never by package.
STDLIB_TYPES = frozenset({"collections.OrderedDict"})


class ModelIntegrityError(Exception):
    """The model file does not have the digest it was registered with."""


class UntrustedModelError(Exception):
    """The model file contains types outside the allow-list."""


def trusted_packages(estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> tuple[str, ...]:
    """Top-level packages whose types a saved model may contain."""
    return (*dict.fromkeys([*estimator_packages, *ARRAY_PACKAGES]),)


def is_trusted(type_name: str, packages: Sequence[str]) -> bool:
    return type_name in STDLIB_TYPES or type_name.split(".", 1)[0] in packages


def dump_model(model: Any, path: str, estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> list[str]:
    """Save the model with skops; returns the types beyond skops' defaults it holds (the manifest's
    ``trustedTypes``), refusing any outside the permitted packages."""
    import skops.io as sio

    sio.dump(model, path)
    packages = trusted_packages(estimator_packages)
    extra_types: list[str] = sio.get_untrusted_types(file=path)
    refused = [t for t in extra_types if not is_trusted(t, packages)]
    if refused:
        raise TrainingFailure("EstimatorImportFailed",
                              f"the fitted model contains types the model server will not load: "
                              f"{', '.join(refused)}; use estimators from {', '.join(estimator_packages)}")
    return extra_types


def load_model(uri: str, expected_digest: str, store: ArtifactStore,
               estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> Any:
    """Load a model saved by :func:`dump_model`, refusing a file whose digest or types are not as expected."""
    import skops.io as sio

    data = store.read_bytes(uri)
    actual = digest_of(data)
    if actual != expected_digest:
        raise ModelIntegrityError(
            f"model {uri} has digest {actual} but {expected_digest} was registered: the file changed after "
            "training; refusing to load it (retrain, or restore the original file)"
        )
    packages = trusted_packages(estimator_packages)
    extra_types = sio.get_untrusted_types(data=data)
    refused = [t for t in extra_types if not is_trusted(t, packages)]
    if refused:
        raise UntrustedModelError(
            f"model {uri} contains types outside the allow-list ({', '.join(packages)}): "
            f"{', '.join(refused)}; refusing to load it"
        )
    return sio.loads(data, trusted=extra_types)


def read_manifest(store: ArtifactStore, uri: str) -> ModelManifest:
    """The manifest at ``uri``; raises ContractError when it is not one."""
    return ModelManifest.from_json(store.read_bytes(uri))


def write_manifest(store: ArtifactStore, relpath: str, manifest: ModelManifest) -> None:
    """Write the manifest once; it marks the attempt as finished (see :mod:`kultivar.workloads.training`)."""
    store.write_once(relpath, manifest.to_json())
