"""The server's own CPU per inference request, without HTTP: the Starlette app driven with ASGI messages.

Trains the iris pipeline as ``bench_serving.py`` does (compiled to ONNX), builds the app ``kultivar serve`` runs
plus the floor's no-op route (``floor_server.py``), freezes the heap as ``run()`` does, then for concurrency 1, 8
and 32 drives each route with that many tasks (each awaits its answer, then yields to the loop like a client
round trip would) and reports the CPU time per request (``time.thread_time``; best of five rounds). CPU time is
what other jobs on a shared machine disturb least, so this shows a change to the request path where
``bench_serving.py``'s requests per second swing with the machine. uvicorn and the kernel are left out: they
cost the same for both routes.

    python bench/serving_inprocess.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serving
import floor_server

INFER = "/v2/models/iris/infer"


def scope(path: str, body: bytes) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5555), "scheme": "http", "method": "POST",
            "root_path": "", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def one(app: Any, path: str, body: bytes) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(path, body), receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"{path} answered {sent}")


async def cpu_per_request(app: Any, path: str, bodies: list[bytes], concurrency: int, requests: int) -> float:
    async def client(k: int) -> None:
        for i in range(requests // concurrency):
            await one(app, path, bodies[(i + 7 * k) % len(bodies)])
            await asyncio.sleep(0)

    started = time.thread_time()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return (time.thread_time() - started) / requests * 1e6


async def measure(requests: int) -> None:
    from starlette.routing import Route

    from kultivar.serving.config import ServingConfig
    from kultivar.serving.server import InferenceService, create_app

    service = InferenceService(ServingConfig.from_env())
    app = create_app(service, [Route(floor_server.PATH, floor_server.noop, methods=["POST"])])
    await service.load()
    if not service.ready:
        raise RuntimeError(f"the model did not load: {service.failure}")
    gc.collect()
    gc.freeze()  # as run() does once the model is loaded
    bodies = bench_serving.request_bodies(4)
    print(f"backend {service.model.backend if service.model else '?'}; CPU per request, best of 5 rounds of "
          f"{requests} requests")
    for concurrency in bench_serving.CONCURRENCIES:
        floor = min([await cpu_per_request(app, floor_server.PATH, bodies, concurrency, requests) for _ in range(5)])
        kultivar = min([await cpu_per_request(app, INFER, bodies, concurrency, requests) for _ in range(5)])
        print(f"  c={concurrency:<2} floor {floor:6.1f} us   kultivar {kultivar:6.1f} us   "
              f"(+{kultivar - floor:.1f} us)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kultivar-serving-inprocess-") as tmp:
        model = bench_serving.train_model(Path(tmp) / "store")
        os.environ.update({"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": model["uri"],
                           "KULTIVAR_MODEL_DIGEST": model["digest"], "KULTIVAR_BACKEND": "onnx"})
        try:
            import uvloop

            uvloop.run(measure(args.requests))
        except ImportError:
            asyncio.run(measure(args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
