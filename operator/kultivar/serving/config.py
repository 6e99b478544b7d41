"""Settings of the inference server, read from the environment the operator sets on the serving container.

===========================  ========  ==============================================================
variable                     default   meaning
===========================  ========  ==============================================================
KULTIVAR_MODEL_NAME          required  model name in the V2/V1 routes (``/v2/models/<name>/infer``)
KULTIVAR_MODEL_VERSION       ``1``     version reported in metadata, responses and metric labels
KULTIVAR_MODEL_URI           required  URI of ``model.skops``
KULTIVAR_MODEL_DIGEST        required  ``sha256:<hex>`` from the registry; the server refuses any other file
KULTIVAR_MANIFEST_URI        (beside)  the training manifest; default ``manifest.json`` next to the model
KULTIVAR_PROFILE_URI         (manif.)  reference profile for input buckets; default the manifest's ``profileUri``
KULTIVAR_STORE               (model's  artifact store base URL (its storage options apply to URIs under it)
                             folder)
KULTIVAR_HTTP_HOST           0.0.0.0   address to bind
KULTIVAR_HTTP_PORT           8080      port to bind
KULTIVAR_MAX_BATCH           32        most rows in one ``predict`` call
KULTIVAR_BATCH_WAIT_MS       2         longest a request waits for others to join its batch (only under load)
KULTIVAR_DRIFT_ACCOUNTING    on        count inputs per profile bucket for drift (on/off)
KULTIVAR_MAX_REQUEST_BYTES   10485760  larger request bodies get 413
KULTIVAR_ESTIMATOR_PACKAGES  sklearn   packages whose types the model file may hold (besides numpy and scipy)
KULTIVAR_BACKEND             auto      auto: the compiled model (model.onnx, digest-checked) when the version has
                                       one, else scikit-learn; sklearn: always scikit-learn; onnx: refuse to
                                       start without a usable compiled model
KULTIVAR_COMPILED_DIGEST     (none)    the registry's ``sha256:<hex>`` of the compiled model (the operator sets it
                                       from the version record): model.onnx runs only if it has this digest (and
                                       the manifest records the same); else scikit-learn answers and the model
                                       metadata's ``compiledRejected`` says why. Unset: the manifest's digest
                                       alone decides (a server started by hand, a version from before)
KULTIVAR_ONNX_THREADS        1         onnxruntime intra-op threads per server process; the operator sets it to
                                       the CPU limit's whole cores per worker (see
                                       :func:`kultivar.domain.serving.server_threads`)
KULTIVAR_SERVE_WORKERS       1         server processes sharing the port, each with its own model copy and batcher;
                                       the operator sets it to the whole cores of the pod's CPU limit (see
                                       :mod:`kultivar.serving.workers`)
KULTIVAR_UNKNOWN_CATEGORIES  accept    refuse: a categorical value outside the feature's allowed values (model manifest)
                                       is a 400 naming the feature and value (a Deployment's
                                       spec.serving.unknownCategories Refuse)
KULTIVAR_NAMESPACE           (none)    with KULTIVAR_DEPLOYMENT: the Kultivar Deployment serving this, exported as
KULTIVAR_DEPLOYMENT          (none)    the metric labels kultivar_namespace and kultivar_deployment
KULTIVAR_SHADOW_URL          (none)    with KULTIVAR_SHADOW_VERSION: forward copies of answered requests to this
KULTIVAR_SHADOW_VERSION      (none)    shadow version's base URL (see :mod:`kultivar.serving.shadow`)
KULTIVAR_SHADOW_PERCENT      100       percent of answered requests copied
KULTIVAR_SHADOW_QUEUE        256       copies waiting to be sent at most; more are dropped (and counted)
KULTIVAR_SHADOW_TIMEOUT_MS   2000      how long one copy may take before it counts as an error
===========================  ========  ==============================================================
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from kultivar.api.contracts import DEFAULT_ESTIMATOR_PACKAGES

MANIFEST_NAME = "manifest.json"
BACKENDS = ("auto", "sklearn", "onnx")
UNKNOWN_CATEGORIES = ("accept", "refuse")
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """The server was started with missing or malformed settings."""


@dataclass(frozen=True)
class ShadowTarget:
    """Where and how much to copy (kultivar.serving.shadow)."""

    url: str
    version: str
    percent: int = 100
    queue: int = 256
    timeout_ms: int = 2000


@dataclass(frozen=True)
class ServingConfig:
    model_name: str
    model_uri: str
    model_digest: str
    model_version: str = "1"
    manifest_uri: str | None = None
    profile_uri: str | None = None
    store: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    drift_accounting: bool = True
    max_request_bytes: int = 10 * 1024 * 1024
    deployment: tuple[str, str] | None = None  # (namespace, name) of the Kultivar Deployment serving this
    estimator_packages: tuple[str, ...] = DEFAULT_ESTIMATOR_PACKAGES
    backend: str = "auto"
    onnx_threads: int = 1
    workers: int = 1
    unknown_categories: str = "accept"
    shadow: ShadowTarget | None = None  # forward copies to a shadow version (router replicas)
    compiled_digest: str | None = None  # the registry's digest of model.onnx (KULTIVAR_COMPILED_DIGEST)

    @property
    def resolved_manifest_uri(self) -> str:
        return self.manifest_uri or sibling(self.model_uri, MANIFEST_NAME)

    @property
    def store_url(self) -> str:
        # Without an explicit store, the model's folder: the store then only supplies the filesystem for the URIs.
        return self.store or posixpath.dirname(self.model_uri.rstrip("/")) or "/"

    def with_overrides(self, **overrides: Any) -> ServingConfig:
        """A copy with the given fields replaced, skipping ``None`` (unset command-line flags)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServingConfig:
        """Settings from ``env`` (default: the process environment); non-None ``overrides`` win."""
        env = os.environ if env is None else env
        given = {k: v for k, v in overrides.items() if v is not None}

        def text(key: str, var: str, default: str | None = None) -> str | None:
            value = given.get(key)
            if value is None:
                value = env.get(var, "").strip() or default
            return value

        missing = [var for key, var in (("model_name", "KULTIVAR_MODEL_NAME"), ("model_uri", "KULTIVAR_MODEL_URI"),
                                        ("model_digest", "KULTIVAR_MODEL_DIGEST")) if not text(key, var)]
        if missing:
            raise ConfigError(f"missing settings: set {', '.join(missing)} (the registry's model name, the URI of "
                              "model.skops and its sha256 digest)")
        digest = _digest(str(text("model_digest", "KULTIVAR_MODEL_DIGEST")), "KULTIVAR_MODEL_DIGEST")
        compiled = text("compiled_digest", "KULTIVAR_COMPILED_DIGEST")
        return cls(
            model_name=str(text("model_name", "KULTIVAR_MODEL_NAME")),
            model_uri=str(text("model_uri", "KULTIVAR_MODEL_URI")),
            model_digest=digest,
            compiled_digest=_digest(compiled, "KULTIVAR_COMPILED_DIGEST") if compiled else None,
            model_version=str(text("model_version", "KULTIVAR_MODEL_VERSION", "1")),
            manifest_uri=text("manifest_uri", "KULTIVAR_MANIFEST_URI"),
            profile_uri=text("profile_uri", "KULTIVAR_PROFILE_URI"),
            store=text("store", "KULTIVAR_STORE"),
            host=str(text("host", "KULTIVAR_HTTP_HOST", "0.0.0.0")),
            port=_integer(given.get("port"), env, "KULTIVAR_HTTP_PORT", 8080, 0, 65535),
            max_batch=_integer(given.get("max_batch"), env, "KULTIVAR_MAX_BATCH", 32, 1, 100_000),
            batch_wait_ms=_number(given.get("batch_wait_ms"), env, "KULTIVAR_BATCH_WAIT_MS", 2.0, 0.0, 1000.0),
            drift_accounting=_switch(given.get("drift_accounting"), env, "KULTIVAR_DRIFT_ACCOUNTING", True),
            max_request_bytes=_integer(given.get("max_request_bytes"), env, "KULTIVAR_MAX_REQUEST_BYTES",
                                       10 * 1024 * 1024, 1024, 2**31),
            deployment=_deployment(env),
            estimator_packages=tuple(p.strip() for p in env.get("KULTIVAR_ESTIMATOR_PACKAGES", "").split(",")
                                     if p.strip()) or DEFAULT_ESTIMATOR_PACKAGES,
            backend=_choice(given.get("backend"), env, "KULTIVAR_BACKEND", "auto", BACKENDS),
            onnx_threads=_integer(given.get("onnx_threads"), env, "KULTIVAR_ONNX_THREADS", 1, 1, 256),
            workers=_integer(given.get("workers"), env, "KULTIVAR_SERVE_WORKERS", 1, 1, 256),
            unknown_categories=_choice(given.get("unknown_categories"), env, "KULTIVAR_UNKNOWN_CATEGORIES", "accept",
                                       UNKNOWN_CATEGORIES),
            shadow=_shadow(env),
        )


