"""The "ids off" server for bench_feedback.py: ``kultivar serve`` with the prediction id and version taken out.

The product has no switch to turn response ids off (every answer must carry them, issue #16), and adding one only
for a benchmark would be a setting that exists to be measured. So this bench-only script runs the very same
process as ``kultivar serve`` (the same ``KULTIVAR_*`` settings, :func:`kultivar.serving.server.run`, the same
Starlette app and uvicorn settings) after replacing, in this process only, the four places where the id path
touches an inference request:

* ``InferenceService.next_id`` (the generated id) returns a constant;
* ``InferenceService.encode_v2``'s usual 1-row answer is written without the ``model_version`` and ``id`` fields
  (other output layouts are left as they are: the bench only sends the usual request);
* ``_Answer`` (the 200 response) is sent without the ``Kultivar-Request-Id`` and ``Kultivar-Model-Version``
  headers;
* ``Routes._copy`` (the shadow copy, which feedback for shadowed requests relies on) does nothing.

Everything else (parsing, batching, prediction, metrics, drift accounting) is the product code unchanged, so the
CPU difference against ``kultivar serve`` is what ids, versions and the feedback bookkeeping cost per request.

    KULTIVAR_MODEL_NAME=iris KULTIVAR_MODEL_URI=... KULTIVAR_MODEL_DIGEST=... python bench/no_ids_server.py
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from kultivar.serving import server
from kultivar.serving.config import ServingConfig
from kultivar.serving.payload import DEFAULT_OUTPUTS, OUTPUT, datatype_of

_encode_v2 = server.InferenceService.encode_v2
_routes_init = server.Routes.__init__


def _no_id(self: server.InferenceService) -> str:
    return ""


def _encode_without_id(self: server.InferenceService, prediction: Any, request: Any,
                       response_id: str | None = None) -> tuple[bytes, int | None]:
    if request.outputs is not DEFAULT_OUTPUTS:
        return _encode_v2(self, prediction, request, response_id)
    labels = prediction.labels
    head = b'{"model_name":' + orjson.dumps(self.config.model_name)
    return b"".join((head, b',"outputs":[{"name":"', OUTPUT.encode(), b'","shape":[', str(labels.shape[0]).encode(),
                     b'],"datatype":"', datatype_of(labels).encode(), b'","data":', orjson.dumps(labels.tolist()),
                     b"}]}")), None


def _answer_without_id(self: server._Answer, body: bytes, fixed: list[tuple[bytes, bytes]], _: str) -> None:
    self.status_code = 200
    self.background = None
    self.body = body
    self.raw_headers = [*fixed, (b"content-length", str(len(body)).encode("latin-1"))]


def _routes_without_version(self: server.Routes, service: server.InferenceService) -> None:
    _routes_init(self, service)
    self._answer_headers = [(b"content-type", b"application/json")]


def _no_copy(self: server.Routes, *_: Any) -> None:
    return None


def main() -> int:
    server.InferenceService.next_id = _no_id  # type: ignore[method-assign]
    server.InferenceService.encode_v2 = _encode_without_id  # type: ignore[method-assign]
    server._Answer.__init__ = _answer_without_id  # type: ignore[method-assign]
    server.Routes.__init__ = _routes_without_version  # type: ignore[method-assign]
    server.Routes._copy = _no_copy  # type: ignore[method-assign]
    return server.run(ServingConfig.from_env(), log_level="warning")


if __name__ == "__main__":
    sys.exit(main())
