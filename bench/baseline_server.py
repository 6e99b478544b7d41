"""The baseline for bench_serving.py: a plain FastAPI + scikit-learn V2 predict server, one predict per request.

What a competent engineer writes without a serving framework: orjson to parse, numpy to reshape, a DataFrame
with the model's feature names (a Kultivar model is a pipeline over named columns), ``model.predict``, orjson to
answer. The endpoint is ``async`` so predict runs on the event loop like in the Kultivar server (a sync endpoint
would add a thread hop per request and be slower on one core). No validation beyond what numpy does, no
metrics, no batching.

    python bench/baseline_server.py --model-uri /path/model.skops --digest sha256:... --port 8090
"""

from __future__ import annotations

import argparse
import json
import posixpath
from typing import Any

import numpy as np
import orjson
import pandas as pd
import uvicorn
from fastapi import FastAPI, Request, Response

from kultivar.workloads.artifact import load_model
from kultivar.workloads.storage import ArtifactStore


def build_app(model: Any, names: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        predictions = model.predict(pd.DataFrame(x, columns=names))
        out = {"model_name": name, "outputs": [{"name": "predict", "shape": [len(predictions)],
                                                "datatype": "INT64", "data": predictions.tolist()}]}
        return Response(orjson.dumps(out), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--digest", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    store = ArtifactStore(posixpath.dirname(args.model_uri))
    model = load_model(args.model_uri, args.digest, store)
    manifest = json.loads(store.read_bytes(posixpath.join(posixpath.dirname(args.model_uri), "manifest.json")))
    names = [f["name"] for f in manifest["features"]]
    uvicorn.run(build_app(model, names), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
