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
GET    /v2/models/{name}[/versions/{version}]                      model metadata (features, outputs, classes,
                                                                   backend: onnx or sklearn)
GET    /v2/models/{name}[/versions/{version}]/ready                model readiness
POST   /v2/models/{name}[/versions/{version}]/infer                inference (see :mod:`.payload` for the body)
GET    /v1/models/{name}                                           V1 model status
POST   /v1/models/{name}:predict                                   V1 inference: ``{"instances": [...]}``
POST   /v2/models/{name}/feedback                                  ground truth for served predictions (see
                                                                   :mod:`.feedback`)
GET    /metrics                                                    Prometheus metrics (see :mod:`.monitoring`)
=====  ==========================================================  ==============================================

Every inference response carries an id (the V2 request's ``id`` when it has one, else one the server makes up:
a random per-process prefix and a counter, unique across replicas without coordination) and the version that
answered: in the body (V2 ``id`` and ``model_version``; V1 ``id`` and ``model_version`` beside ``predictions``)
and in the headers ``Kultivar-Request-Id`` and ``Kultivar-Model-Version``. Feedback quotes them back.

Errors are JSON ``{"error": "..."}``: 400 for a bad payload (or probabilities asked of a model without them),
404 for another model's name, 413 for a body over ``KULTIVAR_MAX_REQUEST_BYTES``, 503 before the model is
ready, 500 if prediction itself fails.

