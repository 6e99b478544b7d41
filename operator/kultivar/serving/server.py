"""The inference server: Starlette routes on uvicorn (uvloop + httptools when installed), one model per process.

Start-up: the HTTP port opens first so liveness answers while the model loads (large models take a while); the
model is then loaded in a worker thread (sha256 verified before deserialising, see :mod:`.model`), a test
inference runs on it, and only then does readiness turn to 200. If loading or the test inference fails the
server logs why, writes it to the termination log and exits non-zero (2 when the same settings can never work,
e.g. a digest mismatch; 1 when retrying may help, e.g. storage unreachable) instead of serving nothing.

Routes (Open Inference Protocol V2 REST, plus the V1 predict route for older clients):

=====  ==========================================================  ==============================================
GET    /v2/health/live                                             200 while the process runs
GET    /v2/health/ready                                            200 once the model passed its test inference
GET    /v2                                                         server metadata
GET    /v2/models/{name}[/versions/{version}]                      model metadata (features, output, classes)
GET    /v2/models/{name}[/versions/{version}]/ready                model readiness
POST   /v2/models/{name}[/versions/{version}]/infer                inference (see :mod:`.payload` for the body)
GET    /v1/models/{name}                                           V1 model status
POST   /v1/models/{name}:predict                                   V1 inference: ``{"instances": [...]}``
GET    /metrics                                                    Prometheus metrics (see :mod:`.monitoring`)
=====  ==========================================================  ==============================================

Errors are JSON ``{"error": "..."}``: 400 for a bad payload, 404 for another model's name, 413 for a body over
``KULTIVAR_MAX_REQUEST_BYTES``, 503 before the model is ready, 500 if prediction itself fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kultivar.serving.batching import BatcherClosed, MicroBatcher
from kultivar.serving.config import ServingConfig
from kultivar.serving.model import ModelLoadError, ServedModel, load_served_model
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import OUTPUT, PayloadError, Rows, concat, datatype_of, parse_v1, parse_v2

log = logging.getLogger("kultivar.serving")

EXIT_OK, EXIT_RETRYABLE, EXIT_PERMANENT = 0, 1, 2
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INPUT_DATATYPES = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}


class RequestTooLarge(Exception):
    pass


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


class InferenceService:
    """State shared by the routes: the model once loaded, the batcher and the metrics."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.metrics = ServingMetrics(config.model_name, config.model_version, config.model_digest,
                                      deployment=config.deployment)
        self.model: ServedModel | None = None
        self.ready = False
        self.failure: ModelLoadError | None = None
        self.batcher: MicroBatcher[Rows, np.ndarray] = MicroBatcher(
            self._predict_batch, max_batch=config.max_batch, max_wait=config.batch_wait_ms / 1000.0,
            size=lambda rows: rows.count)
        self.on_fatal: Callable[[], None] = lambda: None  # set by run(): stops uvicorn
        self._loader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start_loading(self) -> None:
        self._loader = asyncio.get_running_loop().create_task(self.load())

    async def load(self) -> None:
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._load_and_test)
        except ModelLoadError as e:
            self._fail(e)
            return
        except Exception as e:  # anything unforeseen still must not leave a live server that never gets ready
            log.exception("loading the model failed")
            self._fail(ModelLoadError("ModelLoadFailed", f"loading the model failed: {type(e).__name__}: {e}",
                                      permanent=False))
            return
        self.metrics.bind_model(model.features, model.task, model.classes, model.profile,
                                self.config.drift_accounting)
        self.model = model
        self.ready = True
        self.metrics.set_ready(True)
        log.info("model %s version %s (%s) ready in %.2fs: %d features, task %s, drift accounting %s, batches of "
                 "up to %d rows", self.config.model_name, self.config.model_version, self.config.model_digest,
                 time.perf_counter() - started, len(model.features), model.task,
                 "on" if self.config.drift_accounting and model.profile else "off", self.config.max_batch)

    def _load_and_test(self) -> ServedModel:
        model = load_served_model(self.config)
        log.info("model file verified (%s) and loaded; running the test inference", self.config.model_digest)
        try:
            sample = model.sample_rows()
            predictions = model.predict(sample)
            model.check_prediction(predictions)
            self.encode_v2(predictions, None)  # the response path too: a prediction we cannot encode is a failure
        except Exception as e:
            raise ModelLoadError("TestInferenceFailed",
                                 f"the test inference on the loaded model failed: {type(e).__name__}: {e}; the "
                                 "model does not accept the inputs its manifest describes") from None
        log.info("test inference passed: one row predicted %r", predictions.tolist()[0])
        return model

    def _fail(self, error: ModelLoadError) -> None:
        self.failure = error
        log.error("refusing to serve: %s: %s", error.reason, error.message)
        _write_termination(error)
        self.on_fatal()

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        await self.batcher.close()

    @property
    def exit_code(self) -> int:
        if self.failure is None:
            return EXIT_OK
        return EXIT_PERMANENT if self.failure.permanent else EXIT_RETRYABLE

    # ---------------------------------------------------------------------------------------- prediction

    def _predict_batch(self, batch: list[Rows]) -> list[np.ndarray]:
        model = self.model
        assert model is not None, "requests are only batched once the model is ready"
        rows = concat(batch)
        predictions = model.predict(rows)
        self.metrics.batch(rows, predictions)
        out, start = [], 0
        for item in batch:
            out.append(predictions[start:start + item.count])
            start += item.count
        return out

    def encode_v2(self, predictions: np.ndarray, request_id: str | None) -> bytes:
        body: dict[str, Any] = {
            "model_name": self.config.model_name,
            "model_version": self.config.model_version,
            "outputs": [{"name": OUTPUT, "shape": [int(predictions.shape[0])], "datatype": datatype_of(predictions),
                         "data": predictions.tolist()}],
        }
        if request_id is not None:
            body["id"] = request_id
        return orjson.dumps(body)

    def metadata(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.config.model_name, "versions": [self.config.model_version],
                                "platform": "sklearn", "inputs": [], "outputs": []}
        model = self.model
        if model is None:
            return body
        body["inputs"] = [{"name": f.name, "datatype": INPUT_DATATYPES[f.type], "shape": [-1]}
                          for f in model.features]
        out_type = "FP64" if model.task == "regression" else (
            "INT64" if model.classes and all(isinstance(c, int) for c in model.classes) else "BYTES")
        body["outputs"] = [{"name": OUTPUT, "datatype": out_type, "shape": [-1]}]
        body["parameters"] = {"task": model.task, "digest": self.config.model_digest,
                              "features": [{"name": f.name, "type": f.type} for f in model.features],
                              "classes": model.classes}
        return body


