"""Shadow traffic on the replicas router: the stable server forwards a sampled copy of the requests it answered
to the shadow version's Service, compares the shadow's answer with its own, and counts the outcome.

The user's request never waits for the shadow. :meth:`ShadowForwarder.offer` runs on the request's path but only
samples and puts the copy on a bounded queue (``put_nowait``: no await, no I/O); a few worker tasks send the
copies afterwards. A full queue drops the copy and counts the drop, so a slow or dead shadow costs users nothing
but its copies. The operator sets (see kultivar.domain.shadow):

=========================  =====================================================================================
KULTIVAR_SHADOW_URL        base URL of the shadow's Service (``http://<deployment>-shadow.<namespace>.svc``); the
                           copy goes to the same path the user called (V2 infer or V1 predict)
KULTIVAR_SHADOW_VERSION    the shadow's Model version (the ``shadow_version`` label of the counters below)
KULTIVAR_SHADOW_PERCENT    percent of answered requests copied (1-100, default 100)
KULTIVAR_SHADOW_QUEUE      copies waiting to be sent at most (default 256); more are dropped
KULTIVAR_SHADOW_TIMEOUT_MS how long a copy may take (default 2000); longer counts as an error
=========================  =====================================================================================

Counters (with the server's identity labels, plus ``shadow_version``):

* ``kultivar_shadow_requests_total{outcome}``: answered (the shadow returned 200), error (any other status, a
  timeout, unreachable), dropped (the queue was full);
* ``kultivar_shadow_rows_total{outcome}``: per predicted row of an answered copy, agree or disagree (classifiers:
  the same class), or compared (regressors);
* ``kultivar_shadow_absolute_difference_total``: regressors, the sum of |shadow - own| over compared rows.

The operator turns them into status.shadow's agreement and mean absolute difference.

Feedback about a shadowed answer counts for the shadow too: the server keeps the shadow's answer to its last
:data:`RECALLED` single-row copies by the response id, and a feedback item quoting that id (and this server's
version) is also counted as the shadow's (prediction, actual). Only the replica that forwarded the copy holds it:
with several stable replicas, the shadow's labels are those that reach the replica that forwarded the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from kultivar.serving.feedback import class_key

log = logging.getLogger("kultivar.serving.shadow")

REQUEST_OUTCOMES = ("answered", "error", "dropped")
ROW_OUTCOMES = ("agree", "disagree", "compared")
SHADOW_HEADER = "Kultivar-Shadow-Of"  # on copies: the version that answered the user (for the shadow's logs)
WORKERS = 4  # copies in flight at once per server process
RECALLED = 10_000  # single-row answers of the shadow kept by response id, for feedback about them

# POST body to url with headers; returns the response's status and body. Raises OSError when unreachable.
Send = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, bytes]]]


class ShadowCounters(Collector):
    """The forwarding counters, exported on scrape."""

    def __init__(self, names: Sequence[str], values: Sequence[str], shadow_version: str) -> None:
        self.names, self.values = [*names, "shadow_version"], [*values, shadow_version]
        self.requests = dict.fromkeys(REQUEST_OUTCOMES, 0)
        self.rows = dict.fromkeys(ROW_OUTCOMES, 0)
        self.absolute_difference = 0.0

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("kultivar_shadow_requests", "Copies of answered requests sent to the shadow "
                                       "version, by outcome.", labels=[*self.names, "outcome"])
        for outcome, count in self.requests.items():
            requests.add_metric([*self.values, outcome], count)
        rows = CounterMetricFamily("kultivar_shadow_rows", "Predicted rows of answered copies: agree or disagree "
                                   "with this server's answer (classifiers), compared (regressors).",
                                   labels=[*self.names, "outcome"])
        for outcome, count in self.rows.items():
            rows.add_metric([*self.values, outcome], count)
        difference = CounterMetricFamily("kultivar_shadow_absolute_difference", "Sum of |shadow - own| predicted "
                                         "values over compared rows (regressors).", labels=self.names)
        difference.add_metric(self.values, self.absolute_difference)
        yield from (requests, rows, difference)


@dataclass(frozen=True)
class Copy:
    path: str  # the path the user called, e.g. /v2/models/iris/infer
    body: bytes
    content_type: str
    own: np.ndarray  # this server's answer, one label (or value) per row
    request_id: str = ""  # the id this server answered with (feedback quotes it)


def urllib_send(timeout: float) -> Send:
    """The default transport: a blocking POST in a worker thread (the event loop never waits on it)."""

    def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(url, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as e:
            return int(e.code), b""

    async def send(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        return await asyncio.to_thread(post, url, body, headers)

    return send


def answers(body: bytes) -> list[Any] | None:
    """The predicted labels (or values) in a V2 or V1 response body; None when it carries none as JSON."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # binary outputs (the request asked for them): not compared
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("predictions"), list):
        return list(doc["predictions"])
    for output in doc.get("outputs") or []:
        if isinstance(output, dict) and output.get("name") == "predict" and isinstance(output.get("data"), list):
            return list(output["data"])
    return None