The model runs as its compiled ONNX graph (onnxruntime) when the version has a verified one, else as the
scikit-learn pipeline (see :mod:`.model`); the metadata's ``parameters.backend`` and the metric
``kultivar_model_backend`` say which. When a compiled model was recorded but refused (missing, a digest other
than the registry's, unloadable, or disagreeing with scikit-learn on the test row) the metadata also carries
``compiledRejected: true`` and ``compiledNote`` (why), which the operator reports as a Warning Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kultivar.serving.batching import BatcherClosed, MicroBatcher
from kultivar.serving.config import ServingConfig
from kultivar.serving.feedback import FeedbackParser
from kultivar.serving.model import ModelLoadError, Prediction, ServedModel, load_served_model
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import (
    DEFAULT_OUTPUTS,
    OUTPUT,
    PROBA_OUTPUT,
    FeatureSpec,
    PayloadError,
    RequestedOutput,
    Rows,
    V2Request,
    concat,
    datatype_of,
    encode_binary,
    parse_v1,
    parse_v2,
)
from kultivar.serving.shadow import ShadowCounters, ShadowForwarder, urllib_send
from kultivar.serving.workers import SiblingUnavailable, WorkerGroup, listening_socket

log = logging.getLogger("kultivar.serving")

EXIT_OK, EXIT_RETRYABLE, EXIT_PERMANENT = 0, 1, 2
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INPUT_DATATYPES = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
REQUEST_ID_HEADER = "Kultivar-Request-Id"
VERSION_HEADER = "Kultivar-Model-Version"
BIG_FEEDBACK = 64 * 1024  # bytes of feedback parsed in a worker thread rather than on the event loop


class RequestTooLarge(Exception):
    pass


@dataclass(slots=True)
class Query:
    """One request's rows as the batcher carries them, and whether it wants probabilities (made per request:
    slotted, not frozen, whose ``__init__`` costs three times as much)."""

    rows: Rows
    probabilities: bool = False


class _Answer(Response):
    """A 200 inference answer with its headers laid out directly: Starlette's generic header handling costs a
    visible share of a request that takes tens of microseconds."""

    def __init__(self, body: bytes, fixed: list[tuple[bytes, bytes]], response_id: str) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [*fixed, (b"kultivar-request-id", response_id.encode("latin-1")),
                            (b"content-length", str(len(body)).encode("latin-1"))]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


class InferenceService:
    """State shared by the routes: the model once loaded, the batcher and the metrics."""

    def __init__(self, config: ServingConfig, group: WorkerGroup | None = None, freeze_heap: bool = False) -> None:
        """freeze_heap: this service is the process's only one (``run``): once the model is loaded, exempt what is
        on the heap from garbage collection (see ``load``)."""
        self.config = config
        self.group = group  # the pod's other worker processes (kultivar.serving.workers), if any
        self.freeze_heap = freeze_heap
        self.metrics = ServingMetrics(config.model_name, config.model_version, config.model_digest,
                                      deployment=config.deployment)
        self.model: ServedModel | None = None
        self.ready = False
        self.failure: ModelLoadError | None = None
        self.batcher: MicroBatcher[Query, Prediction] = MicroBatcher(
            self._predict_batch, max_batch=config.max_batch, max_wait=config.batch_wait_ms / 1000.0,
            size=lambda query: query.rows.count)
        self.on_fatal: Callable[[], None] = lambda: None  # set by run(): stops uvicorn
        self.feedback: FeedbackParser | None = None
        # Response ids: 48 random bits per process and a counter; no uuid4 (and no syscall) per request.
        self._id_prefix = secrets.token_hex(6)
        self._v2_head = orjson.dumps({"model_name": config.model_name, "model_version": config.model_version,
                                      "id": ""})[:-len(b'"id":""}')] + b'"id":'  # up to the id's value
        self._ids = itertools.count(1)
        self._loader: asyncio.Task[None] | None = None
        self.shadow: ShadowForwarder | None = None
        if config.shadow is not None:
            counters = ShadowCounters(self.metrics.identity.names, self.metrics.identity.values,
                                      config.shadow.version)
            self.metrics.registry.register(counters)
            self.shadow = ShadowForwarder(
                config.shadow.url, config.shadow.version, config.shadow.percent, counters,
                own_version=config.model_version, task=lambda: self.model.task if self.model else "classification",
                send=urllib_send(config.shadow.timeout_ms / 1000.0), capacity=config.shadow.queue)

    # ------------------------------------------------------------------------------------------ lifecycle

    def start_loading(self) -> None:
        self._loader = asyncio.get_running_loop().create_task(self.load())
        if self.shadow is not None:
            self.shadow.start()

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
        self.metrics.set_backend(model.backend, rejected=model.compiled_rejected)
        # A compiled model predicts a row in microseconds: a lone request is answered at once rather than handed
        # through the batcher's future (see kultivar.serving.batching); scikit-learn's milliseconds keep batching.
        self.batcher.eager = model.backend == "onnx"
        self.feedback = FeedbackParser(self.config.model_name, model.task, model.classes)
        self.model = model
        if self.freeze_heap:
            # The libraries and the model leave ~200,000 long-lived objects on the heap. Every full collection walks
            # all of them (~80 ms on one core) and, under load, requests in flight push enough objects into the
            # older generations to trigger one every few thousand requests: the p99 at concurrency 32 and ~8 us per
            # request on average. Moving them to the permanent generation (gc.freeze) leaves the collector only
            # what serving allocates; they are not garbage, so nothing is kept that would have been freed.
            gc.collect()
            gc.freeze()
        self.ready = True
        self.metrics.set_ready(True)
        if self.group is not None:
            self.group.mark_ready()
        log.info("model %s version %s (%s) ready in %.2fs: %d features, task %s, backend %s, drift accounting %s, "
                 "batches of up to %d rows", self.config.model_name, self.config.model_version,
                 self.config.model_digest, time.perf_counter() - started, len(model.features), model.task,
                 model.backend, "on" if self.config.drift_accounting and model.profile else "off",
                 self.config.max_batch)

    def _load_and_test(self) -> ServedModel:
        model = load_served_model(self.config)
        log.info("model file verified (%s) and loaded (backend %s); running the test inference",
                 self.config.model_digest, model.backend)
        try:
            sample = model.sample_rows()
            prediction = model.predict(sample, probabilities=model.has_probabilities)
            model.check_prediction(prediction.labels)
            if model.compiled is not None:
                # The compiled model passed parity at training; check it still agrees here, on this machine.
                reference = model.predict_sklearn(sample)
                if prediction.labels.tolist() != reference.labels.tolist() and model.task == "classification":
                    model.compiled_note = (f"the compiled model predicted {prediction.labels.tolist()[0]!r} for the "
                                           f"test row where scikit-learn predicts {reference.labels.tolist()[0]!r}")
                    log.warning("serving with scikit-learn: %s", model.compiled_note)
                    model.compiled = None
                    model.compiled_rejected = True
                    prediction = model.predict(sample, probabilities=model.has_probabilities)
            # The response path too: a prediction we cannot encode is a failure.
            self.encode_v2(prediction, V2Request(sample, None, (RequestedOutput(OUTPUT),)))
        except Exception as e:
            raise ModelLoadError("TestInferenceFailed",
                                 f"the test inference on the loaded model failed: {type(e).__name__}: {e}; the "
                                 "model does not accept the inputs its manifest describes") from None
        log.info("test inference passed: one row predicted %r", prediction.labels.tolist()[0])
        return model

    def _fail(self, error: ModelLoadError) -> None:
        self.failure = error
        log.error("refusing to serve: %s: %s", error.reason, error.message)
        _write_termination(error)
        self.on_fatal()

    @property
    def pod_ready(self) -> bool:
        """This process is ready and, with several workers, so is every other (see kultivar.serving.workers)."""
        return self.ready and (self.group is None or self.group.all_ready())

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        if self.shadow is not None:
            await self.shadow.stop()
        await self.batcher.close()

    @property
    def exit_code(self) -> int:
        if self.failure is None:
            return EXIT_OK
        return EXIT_PERMANENT if self.failure.permanent else EXIT_RETRYABLE

    # ---------------------------------------------------------------------------------------- prediction

    def check_probabilities(self) -> None:
        """400 unless the model can give probabilities."""
        model = self.model
        assert model is not None
        if model.task != "classification":
            raise PayloadError(f"model {self.config.model_name!r} is a regressor: it predicts values, not classes, "
                               f"so it has no {PROBA_OUTPUT!r} output (probabilities); ask for {OUTPUT!r} only")
        if not model.has_probabilities:
            raise PayloadError(f"model {self.config.model_name!r} has no probabilities: its estimator "
                               f"{type(model.estimator[-1]).__name__} has no predict_proba; ask for {OUTPUT!r} only")

    def _predict_batch(self, batch: list[Query]) -> list[Prediction]:
        model = self.model
        assert model is not None, "requests are only batched once the model is ready"
        if len(batch) == 1:
            query = batch[0]
            prediction = model.predict(query.rows, query.probabilities)
            self.metrics.batch(query.rows, prediction.labels, prediction.backend)
            return [prediction]
        probabilities = False
        for query in batch:
            probabilities = probabilities or query.probabilities
        rows = concat([query.rows for query in batch])
        prediction = model.predict(rows, probabilities)
        labels, proba, backend = prediction.labels, prediction.probabilities, prediction.backend
        self.metrics.batch(rows, labels, backend)
        if rows.count == len(batch):  # one row each (the usual micro-batch)
            if proba is None:
                return [Prediction(labels[i:i + 1], None, backend) for i in range(len(batch))]
            return [Prediction(labels[i:i + 1], proba[i:i + 1], backend) for i in range(len(batch))]
        out, start = [], 0
        for query in batch:
            out.append(prediction[start:start + query.rows.count])
            start += query.rows.count
        return out

    def next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):x}"

    def encode_v2(self, prediction: Prediction, request: V2Request, response_id: str | None = None
                  ) -> tuple[bytes, int | None]:
        """The response body and, when some outputs are binary, the JSON header's length."""
        if request.outputs is DEFAULT_OUTPUTS:  # the usual answer: labels as JSON, from a template
            labels = prediction.labels
            return b"".join((self._v2_head, orjson.dumps(response_id or request.id or ""), b',"outputs":[{"name":"',
                             OUTPUT.encode(), b'","shape":[', str(labels.shape[0]).encode(), b'],"datatype":"',
                             datatype_of(labels).encode(), b'","data":', orjson.dumps(labels.tolist()), b"}]}")), None
        outputs: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for wanted in request.outputs:
            if wanted.name == OUTPUT:
                values, datatype = prediction.labels, datatype_of(prediction.labels)
            else:
                assert prediction.probabilities is not None
                values, datatype = prediction.probabilities, "FP64"
            tensor: dict[str, Any] = {"name": wanted.name, "shape": list(values.shape), "datatype": datatype}
            if wanted.binary:
                raw = encode_binary(values, datatype)
                tensor["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                tensor["data"] = values.ravel().tolist()
            outputs.append(tensor)
        body: dict[str, Any] = {"model_name": self.config.model_name, "model_version": self.config.model_version,
                                "id": response_id or request.id or "", "outputs": outputs}
        header = orjson.dumps(body)
        if not chunks:
            return header, None
        return header + b"".join(chunks), len(header)

    def metadata(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.config.model_name, "versions": [self.config.model_version],
                                "platform": "sklearn", "inputs": [], "outputs": []}
        model = self.model
        if model is None:
            return body
        body["inputs"] = [{"name": f.name, "datatype": INPUT_DATATYPES[f.type], "shape": [-1]}
                          for f in model.features]
        out_type = "FP64" if model.task == "regression" else (
            "INT64" if model.classes and all(isinstance(c, int) and not isinstance(c, bool) for c in model.classes)
            else "BYTES")
        body["outputs"] = [{"name": OUTPUT, "datatype": out_type, "shape": [-1]}]
        if model.has_probabilities:
            body["outputs"].append({"name": PROBA_OUTPUT, "datatype": "FP64",
                                    "shape": [-1, len(model.classes or [])]})
        body["parameters"] = {"task": model.task, "digest": self.config.model_digest,
                              "features": [_described(f) for f in model.features],
                              "classes": model.classes, "backend": model.backend}
        if model.compiled_note:
            body["parameters"]["compiledNote"] = model.compiled_note
        if model.compiled_rejected:
            body["parameters"]["compiledRejected"] = True
        return body


def _described(feature: FeatureSpec) -> dict[str, Any]:
    """A feature in the metadata; its allowed values when values outside them are refused."""
    out: dict[str, Any] = {"name": feature.name, "type": feature.type}
    if feature.allowed is not None:
        out["allowed"] = sorted(feature.allowed)
    return out


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


def _lengths(request: Request) -> tuple[bytes | None, bytes | None]:
    """The Content-Length and Inference-Header-Content-Length headers, from one pass over the raw headers (ASGI
    servers give names in lower case) rather than a Headers object per request."""
    length = header = None
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"inference-header-content-length":
            header = value
    return length, header


async def _body(request: Request, limit: int, length: bytes | None = None) -> bytes:
    if length is None:
        length, _ = _lengths(request)
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge
    # The ASGI messages read directly (what Request.stream() does, without its async generator per request).
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header_length(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise PayloadError(f"Inference-Header-Content-Length must be a byte count, got {raw.decode('latin-1')!r}")
    return int(raw)


# The response body, the JSON header's length when binary outputs follow it, and the response's id.
Encoded = tuple[bytes, int | None, str]
# A protocol's (V2, V1) request parser - from the Inference-Header-Content-Length header and the body to the query
# for the batcher and the parsed request - and its answer encoder.
Parse = Callable[[bytes | None, bytes], tuple[Query, Any]]
Encode = Callable[[Prediction, Any], Encoded]


class Routes:
    """The HTTP handlers of one :class:`InferenceService` (one method per route)."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.config = service.config
        self.name, self.version = service.config.model_name, service.config.model_version
        self.metrics = service.metrics
        self._answer_headers = [(b"content-type", b"application/json"),
                                (VERSION_HEADER.lower().encode("latin-1"), self.version.encode("latin-1"))]
        self.v2_infer = functools.partial(self._infer, parse=self._v2_parse, encode=self._v2_encode)
        self.v1_predict = functools.partial(self._infer, parse=self._v1_parse, encode=self._v1_encode)

    def other_model(self, request: Request) -> Response | None:
        asked = request.path_params.get("name")
        if asked != self.name:
            return _error(f"model {asked!r} is not served here; this server serves {self.name!r}", 404)
        asked_version = request.path_params.get("version")
        if asked_version is not None and asked_version != self.version:
            return _error(f"model {self.name!r} has no version {asked_version!r} here; this server serves version "
                          f"{self.version!r}", 404)
        return None

    async def _infer(self, request: Request, parse: Parse, encode: Encode) -> Response:
        """One inference request: ``parse`` (V2 or V1) turns the body into a query, the batcher predicts it,
        ``encode`` builds the answer. (The routes call this coroutine directly, bound with functools.partial: every
        coroutine between Starlette and the batcher is suspended and resumed once more per batched request.)"""
        started = time.perf_counter()
        outcome = "success"
        config = self.config
        service = self.service
        try:
            if (wrong := self.other_model(request)) is not None:
                outcome = "bad_request"
                return wrong
            if not service.ready:
                outcome = "unavailable"
                return _error(f"model {self.name!r} is not ready yet (it is still loading); retry shortly", 503)
            length, binary_header = _lengths(request)
            body = await _body(request, config.max_request_bytes, length)
            query, parsed = parse(binary_header, body)
            pending = service.batcher.enqueue(query)
            prediction = await pending if isinstance(pending, asyncio.Future) else pending
            answer, header_length, response_id = encode(prediction, parsed)
            if service.shadow is not None:  # shadow traffic: queue a copy for the shadow version (never waits)
                service.shadow.offer(request.url.path, body, request.headers.get("content-type") or
                                     "application/json", prediction.labels, response_id)
            if header_length is None:
                return _Answer(answer, self._answer_headers, response_id)
            headers = {REQUEST_ID_HEADER: response_id, VERSION_HEADER: self.version,
                       "Inference-Header-Content-Length": str(header_length)}
            return Response(answer, media_type="application/octet-stream", headers=headers)
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
            self.metrics.request(outcome, time.perf_counter() - started)

    def _v2_parse(self, binary_header: bytes | None, body: bytes) -> tuple[Query, Any]:
        service = self.service
        assert service.model is not None
        parsed = parse_v2(body, service.model.features, self.name, _header_length(binary_header))
        probabilities = parsed.probabilities
        if probabilities:
            service.check_probabilities()
        return Query(parsed.rows, probabilities), parsed

    def _v2_encode(self, prediction: Prediction, parsed: Any) -> Encoded:
        response_id = parsed.id or self.service.next_id()
        return (*self.service.encode_v2(prediction, parsed, response_id), response_id)

    def _v1_parse(self, _: bytes | None, body: bytes) -> tuple[Query, Any]:
        service = self.service
        assert service.model is not None
        parsed = parse_v1(body, service.model.features, self.name)
        if parsed.probabilities:
            service.check_probabilities()
        return Query(parsed.rows, parsed.probabilities), parsed

    def _v1_encode(self, prediction: Prediction, parsed: Any) -> Encoded:
        response_id = self.service.next_id()
        answer: dict[str, Any] = {"predictions": prediction.labels.tolist(), "id": response_id,
                                  "model_version": self.version}
        if prediction.probabilities is not None and parsed.probabilities:
            answer["probabilities"] = prediction.probabilities.tolist()
        return orjson.dumps(answer), None, response_id

    async def feedback(self, request: Request) -> Response:
        """Count a batch of ground truth (all of it, or none with a 400 naming the problem)."""
        outcome = "success"
        try:
            if (wrong := self.other_model(request)) is not None:
                outcome = "bad_request"
                return wrong
            parser = self.service.feedback
            if parser is None:
                outcome = "unavailable"
                return _error(f"model {self.name!r} is not ready yet (it is still loading); retry shortly", 503)
            raw = await _body(request, self.config.max_request_bytes)
            # A large batch (10,000 items: ~70 ms) is parsed off the event loop so inference keeps flowing; the
            # counting itself stays on the loop, where scrapes read the counters (no lock needed).
            recall = self.service.shadow.recall if self.service.shadow is not None else None
            batch = await asyncio.to_thread(parser.parse, raw, recall) if len(raw) > BIG_FEEDBACK else \
                parser.parse(raw, recall)
            self.metrics.count_feedback(batch)
            answer: dict[str, Any] = {"counted": batch.count}
            if parser.task == "classification":
                answer["actual_other"] = batch.other_actual
            return _json(answer)
        except PayloadError as e:
            outcome = "bad_request"
            return _error(str(e), 400)
        except RequestTooLarge:
            outcome = "bad_request"
            return _error(f"the feedback body is larger than {self.config.max_request_bytes} bytes; send fewer items "
                          "per request", 413)
        finally:
            self.metrics.feedback_request(outcome)

    async def live(self, _: Request) -> Response:
        return _json({"live": True})

    async def ready(self, _: Request) -> Response:
        ready = self.service.pod_ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, _: Request) -> Response:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            server_version = dist_version("kultivar")
        except PackageNotFoundError:
            server_version = "unknown"
        return _json({"name": "kultivar", "version": server_version, "extensions": ["binary_tensor_data"]})

    async def model_metadata(self, request: Request) -> Response:
        return self.other_model(request) or _json(self.service.metadata())

    async def model_ready(self, request: Request) -> Response:
        ready = self.service.pod_ready
        return self.other_model(request) or _json({"name": self.name, "ready": ready}, 200 if ready else 503)

    async def v1_status(self, request: Request) -> Response:
        return await self.model_ready(request)

    async def prometheus(self, _: Request) -> Response:
        # Rendered on the event loop on purpose: the counters are updated there too, so no lock is needed.
        own = self.metrics.exposition()
        group = self.service.group
        if group is None:
            return Response(own, media_type=PROMETHEUS_CONTENT_TYPE)
        try:
            return Response(await group.exposition(own), media_type=PROMETHEUS_CONTENT_TYPE)
        except SiblingUnavailable as e:
            return _error(str(e), 503)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return _error(f"{request.method} is not allowed on {request.url.path}", 405)
        return _error(f"no route {request.url.path}; see /v2/models/{self.name} for this server's model", status)

    def table(self) -> list[Route]:
        # Inference routes first: the router tries routes in order.
        return [
            Route("/v2/models/{name}/infer", self.v2_infer, methods=["POST"]),
            Route("/v1/models/{name}:predict", self.v1_predict, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.v2_infer, methods=["POST"]),
            Route("/v2/models/{name}/feedback", self.feedback, methods=["POST"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", self.model_ready, methods=["GET"]),
            Route("/v1/models/{name}", self.v1_status, methods=["GET"]),
        ]


def create_app(service: InferenceService, extra_routes: list[Route] | None = None) -> Starlette:
    """The Starlette app serving ``service``; ``extra_routes`` (e.g. the benchmark's no-op endpoint) go first."""
    routes = Routes(service)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        samples = None
        if service.group is not None:  # siblings read this worker's samples for the pod's /metrics
            samples = await service.group.serve_samples(service.metrics.exposition)
        service.start_loading()
        yield
        await service.stop()
        if samples is not None:
            samples.close()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {404: routes.not_found,
                                                                               405: routes.not_found}
    return Starlette(routes=[*(extra_routes or []), *routes.table()], lifespan=lifespan,
                     exception_handlers=handlers)


def run(config: ServingConfig, log_level: str = "info", extra_routes: list[Route] | None = None,
        group: WorkerGroup | None = None) -> int:
    """Serve until SIGTERM/SIGINT or until the model cannot be served (then return 1 or 2, see ``.cli``).

    ``extra_routes``: for bench/floor_server.py, which measures this stack with a no-op endpoint. ``group``: this
    process is one of several sharing the port (:mod:`kultivar.serving.workers`)."""
    import uvicorn
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # the *_created series double the exposition and nothing here reads them
    service = InferenceService(config, group, freeze_heap=True)
    app = create_app(service, extra_routes)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_config=None, log_level=log_level, access_log=False,
        server_header=False, lifespan="on", timeout_graceful_shutdown=10,
    ))

    def stop() -> None:
        server.should_exit = True

    service.on_fatal = stop
    log.info("serving model %s version %s on http://%s:%d (model %s)%s", config.model_name, config.model_version,
             config.host, config.port, config.model_uri,
             f", worker {group.index + 1} of {group.count}" if group is not None else "")
    if group is None:
        server.run()
    else:
        try:
            sockets = [listening_socket(config.host, config.port)]
        except OSError as e:
            log.error("cannot bind %s:%d: %s", config.host, config.port, e)
            return EXIT_RETRYABLE
        server.run(sockets=sockets)
    if service.failure is None and not server.started:
        return EXIT_RETRYABLE  # uvicorn could not start (e.g. the port is taken); it logged why
    return service.exit_code