def _write_termination(error: ModelLoadError) -> None:
    """Best effort: tell Kubernetes (and so the operator) why the server refused to start."""
    path = os.environ.get("KULTIVAR_TERMINATION_LOG") or "/dev/termination-log"
    if not os.environ.get("KULTIVAR_TERMINATION_LOG") and not os.path.exists(path):
        return  # not in a container with a termination log
    try:
        from kultivar.workloads.termination import write_termination

        write_termination({"ok": False, "reason": error.reason, "message": error.message,
                           "retryable": not error.permanent}, path)
    except OSError as e:
        log.warning("could not write the termination log %s: %s", path, e)


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: InferenceService) -> Starlette:
    config = service.config
    name, version = config.model_name, config.model_version
    metrics = service.metrics

    def other_model(request: Request) -> Response | None:
        asked = request.path_params.get("name")
        if asked != name:
            return _error(f"model {asked!r} is not served here; this server serves {name!r}", 404)
        asked_version = request.path_params.get("version")
        if asked_version is not None and asked_version != version:
            return _error(f"model {name!r} has no version {asked_version!r} here; this server serves version "
                          f"{version!r}", 404)
        return None

    async def infer(request: Request, parse: Callable[[bytes], tuple[Rows, str | None]],
                    encode: Callable[[np.ndarray, str | None], bytes]) -> Response:
        started = time.perf_counter()
        outcome = "success"
        try:
            if (wrong := other_model(request)) is not None:
                outcome = "bad_request"
                return wrong
            if not service.ready:
                outcome = "unavailable"
                return _error(f"model {name!r} is not ready yet (it is still loading); retry shortly", 503)
            rows, request_id = parse(await _body(request, config.max_request_bytes))
            predictions = await service.batcher.submit(rows)
            return Response(encode(predictions, request_id), media_type="application/json")
        except PayloadError as e:
            outcome = "bad_request"
            return _error(str(e), 400)
        except RequestTooLarge:
            outcome = "bad_request"
            return _error(f"the request body is larger than {config.max_request_bytes} bytes; send fewer rows per "
                          "request (or raise KULTIVAR_MAX_REQUEST_BYTES)", 413)
        except BatcherClosed as e:
            outcome = "unavailable"
            return _error(str(e), 503)
        except Exception as e:
            outcome = "error"
            log.exception("prediction failed")
            return _error(f"prediction failed: {type(e).__name__}: {e}", 500)
        finally:
            metrics.request(outcome, time.perf_counter() - started)

    def features() -> Sequence[Any]:
        assert service.model is not None
        return service.model.features

    def parse_v2_body(body: bytes) -> tuple[Rows, str | None]:
        parsed = parse_v2(body, features(), name)
        return parsed.rows, parsed.id

    def parse_v1_body(body: bytes) -> tuple[Rows, str | None]:
        return parse_v1(body, features(), name), None

    def encode_v1(predictions: np.ndarray, _id: str | None) -> bytes:
        return orjson.dumps({"predictions": predictions.tolist()})

    async def v2_infer(request: Request) -> Response:
        return await infer(request, parse_v2_body, service.encode_v2)

    async def v1_predict(request: Request) -> Response:
        return await infer(request, parse_v1_body, encode_v1)

    async def live(_: Request) -> Response:
        return _json({"live": True})

    async def ready(_: Request) -> Response:
        return _json({"ready": service.ready}, 200 if service.ready else 503)

    async def server_metadata(_: Request) -> Response:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            server_version = dist_version("kultivar")
        except PackageNotFoundError:
            server_version = "unknown"
        return _json({"name": "kultivar", "version": server_version, "extensions": []})

    async def model_metadata(request: Request) -> Response:
        return other_model(request) or _json(service.metadata())

    async def model_ready(request: Request) -> Response:
        return other_model(request) or _json({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    async def v1_status(request: Request) -> Response:
        return other_model(request) or _json({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    async def prometheus(_: Request) -> Response:
        # Rendered on the event loop on purpose: the counters are updated there too, so no lock is needed.
        return Response(metrics.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return _error(f"{request.method} is not allowed on {request.url.path}", 405)
        return _error(f"no route {request.url.path}; see /v2/models/{name} for this server's model", status)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        service.start_loading()
        yield
        await service.stop()

    # Inference routes first: the router tries routes in order.
    routes = [
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v1/models/{name}:predict", v1_predict, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v1/models/{name}", v1_status, methods=["GET"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {404: not_found, 405: not_found}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


def run(config: ServingConfig, log_level: str = "info") -> int:
    """Serve until SIGTERM/SIGINT or until the model cannot be served (then return 1 or 2, see ``.cli``)."""
    import uvicorn
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # the *_created series double the exposition and nothing here reads them
    service = InferenceService(config)
    app = create_app(service)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_config=None, log_level=log_level, access_log=False,
        server_header=False, lifespan="on", timeout_graceful_shutdown=10,
    ))

    def stop() -> None:
        server.should_exit = True

    service.on_fatal = stop
    log.info("serving model %s version %s on http://%s:%d (model %s)", config.model_name, config.model_version,
             config.host, config.port, config.model_uri)
    server.run()
    if service.failure is None and not server.started:
        return EXIT_RETRYABLE  # uvicorn could not start (e.g. the port is taken); it logged why
    return service.exit_code
