"""The V2 answer: the template used for the usual request (labels as JSON) says what the general encoder says."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from kultivar.serving.config import ServingConfig
from kultivar.serving.model import Prediction
from kultivar.serving.payload import OUTPUT, RequestedOutput, Rows, V2Request
from kultivar.serving.server import InferenceService


@pytest.mark.parametrize("labels", [np.array([1, 2]), np.array(["a", 'b"\\ü'], dtype=object), np.array([1.5]),
                                    np.array([True])])
@pytest.mark.parametrize("request_id", [None, 'r"1'])
def test_the_answer_template_matches_the_general_encoder(labels: np.ndarray, request_id: str | None) -> None:
    service = InferenceService(ServingConfig.from_env({
        "KULTIVAR_MODEL_NAME": 'ir"is', "KULTIVAR_MODEL_VERSION": "7", "KULTIVAR_MODEL_URI": "/m/model.skops",
        "KULTIVAR_MODEL_DIGEST": "sha256:" + "a" * 64}))
    rows = Rows((), len(labels))
    usual, header = service.encode_v2(Prediction(labels), V2Request(rows, request_id), "made-up-1")
    general, _ = service.encode_v2(Prediction(labels), V2Request(rows, request_id, (RequestedOutput(OUTPUT),)),
                                   "made-up-1")
    assert header is None and orjson.loads(usual) == orjson.loads(general)
    assert orjson.loads(usual)["id"] == "made-up-1" and orjson.loads(usual)["model_version"] == "7"
    assert orjson.loads(service.encode_v2(Prediction(labels), V2Request(rows, request_id))[0])["id"] == (
        request_id or "")
