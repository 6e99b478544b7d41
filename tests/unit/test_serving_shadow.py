"""Shadow forwarding on the stable server: copies go after the answer, on a bounded queue, and are compared.

No timing: a shadow that is "slow" is one whose reply the test holds back with an event, so the assertions are
about order (the user's answer exists while the copy is still unanswered), never about durations."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from kultivar.domain.metrics import parse
from kultivar.serving.config import ConfigError, ServingConfig, ShadowTarget
from kultivar.serving.feedback import FeedbackParser
from kultivar.serving.model import Prediction
from kultivar.serving.payload import FeatureSpec
from kultivar.serving.server import InferenceService, create_app
from kultivar.serving.shadow import ShadowCounters, ShadowForwarder

DIGEST = "sha256:" + "a" * 64


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test run on a fresh event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return wrapper


class HeldShadow:
    """A shadow whose replies wait until released: what a slow target looks like, without a clock."""

    def __init__(self, reply: Any = None, status: int = 200) -> None:
        self.release = asyncio.Event()
        self.arrived: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue()
        self.reply, self.status = reply, status
        self.answered = 0

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        await self.arrived.put((url, body, headers))
        await self.release.wait()
        self.answered += 1
        return self.status, orjson.dumps(self.reply)


def forwarder(shadow: HeldShadow, capacity: int = 8, workers: int = 1, percent: int = 100,
              task: str = "classification", sample: Any = None) -> ShadowForwarder:
    counters = ShadowCounters(["model", "version"], ["iris", "1"], "2")
    return ShadowForwarder("http://iris-shadow.ns.svc/", "2", percent, counters, own_version="1",
                           task=lambda: task, send=shadow.send, capacity=capacity, workers=workers,
                           **({"sample": sample} if sample else {}))


def v2_reply(labels: list[Any]) -> dict[str, Any]:
    return {"model_name": "iris", "model_version": "2", "id": "x",
            "outputs": [{"name": "predict", "shape": [len(labels)], "datatype": "BYTES", "data": labels}]}


@run
async def test_offer_queues_without_waiting_and_drops_when_full() -> None:
    shadow = HeldShadow(v2_reply(["a"]))
    fwd = forwarder(shadow, capacity=2)
    fwd.start()
    assert fwd.offer("/v2/models/iris/infer", b"{}", "application/json", np.array(["a"]))
    await shadow.arrived.get()  # the one worker holds the first copy, unanswered
    assert [fwd.offer("/v2/models/iris/infer", b"{}", "application/json", np.array(["a"])) for _ in range(3)] == \
        [True, True, False]  # two wait in the queue; the third finds it full
    assert fwd.counters.requests == {"answered": 0, "error": 0, "dropped": 1}
    shadow.release.set()
    await fwd.queue.join()
    assert fwd.counters.requests == {"answered": 3, "error": 0, "dropped": 1}
    await fwd.stop()


@run
async def test_copies_are_compared_row_by_row() -> None:
    shadow = HeldShadow(v2_reply(["a", "b", "b"]))
    shadow.release.set()
    fwd = forwarder(shadow)
    fwd.start()
    fwd.offer("/v2/models/iris/infer", b'{"inputs": []}', "application/json", np.array(["a", "a", "b"]))
    await fwd.queue.join()
    url, body, headers = await shadow.arrived.get()
    assert url == "http://iris-shadow.ns.svc/v2/models/iris/infer" and body == b'{"inputs": []}'
    assert headers["Kultivar-Shadow-Of"] == "1"
    assert fwd.counters.rows == {"agree": 2, "disagree": 1, "compared": 0}
    await fwd.stop()


@run
async def test_regressors_sum_the_absolute_differences() -> None:
    shadow = HeldShadow({"predictions": [1.5, 2.0], "model_version": "2", "id": "x"})  # a V1 answer
    shadow.release.set()
    fwd = forwarder(shadow, task="regression")
    fwd.start()
    fwd.offer("/v1/models/iris:predict", b"{}", "application/json", np.array([1.0, 3.0]))
    await fwd.queue.join()
    assert fwd.counters.rows["compared"] == 2 and fwd.counters.absolute_difference == pytest.approx(1.5)
    await fwd.stop()


@pytest.mark.parametrize("status", [500, 503])
@run
async def test_a_failing_shadow_counts_errors(status: int) -> None:
    shadow = HeldShadow({"error": "boom"}, status=status)
    shadow.release.set()
    fwd = forwarder(shadow)
    fwd.start()
    fwd.offer("/v2/models/iris/infer", b"{}", "application/json", np.array(["a"]))
    await fwd.queue.join()
    assert fwd.counters.requests["error"] == 1 and fwd.counters.rows["agree"] == 0
    await fwd.stop()


@run
async def test_an_unreachable_shadow_counts_errors() -> None:
    async def unreachable(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        raise ConnectionRefusedError("nothing listens")

    counters = ShadowCounters(["model", "version"], ["iris", "1"], "2")
    fwd = ShadowForwarder("http://x", "2", 100, counters, own_version="1", task=lambda: "classification",
                          send=unreachable)
    fwd.start()
    fwd.offer("/v2/models/iris/infer", b"{}", "application/json", np.array(["a"]))
    await fwd.queue.join()
    assert counters.requests["error"] == 1
    await fwd.stop()


def test_sampling_copies_the_percent_asked() -> None:
    draws = iter([0.05, 0.15, 0.19, 0.2, 0.9])
    fwd = forwarder(HeldShadow(), percent=20, sample=lambda: next(draws))
    assert [fwd.offer("/", b"", "", np.array([])) for _ in range(5)] == [True, True, True, False, False]


class StubModel:
    """Just enough of a ServedModel: one numeric feature, predicts its sign as a class."""

    features = (FeatureSpec("x", "numeric"),)
    task = "classification"
    classes = ["neg", "pos"]
    has_probabilities = False

    def predict(self, rows: Any, probabilities: bool = False) -> Prediction:
        values = rows.columns[0]
        return Prediction(np.where(np.asarray(values, dtype=float) >= 0, "pos", "neg").astype(object))


@run
async def test_the_user_is_answered_before_the_shadow_replies() -> None:
    config = ServingConfig(model_name="iris", model_uri="file:///m/model.skops", model_digest=DIGEST,
                           shadow=ShadowTarget("http://iris-shadow.ns.svc", "2"))
    service = InferenceService(config)
    assert service.shadow is not None
    shadow = HeldShadow(v2_reply(["neg"]))
    service.shadow.send = shadow.send
    service.model, service.ready = StubModel(), True  # type: ignore[assignment]
    service.shadow.start()
    app = create_app(service)
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2.0]}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/v2/models/iris/infer", content=orjson.dumps(body),
                                     headers={"content-type": "application/json"})
        # The user has the stable's answer while the copy sits at the shadow, unanswered.
        assert response.status_code == 200 and response.json()["outputs"][0]["data"] == ["pos"]
        _, copied, _ = await shadow.arrived.get()
        assert shadow.answered == 0 and copied == orjson.dumps(body)
        shadow.release.set()
        await service.shadow.queue.join()
        metrics = (await client.get("/metrics")).text
    snap = parse(metrics)
    assert snap.shadow[(2, "requests:answered")] == 1 and snap.shadow[(2, "rows:disagree")] == 1
    await service.stop()


@run
async def test_feedback_about_a_shadowed_answer_counts_for_the_shadow_too() -> None:
    config = ServingConfig(model_name="iris", model_uri="file:///m/model.skops", model_digest=DIGEST,
                           shadow=ShadowTarget("http://iris-shadow.ns.svc", "2"))
    service = InferenceService(config)
    assert service.shadow is not None
    shadow = HeldShadow(v2_reply(["neg"]))
    shadow.release.set()
    service.shadow.send = shadow.send
    model = StubModel()
    service.model, service.ready = model, True  # type: ignore[assignment]
    service.metrics.bind_model(model.features, model.task, model.classes, None, False)
    service.feedback = FeedbackParser("iris", model.task, model.classes)
    service.shadow.start()
    app = create_app(service)
    infer = {"id": "req-1", "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2.0]}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        answer = (await client.post("/v2/models/iris/infer", content=orjson.dumps(infer))).json()
        await service.shadow.queue.join()
        feedback = {"items": [{"id": answer["id"], "version": answer["model_version"], "prediction": "pos",
                               "actual": "neg"},
                              {"id": "unknown", "version": "1", "prediction": "pos", "actual": "pos"}]}
        response = await client.post("/v2/models/iris/feedback", content=orjson.dumps(feedback))
        assert response.status_code == 200 and response.json()["counted"] == 2
        snap = parse((await client.get("/metrics")).text)
    # The stable's miss and hit as sent; the shadow's hit (it answered neg) for the id it answered.
    assert snap.labelled == {(1, "pos", "neg"): 1.0, (1, "pos", "pos"): 1.0, (2, "neg", "neg"): 1.0}
    await service.stop()


def test_shadow_settings_from_the_environment() -> None:
    env = {"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": "file:///m/model.skops",
           "KULTIVAR_MODEL_DIGEST": DIGEST}
    assert ServingConfig.from_env(env).shadow is None
    config = ServingConfig.from_env({**env, "KULTIVAR_SHADOW_URL": "http://iris-shadow.ns.svc",
                                     "KULTIVAR_SHADOW_VERSION": "2", "KULTIVAR_SHADOW_PERCENT": "10"})
    assert config.shadow == ShadowTarget("http://iris-shadow.ns.svc", "2", 10, 256, 2000)
    with pytest.raises(ConfigError, match="set both KULTIVAR_SHADOW_URL and KULTIVAR_SHADOW_VERSION"):
        ServingConfig.from_env({**env, "KULTIVAR_SHADOW_URL": "http://x"})
    with pytest.raises(ConfigError, match="KULTIVAR_SHADOW_PERCENT must be between 1 and 100"):
        ServingConfig.from_env({**env, "KULTIVAR_SHADOW_URL": "http://x", "KULTIVAR_SHADOW_VERSION": "2",
                                "KULTIVAR_SHADOW_PERCENT": "0"})
