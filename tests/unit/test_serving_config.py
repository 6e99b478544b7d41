"""Serving settings: the backend choice and onnxruntime threads."""

from __future__ import annotations

import pytest

from kultivar.serving.config import ConfigError, ServingConfig

BASE = {"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": "/m/model.skops",
        "KULTIVAR_MODEL_DIGEST": "sha256:" + "ab" * 32}


def test_defaults_prefer_the_compiled_model_with_one_thread() -> None:
    config = ServingConfig.from_env(BASE)
    assert (config.backend, config.onnx_threads) == ("auto", 1)


@pytest.mark.parametrize("value", ["sklearn", "ONNX", " auto "])
def test_backend_choices(value: str) -> None:
    assert ServingConfig.from_env({**BASE, "KULTIVAR_BACKEND": value}).backend == value.strip().lower()


@pytest.mark.parametrize(("var", "value", "message"), [
    ("KULTIVAR_BACKEND", "tensorrt", "KULTIVAR_BACKEND must be one of auto, sklearn, onnx, got 'tensorrt'"),
    ("KULTIVAR_ONNX_THREADS", "0", "KULTIVAR_ONNX_THREADS must be between 1 and 256, got 0"),
])
def test_bad_settings_name_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServingConfig.from_env({**BASE, var: value})