def _deployment(env: Mapping[str, str]) -> tuple[str, str] | None:
    namespace, name = env.get("KULTIVAR_NAMESPACE", "").strip(), env.get("KULTIVAR_DEPLOYMENT", "").strip()
    if bool(namespace) != bool(name):
        raise ConfigError("set both KULTIVAR_NAMESPACE and KULTIVAR_DEPLOYMENT (the Kultivar Deployment serving "
                          "this model), or neither")
    return (namespace, name) if name else None


def _shadow(env: Mapping[str, str]) -> ShadowTarget | None:
    url, version = env.get("KULTIVAR_SHADOW_URL", "").strip(), env.get("KULTIVAR_SHADOW_VERSION", "").strip()
    if bool(url) != bool(version):
        raise ConfigError("set both KULTIVAR_SHADOW_URL and KULTIVAR_SHADOW_VERSION (where the shadow version "
                          "listens and which version it is), or neither")
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"KULTIVAR_SHADOW_URL must be an http:// or https:// URL, got {url!r}")
    if not version.isdigit():
        raise ConfigError(f"KULTIVAR_SHADOW_VERSION must be a Model version number, got {version!r}")
    return ShadowTarget(url, version, _integer(None, env, "KULTIVAR_SHADOW_PERCENT", 100, 1, 100),
                        _integer(None, env, "KULTIVAR_SHADOW_QUEUE", 256, 1, 100_000),
                        _integer(None, env, "KULTIVAR_SHADOW_TIMEOUT_MS", 2000, 1, 600_000))