class ShadowForwarder:
    """Samples answered requests onto a bounded queue; worker tasks send them to the shadow and compare."""

    def __init__(self, target: str, version: str, percent: int, counters: ShadowCounters, *, own_version: str,
                 task: Callable[[], str], send: Send, capacity: int = 256,
                 sample: Callable[[], float] = random.random, workers: int = WORKERS) -> None:
        self.target, self.version, self.percent = target.rstrip("/"), version, percent
        self.counters, self.own_version, self.task = counters, own_version, task
        self.send, self.sample, self.workers = send, sample, workers
        self.queue: asyncio.Queue[Copy] = asyncio.Queue(maxsize=capacity)
        self._tasks: list[asyncio.Task[None]] = []
        # The shadow's answer to recent single-row copies by response id: feedback about the stable's answer then
        # counts for the shadow too (kultivar.serving.feedback), as the label is the truth for both.
        self.recalled: OrderedDict[str, Any] = OrderedDict()

    def recall(self, request_id: str, version: str) -> tuple[str, Any] | None:
        """(shadow version, its answer) for feedback about this server's answer with that id, if still kept."""
        if version != self.own_version:
            return None
        answer = self.recalled.get(request_id)
        return None if answer is None else (self.version, answer)

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def offer(self, path: str, body: bytes, content_type: str, own: np.ndarray, request_id: str = "") -> bool:
        """Queue a copy of an answered request (sampled at percent); never waits. Whether it was queued."""
        if self.percent < 100 and self.sample() * 100 >= self.percent:
            return False
        try:
            self.queue.put_nowait(Copy(path, body, content_type, own, request_id))
        except asyncio.QueueFull:
            self.counters.requests["dropped"] += 1
            return False
        return True

    async def _work(self) -> None:
        while True:
            copy = await self.queue.get()
            try:
                await self.forward(copy)
            except asyncio.CancelledError:
                raise
            except Exception:  # a copy must never take the worker down
                log.exception("shadow copy failed")
                self.counters.requests["error"] += 1
            finally:
                self.queue.task_done()

    async def forward(self, copy: Copy) -> None:
        headers = {"Content-Type": copy.content_type, SHADOW_HEADER: self.own_version}
        try:
            status, body = await self.send(f"{self.target}{copy.path}", copy.body, headers)
        except (OSError, TimeoutError) as e:
            log.debug("shadow %s unreachable: %s", self.target, e)
            self.counters.requests["error"] += 1
            return
        if status != 200:
            self.counters.requests["error"] += 1
            return
        self.counters.requests["answered"] += 1
        theirs = answers(body)
        own = copy.own.tolist()
        if theirs is None or len(theirs) != len(own):
            return  # answered, but nothing to compare row by row
        if len(own) == 1 and copy.request_id:
            self.recalled[copy.request_id] = theirs[0]
            if len(self.recalled) > RECALLED:
                self.recalled.popitem(last=False)
        if self.task() == "regression":
            self.counters.rows["compared"] += len(own)
            self.counters.absolute_difference += float(sum(abs(float(a) - float(b)) for a, b in zip(
                theirs, own, strict=True)))
            return
        agree = sum(class_key(a) == class_key(b) for a, b in zip(theirs, own, strict=True))
        self.counters.rows["agree"] += agree
        self.counters.rows["disagree"] += len(own) - agree
