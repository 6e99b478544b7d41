"""MLServer runtime for the optional MLServer comparison in bench_serving.py (``--mlserver-python``).

The Kultivar model served the way an MLServer deployment would: a custom ``MLModel`` that checks the sha256,
loads the skops pipeline, decodes the V2 tensor with MLServer's NumpyCodec and predicts. MLServer's adaptive
batching does the micro-batching. Runs in its own virtualenv (MLServer pins fastapi < 0.116), so it imports
nothing from Kultivar.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import skops.io as sio
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class KultivarSkopsModel(MLModel):
    async def load(self) -> bool:
        params = self.settings.parameters
        uri = params.uri if params else None
        if not uri:
            raise ValueError("set parameters.uri to the model.skops path")
        with open(uri, "rb") as f:
            data = f.read()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = (params.extra or {}).get("digest") if params else None
        if digest != expected:
            raise ValueError(f"model digest {digest} does not match {expected}")
        self._model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        with open(os.path.join(os.path.dirname(uri), "manifest.json"), encoding="utf-8") as f:
            self._names = [feature["name"] for feature in json.load(f)["features"]]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = self.decode(payload.inputs[0], default_codec=NumpyCodec)
        frame = pd.DataFrame(np.asarray(x, dtype=np.float64).reshape(-1, len(self._names)), columns=self._names)
        predictions = np.asarray(self._model.predict(frame))
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(name="predict", payload=predictions)])
