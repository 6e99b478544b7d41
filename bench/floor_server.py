"""The floor for bench_serving.py: Kultivar's own server stack with a no-op V2 endpoint.

The same process as ``kultivar serve`` (settings from the same ``KULTIVAR_*`` variables, the same Starlette app
from :func:`kultivar.serving.server.create_app`, uvicorn with the same settings, the model loaded as usual and the
heap then frozen for the garbage collector) plus
``POST /v2/models/noop/infer``, which reads the body and answers a fixed one-row V2 response without parsing or
predicting. Its throughput is what HTTP, the event loop and the framework cost: no inference server built on
this stack can beat it, so the benchmark states Kultivar's goals as fractions of it.

    KULTIVAR_MODEL_NAME=iris KULTIVAR_MODEL_URI=... KULTIVAR_MODEL_DIGEST=... python bench/floor_server.py
"""

from __future__ import annotations

import sys

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kultivar.serving.config import ServingConfig
from kultivar.serving.server import run

PATH = "/v2/models/noop/infer"
ANSWER = orjson.dumps({"model_name": "noop", "model_version": "1",
                       "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}]})


async def noop(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


def main() -> int:
    return run(ServingConfig.from_env(), log_level="warning", extra_routes=[Route(PATH, noop, methods=["POST"])])


if __name__ == "__main__":
    sys.exit(main())
