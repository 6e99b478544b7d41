"""Several server processes in one pod (``KULTIVAR_SERVE_WORKERS``, set by the operator from the CPU limit).

A server process keeps one core busy at most (one event loop; the compiled model runs with one onnxruntime
thread), so a pod with a limit of N cores runs N of them:

* **One port.** Each worker binds the same port with ``SO_REUSEPORT``; the kernel spreads new connections over
  them. The supervisor (the process Kubernetes starts) binds the port first without listening, which reserves it
  (and resolves port 0) but takes no connections: only listening sockets are chosen.
* **Own model, own batcher.** Each worker loads and verifies the model and micro-batches its own requests.
* **Metrics of the pod.** A scrape reaches one worker, which answers for the whole pod: its own samples plus
  every sibling's, read over the sibling's unix socket in a run directory they share, each sample labelled
  ``worker="<i>"``. Counters of the pod are the sum over ``worker`` (the operator's ``metricsSource: pods``
  sums label sets; its PromQL sums by version). A sibling that does not answer fails the scrape (503) rather
  than report a pod whose counters seem to have gone backwards.
* **Readiness of the pod.** A worker marks itself ready in the run directory once its test inference passed;
  ``/v2/health/ready`` says 200 only when every worker has, so no request meets a worker still loading.
* **One fate.** SIGTERM/SIGINT to the supervisor go to every worker (each drains its requests). When a worker
  exits on its own, the supervisor stops the others and exits with that worker's status (2: the model can never
  be served with these settings), so Kubernetes restarts the container whole rather than run it half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

from prometheus_client import Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from kultivar.serving.config import ServingConfig

log = logging.getLogger("kultivar.serving")

SIBLING_TIMEOUT = 5.0  # seconds a scrape waits for a sibling's samples
STOP_TIMEOUT = 20.0  # seconds the supervisor gives the workers to drain before killing them
WORKER_LABEL = "worker"


class SiblingUnavailable(Exception):
    """A sibling worker did not give its samples: the pod's metrics would be incomplete."""


@dataclass(frozen=True)
class WorkerGroup:
    """What one worker knows about its group: its index, the count and the shared run directory."""

    run_dir: str
    index: int
    count: int

    def socket_path(self, index: int) -> str:
        return os.path.join(self.run_dir, f"worker-{index}.sock")

    def ready_path(self, index: int) -> str:
        return os.path.join(self.run_dir, f"ready-{index}")

    def mark_ready(self) -> None:
        with open(self.ready_path(self.index), "w"):
            pass

    def all_ready(self) -> bool:
        return all(os.path.exists(self.ready_path(i)) for i in range(self.count))

    async def serve_samples(self, exposition: Any) -> asyncio.AbstractServer:
        """Answer each connection on this worker's unix socket with ``exposition()`` (its own samples)."""

        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(exposition())
                await writer.drain()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        path = self.socket_path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return await asyncio.start_unix_server(answer, path=path)

    async def _sibling(self, index: int) -> bytes:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.socket_path(index)),
                                                    SIBLING_TIMEOUT)
            try:
                return await asyncio.wait_for(reader.read(), SIBLING_TIMEOUT)
            finally:
                writer.close()
        except (OSError, TimeoutError) as e:
            raise SiblingUnavailable(f"worker {index} of {self.count} did not give its metrics ({e!r}); the pod's "
                                     "metrics would be incomplete") from None

    async def exposition(self, own: bytes) -> bytes:
        """The pod's exposition: every worker's samples with a ``worker`` label."""
        texts: dict[int, bytes] = {self.index: own}
        siblings = [i for i in range(self.count) if i != self.index]
        for i, text in zip(siblings, await asyncio.gather(*(self._sibling(i) for i in siblings)), strict=True):
            texts[i] = text
        return merge_expositions(texts)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge_expositions(texts: dict[int, bytes]) -> bytes:
    """One exposition from several workers' (same metric names), each sample labelled with its worker."""
    merged: dict[str, Metric] = {}
    for index in sorted(texts):
        for family in text_string_to_metric_families(texts[index].decode()):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                target.samples.append(sample._replace(labels={**sample.labels, WORKER_LABEL: str(index)}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(merged.values())))
    return generate_latest(registry)


# ---------------------------------------------------------------------------------------------- supervisor


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) the port with SO_REUSEPORT: reserved for the workers, which bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    """A worker's socket on the shared port (uvicorn listens on it)."""
    sock = _reserve(host, port)
    sock.set_inheritable(False)
    return sock


def _worker_main(config: ServingConfig, log_level: str, group: WorkerGroup) -> None:
    from kultivar.serving.cli import configure_logging
    from kultivar.serving.server import run

    configure_logging(log_level, worker=group.index)
    raise SystemExit(run(config, log_level=log_level, group=group))


def run_workers(config: ServingConfig, log_level: str = "info") -> int:
    """Run ``config.workers`` server processes on one port until a signal or until one of them exits."""
    try:
        reserved = _reserve(config.host, config.port)
    except OSError as e:
        log.error("cannot bind %s:%d: %s", config.host, config.port, e)
        return 1
    port = reserved.getsockname()[1]
    run_dir = tempfile.mkdtemp(prefix="kultivar-workers-")
    config = replace(config, port=port)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(config, log_level, WorkerGroup(run_dir, i, config.workers)),
                               name=f"kultivar-worker-{i}", daemon=False) for i in range(config.workers)]
    received: list[int] = []

    def forward(signum: int, _: Any) -> None:
        received.append(signum)
        for w in workers:
            if w.pid is not None and w.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("serving with %d worker processes on port %d", config.workers, port)
    code = 0
    try:
        for w in workers:
            w.start()
        running = {w.sentinel: w for w in workers}
        first_exit: multiprocessing.process.BaseProcess | None = None
        while running:
            for sentinel in wait(list(running), timeout=0.5):
                w = running.pop(sentinel)  # type: ignore[arg-type]
                w.join()
                if first_exit is None and not received:
                    first_exit = w
                    log.error("worker %s exited with %s; stopping the others", w.name, w.exitcode)
                    for other in running.values():
                        if other.pid is not None:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(other.pid, signal.SIGTERM)
                    deadline = time.monotonic() + STOP_TIMEOUT
                    _kill_after(deadline, list(running.values()))
            if reserved.fileno() != -1 and all(os.path.exists(os.path.join(run_dir, f"ready-{i}"))
                                               for i in range(config.workers)):
                reserved.close()  # every worker listens: the reservation is no longer needed
        if first_exit is not None:
            exitcode = first_exit.exitcode or 0
            code = exitcode if exitcode > 0 else 1  # killed by a signal nobody sent: retryable
    finally:
        reserved.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(run_dir, ignore_errors=True)
    if received:
        # As uvicorn does for one process: end the way the signal ends a process (143 for SIGTERM).
        signal.raise_signal(received[0])
    return code


def _kill_after(deadline: float, workers: list[Any]) -> None:
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
        if w.exitcode is None:
            w.kill()