def sibling(uri: str, name: str) -> str:
    """The URI of ``name`` in the same folder as ``uri`` (works for paths and scheme://bucket/key alike)."""
    return posixpath.join(posixpath.dirname(uri), name)


def _digest(value: str, var: str) -> str:
    if not value.startswith("sha256:") or len(value) != 71 or not _is_hex(value[7:]):
        raise ConfigError(f"{var} must be 'sha256:' followed by 64 hex digits, got {value!r}")
    return value.lower()


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _integer(given: Any, env: Mapping[str, str], var: str, default: int, low: int, high: int) -> int:
    raw = given if given is not None else env.get(var, "").strip()
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{var} must be a whole number between {low} and {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{var} must be between {low} and {high}, got {value}")
    return value


def _number(given: Any, env: Mapping[str, str], var: str, default: float, low: float, high: float) -> float:
    raw = given if given is not None else env.get(var, "").strip()
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{var} must be a number between {low:g} and {high:g}, got {raw!r}") from None
    if not low <= value <= high:  # also rejects NaN
        raise ConfigError(f"{var} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def _choice(given: Any, env: Mapping[str, str], var: str, default: str, choices: tuple[str, ...]) -> str:
    raw = str(given if given is not None else env.get(var, "")).strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{var} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _switch(given: Any, env: Mapping[str, str], var: str, default: bool) -> bool:
    if isinstance(given, bool):
        return given
    raw = str(given if given is not None else env.get(var, "")).strip().lower()
    if not raw:
        return default
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise ConfigError(f"{var} must be on or off (also true/false, 1/0, yes/no), got {raw!r}")
