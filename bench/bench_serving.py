"""Benchmark: the Kultivar inference server, compiled and not, against its own floor and a plain FastAPI server.

Trains the iris LogisticRegression pipeline through the real training workload (which also compiles it to ONNX
and proves parity) into a temporary store, then starts, each pinned to one core with ``taskset`` (core 0):

* ``kultivar serve`` running the compiled model (onnxruntime; micro-batching, validation, metrics, drift
  accounting on) - "kultivar-onnx";
* ``kultivar serve`` with KULTIVAR_BACKEND=sklearn (the same, predicting with scikit-learn) - "kultivar-sklearn";
* bench/floor_server.py: the same server stack with a no-op V2 endpoint (the floor no server on this stack can
  beat) - "floor";
* bench/baseline_server.py (plain FastAPI + scikit-learn, one predict per request) - "fastapi-baseline";
* ``kultivar serve`` with KULTIVAR_DRIFT_ACCOUNTING=off (for the accounting cost);
* optionally MLServer with adaptive batching (``--mlserver-python`` naming a virtualenv's python that has
  mlserver and skops; MLServer's pins clash with the project's, so it cannot live in the project venv).

The load generator is a small closed-loop asyncio HTTP/1.1 client on the other core (keep-alive connections,
one request in flight per connection, bounded by time and by a request cap). Each point is measured in short
slices interleaved across the servers, so drifting background load on a shared machine hits all of them alike.
For concurrency 1, 8 and 32, with 1-row and with 100-row V2 requests, it prints requests per second and p50/p99
latency per server, then the goal ratios (1-row requests):

* compiled Kultivar >= 0.7 x the floor's requests per second at concurrency 1, 8 and 32;
* compiled Kultivar >= 5 x the plain FastAPI + scikit-learn server at concurrency 1;
* compiled Kultivar's p99 at concurrency 32 <= 2 x the floor's p99;
* (kept from before) scikit-learn Kultivar at concurrency 32 >= 2 x the baseline's throughput at a p99 no worse;
* the server's CPU time per request with drift accounting on / off (goal <= 1.05): both servers are loaded at
  the same time on the shared core (so both meet the same background load), CPU from the scheduler's
  per-thread accounting, median over slices. Judged at concurrency 1, where every request is its own batch:
  the per-batch accounting then has its largest share and both servers otherwise do identical work (at 32 the
  batch sizes each server happens to form move the CPU per request more than the accounting, so that line is
  informational); plus the in-process cost of the accounting per 32-row batch.

Then (or alone, with ``--workers-only``) the compiled model served by one worker process on one core against two
(``KULTIVAR_SERVE_WORKERS=2``) on two cores at concurrency 32 (goal: >= 1.7x the requests per second).

Everything binds 127.0.0.1. ``--quick`` takes about two minutes; the full run about eight.

    python bench/bench_serving.py [--quick] [--mlserver-python /tmp/mlserver-venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CONCURRENCIES = (1, 8, 32)
GOAL_THROUGHPUT_RATIO = 2.0  # scikit-learn Kultivar / baseline at c=32
GOAL_CPU_RATIO = 1.05
GOAL_FLOOR_RATIO = 0.7  # compiled Kultivar / floor, requests per second, at every concurrency
GOAL_BASELINE_C1 = 5.0  # compiled Kultivar / baseline at c=1
GOAL_P99_FLOOR = 2.0  # compiled Kultivar p99 / floor p99 at c=32
GOAL_WORKERS = 1.7  # two worker processes on two cores / one worker on one core, requests per second at c=32
BIG_ROWS = 100
SERVER_CORE = 0
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


# ------------------------------------------------------------------------------------------ load generator


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; responses must carry Content-Length (both servers send it)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionError("the server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self.waiter.set_exception(RuntimeError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:line_end if line_end >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4:total])
        del self.buffer[:total]
        self.waiter.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def http_request(path: str, body: bytes, port: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Point:
    server: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    @property
    def cpu_per_request_us(self) -> float:
        return (self.cpu_seconds or 0.0) / self.requests * 1e6 if self.requests else math.nan


async def closed_loop(port: int, requests: Sequence[bytes], concurrency: int, seconds: float, warmup: float,
                      max_requests: int, pid: int | None = None) -> Point:
    """``concurrency`` connections, each sending the next request when the last answer arrived.

    Only requests sent after the warm-up count; with ``pid``, the server's CPU time over the same window too.
    """
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(_Connection, "127.0.0.1", port)
        conns.append(proto)
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    start_measure = time.perf_counter() + warmup
    stop = start_measure + seconds

    async def worker(conn: _Connection, offset: int) -> None:
        i = offset
        while True:
            t0 = time.perf_counter()
            if t0 >= stop or counts["ok"] + counts["errors"] >= max_requests:
                return
            status, _ = await conn.request(requests[i % len(requests)])
            t1 = time.perf_counter()
            i += 1
            if t0 >= start_measure:
                if status == 200:
                    counts["ok"] += 1
                    latencies.append((t1 - t0) * 1000.0)
                else:
                    counts["errors"] += 1

    cpu: list[float] = []

    async def cpu_at_window_start() -> None:
        await asyncio.sleep(max(0.0, start_measure - time.perf_counter()))
        if pid:
            cpu.append(process_cpu(pid))

    tasks = [asyncio.create_task(worker(c, k * 7)) for k, c in enumerate(conns)]
    await asyncio.gather(cpu_at_window_start(), *tasks)
    elapsed = time.perf_counter() - start_measure  # until the last counted answer arrived
    if pid:
        cpu.append(process_cpu(pid))
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return Point("", concurrency, counts["ok"], counts["errors"], max(elapsed, 1e-9), latencies,
                 cpu[1] - cpu[0] if pid else None)


def run_load(port: int, path: str, bodies: Sequence[bytes], concurrency: int, seconds: float, warmup: float,
             max_requests: int, pid: int | None, name: str) -> Point:
    raw = [http_request(path, b, port) for b in bodies]
    point: Point = _run(closed_loop(port, raw, concurrency, seconds, warmup, max_requests, pid))
    point.server = name
    return point


def run_together(servers: Sequence[Server], bodies: Sequence[bytes], concurrency: int, seconds: float,
                 warmup: float, max_requests: int) -> list[Point]:
    """Load every server at once, each with its own closed loop, measuring each one's CPU over the same window.

    Used for the drift-accounting CPU ratio: sharing the core at the same moment, both servers meet the same
    background load, frequency and cache conditions, which back-to-back runs on a shared VM do not.
    """
    async def together() -> list[Point]:
        return list(await asyncio.gather(*(
            closed_loop(s.port, [http_request(s.infer_path, b, s.port) for b in bodies], concurrency, seconds,
                        warmup, max_requests, s.pid) for s in servers)))

    points: list[Point] = _run(together())
    for s, point in zip(servers, points, strict=True):
        point.server = s.name
    return points


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def process_cpu(pid: int) -> float:
    """CPU seconds a process (all its threads) has run, in nanosecond resolution from the scheduler's
    /proc/<pid>/task/*/schedstat; /proc/<pid>/stat's 10 ms ticks where schedstat is missing."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            # A thread may end between listing and reading: it then simply no longer counts.
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/schedstat",
                                                              encoding="ascii") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (FileNotFoundError, PermissionError):
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ALLOWED_CORES = sorted(os.sched_getaffinity(0))  # before main() pins this process to the client core


def pin_prefix(cores: Sequence[int] = (SERVER_CORE,)) -> list[str]:
    if shutil.which("taskset") and set(cores) <= set(ALLOWED_CORES):
        return ["taskset", "-c", ",".join(str(c) for c in cores)]
    print(f"warning: taskset or cores {list(cores)} not available; servers are not pinned", file=sys.stderr)
    return []


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    infer_path: str

    @property
    def pid(self) -> int:
        return self.process.pid


def start(name: str, cmd: list[str], env: dict[str, str], port: int, infer_path: str, workdir: Path,
          ready_path: str = "/v2/health/ready", timeout: float = 120.0,
          cores: Sequence[int] = (SERVER_CORE,)) -> Server:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*pin_prefix(cores), *cmd], env={**os.environ, **THREAD_ENV, **env}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(name, port, proc, log, infer_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"{name} did not become ready within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for s in servers:
            stop(s)


# ---------------------------------------------------------------------------------------------- the model


def train_model(store_dir: Path) -> dict[str, Any]:
    from kultivar.api.dataset import DatasetSpec
    from kultivar.api.trainingrun import TrainingRunSpec
    from kultivar.workloads.storage import ArtifactStore
    from kultivar.workloads.training import run_training
    from kultivar.workloads.validation import run_validation

    store = ArtifactStore(str(store_dir))
    spec = DatasetSpec.model_validate({"source": {"uri": "sklearn://iris"},
                                       "schema": {"target": "species", "task": "classification"}})
    data = run_validation(spec, "bench", "iris", store)
    assert data["ok"], data
    run_spec = TrainingRunSpec.model_validate({
        "datasetRef": {"name": "iris"}, "modelRef": {"name": "iris"},
        "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {}},
    })
    result = run_training(run_spec, data["snapshotUri"], data["digest"], data["profileUri"], "classification",
                          "species", data["features"], "bench", "iris", uuid.uuid4().hex, store)
    assert result["ok"], result
    return {"uri": result["artifact"]["uri"], "digest": result["artifact"]["digest"],
            "manifest": json.loads(store.read_bytes(result["manifestUri"]))}


def request_bodies(n_features: int, count: int = 64, rows_per_request: int = 1) -> list[bytes]:
    from sklearn.datasets import load_iris

    x = load_iris().data
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(count):
        rows = x[rng.choice(len(x), rows_per_request)]
        assert rows.shape[1] == n_features
        bodies.append(json.dumps({"inputs": [{"name": "input-0", "shape": [rows_per_request, n_features],
                                              "datatype": "FP64", "data": rows.ravel().tolist()}]}).encode())
    return bodies


# ------------------------------------------------------------------------------------------- measurements


def accounting_cost_us(manifest: dict[str, Any], profile_uri: str, batch: int = 32, reps: int = 500,
                       repeats: int = 9) -> tuple[float, float]:
    """In-process cost of one 32-row batch's metrics with drift accounting (feature buckets) off and on.

    Best of ``repeats`` alternating timings, so background load on a shared machine inflates neither side.
    """
    from kultivar.domain.profile import Profile
    from kultivar.serving.monitoring import ServingMetrics
    from kultivar.serving.payload import FeatureSpec, Rows

    profile = Profile.model_validate_json(Path(profile_uri).read_bytes())
    features = [FeatureSpec(f["name"], f["type"]) for f in manifest["features"]]
    rows = Rows(tuple(np.random.default_rng(1).normal(5, 2, batch) for _ in features), batch)
    predictions = np.zeros(batch, dtype=np.int64)
    best = {False: math.inf, True: math.inf}
    metrics = {}
    for drift in (False, True):
        metrics[drift] = ServingMetrics("m", "1", "sha256:x")
        metrics[drift].bind_model(features, "classification", [0, 1, 2], profile, drift)
    for _ in range(repeats):
        for drift in (False, True):
            t = time.perf_counter()
            for _ in range(reps):
                metrics[drift].batch(rows, predictions)
            best[drift] = min(best[drift], (time.perf_counter() - t) / reps * 1e6)
    return best[False], best[True]


def batch_stats(port: int) -> tuple[float, float]:
    """(predict calls, rows predicted) so far, from a Kultivar server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("kultivar_inference_batch_rows_count", "kultivar_inference_batch_rows_sum")):
            name, value = line.split("{", 1)[0], line.rsplit(" ", 1)[1]
            values[name] = float(value)
    return values["kultivar_inference_batch_rows_count"], values["kultivar_inference_batch_rows_sum"]


def merge(points: Sequence[Point]) -> Point:
    first = points[0]
    return Point(first.server, first.concurrency, sum(p.requests for p in points), sum(p.errors for p in points),
                 sum(p.seconds for p in points), [x for p in points for x in p.latencies_ms],
                 sum(p.cpu_seconds or 0.0 for p in points) if first.cpu_seconds is not None else None)


def fmt_row(p: Point) -> str:
    err = f"  ({p.errors} errors)" if p.errors else ""
    return (f"  {p.server:<18} c={p.concurrency:<3} {p.rps:>8.0f} req/s   p50 {p.pct(50):7.2f} ms   "
            f"p99 {p.pct(99):7.2f} ms   n={p.requests}{err}")


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


@dataclass(frozen=True)
class Plan:
    slices: int  # interleaved measurement slices per server and concurrency
    slice_seconds: float
    warmup: float
    cpu_pairs: int  # drift on/off pairs for the CPU ratio
    cpu_seconds: float = 2.0  # per slice of a pair
    max_requests: int = 2_000_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kultivar serving benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute) instead of ~4 minutes")
    parser.add_argument("--mlserver-python", help="python of a virtualenv with mlserver + skops, to compare too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, model)")
    parser.add_argument("--workers-only", action="store_true",
                        help="only the 2-worker vs 1-worker comparison (KULTIVAR_SERVE_WORKERS) at concurrency 32")
    args = parser.parse_args(argv)
    plan = Plan(3, 0.8, 0.2, 4, 1.5) if args.quick else Plan(6, 2.0, 0.4, 8, 3.0)

    client_cores = [c for c in ALLOWED_CORES if c != SERVER_CORE] or ALLOWED_CORES
    os.sched_setaffinity(0, {client_cores[0]})
    print(f"servers pinned to core {SERVER_CORE}, load generator on core {client_cores[0]}; each point is "
          f"{plan.slices} slices of {plan.slice_seconds:g}s interleaved across the servers (after {plan.warmup:g}s "
          f"warm-up each); load average at start {loadavg()}")

    workdir = Path(tempfile.mkdtemp(prefix="kultivar-bench-serving-"))
    try:
        return _bench(args, workdir, plan)
    finally:
        print(f"load average at end {loadavg()} (a busy machine makes every number noisy)")
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def measure(servers: Sequence[Server], bodies: Sequence[bytes], concurrency: int, plan: Plan,
            cpu: bool = False) -> list[list[Point]]:
    """Per server, one point per slice; slices rotate the server order so slow drifts in background load hit all
    servers alike."""
    out: list[list[Point]] = [[] for _ in servers]
    for r in range(plan.slices):
        order = list(range(len(servers)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            s = servers[i]
            out[i].append(run_load(s.port, s.infer_path, bodies, concurrency, plan.slice_seconds, plan.warmup,
                                   plan.max_requests, s.pid if cpu else None, s.name))
    return out


def compare_workers(serve: list[str], serve_env: dict[str, str], bodies: Sequence[bytes], workdir: Path,
                    plan: Plan) -> None:
    """The compiled model served by one worker process pinned to one core, and by two (KULTIVAR_SERVE_WORKERS=2)
    pinned to two cores, at concurrency 32. The load generator stays on its own core, which on a 2-core machine
    is one of the two workers' cores: wrk when installed (it takes little of that core), else the Python client
    (which takes about half of it, so the ratio is a lower bound)."""
    cores = ALLOWED_CORES[:2]
    print(f"\none worker process vs two sharing the port (compiled model, 1-row requests, concurrency 32; one "
          f"worker on core {cores[0]}, two on cores {cores})")
    if len(cores) < 2:
        print("  skipped: fewer than two cores available")
        return
    servers: list[Server] = []
    with running(servers):
        for workers, pinned in ((1, cores[:1]), (2, cores)):
            port = free_port()
            servers.append(start(f"kultivar-{workers}-worker{'s' if workers > 1 else ''}", serve,
                                 {**serve_env, "KULTIVAR_HTTP_PORT": str(port), "KULTIVAR_BACKEND": "onnx",
                                  "KULTIVAR_SERVE_WORKERS": str(workers)}, port, "/v2/models/iris/infer", workdir,
                                 cores=pinned))
        run_together(servers, bodies, 32, 1.0, 0.0, plan.max_requests)  # warm both up alike
        if shutil.which("wrk"):
            # The Python load generator costs about as much per request as a worker does, so on two cores it
            # holds two workers back: wrk (C, a few microseconds per request) measures the servers instead.
            rates = wrk_rates(servers, bodies[0], workdir, plan)
            for server, rate in zip(servers, rates, strict=True):
                print(f"  {server.name:<18} c=32 {rate:>9.0f} req/s   (wrk, {plan.slices} slices of "
                      f"{max(1.0, plan.slice_seconds):g}s)")
            one_rps, two_rps = rates
        else:
            print("  (wrk not installed: `apt-get install wrk` for a load generator that does not compete with the "
                  "second worker; the Python one does, so the ratio below is a lower bound)")
            one, two = (merge(points) for points in measure(servers, bodies, 32, plan))
            print(fmt_row(one))
            print(fmt_row(two))
            one_rps, two_rps = one.rps, two.rps
    ratio = two_rps / one_rps if one_rps else math.nan
    print(f"  c=32 two workers / one worker requests per second {ratio:.2f}x  (goal >= {GOAL_WORKERS:g}: "
          f"{'met' if ratio >= GOAL_WORKERS else 'NOT met'}; load average now {loadavg()})")


def wrk_rates(servers: Sequence[Server], body: bytes, workdir: Path, plan: Plan) -> list[float]:
    """Requests per second of each server under wrk (one thread, 32 connections, on this process's core), over
    ``plan.slices`` slices that rotate the server order like :func:`measure`."""
    script = workdir / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    core = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    seconds = max(1.0, plan.slice_seconds)  # wrk counts whole seconds
    done, took = [0] * len(servers), [0.0] * len(servers)
    for r in range(plan.slices):
        order = list(range(len(servers)))
        for i in order[r % len(order):] + order[:r % len(order)]:
            s = servers[i]
            out = subprocess.run(["taskset", "-c", core, "wrk", "-t1", "-c32", f"-d{seconds:g}s", "-s", str(script),
                                  f"http://127.0.0.1:{s.port}{s.infer_path}"],
                                 capture_output=True, text=True, check=True).stdout
            if "Non-2xx" in out or "Socket errors" in out:
                raise SystemExit(f"wrk saw failed requests against {s.name}:\n{out}")
            total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
            if total is None:
                raise SystemExit(f"cannot read wrk's output:\n{out}")
            done[i] += int(total.group(1))
            took[i] += float(total.group(2)) / (1000.0 if total.group(3) == "ms" else 1.0)
    return [n / t if t else math.nan for n, t in zip(done, took, strict=True)]


def _bench(args: argparse.Namespace, workdir: Path, plan: Plan) -> int:
    model = train_model(workdir / "store")
    manifest = model["manifest"]
    names = [f["name"] for f in manifest["features"]]
    bodies = request_bodies(len(names))
    py = sys.executable
    serve_env = {"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": model["uri"],
                 "KULTIVAR_MODEL_DIGEST": model["digest"], "KULTIVAR_HTTP_HOST": "127.0.0.1",
                 "PYTHONPATH": str(REPO_ROOT / "operator")}
    serve = [py, "-m", "kultivar.serving.cli", "serve", "--log-level", "warning"]
    if args.workers_only:
        compare_workers(serve, serve_env, bodies, workdir, plan)
        return 0
    infer = "/v2/models/iris/infer"
    compiled = manifest.get("compiled") or {}
    if compiled.get("compiled") is not True:
        print(f"warning: the model was not compiled ({compiled.get('reason')}); kultivar-onnx will refuse to start",
              file=sys.stderr)
    servers: list[Server] = []
    with running(servers):
        kport, sport, fport, bport, oport = (free_port() for _ in range(5))
        servers.append(start("fastapi-baseline", [py, str(BENCH_DIR / "baseline_server.py"), "--model-uri",
                                                  model["uri"], "--digest", model["digest"], "--port", str(bport)],
                             {"PYTHONPATH": str(REPO_ROOT / "operator")}, bport, infer, workdir))
        servers.append(start("kultivar-onnx", serve, {**serve_env, "KULTIVAR_HTTP_PORT": str(kport),
                                                      "KULTIVAR_BACKEND": "onnx"}, kport, infer, workdir))
        servers.append(start("kultivar-sklearn", serve, {**serve_env, "KULTIVAR_HTTP_PORT": str(sport),
                                                         "KULTIVAR_BACKEND": "sklearn"}, sport, infer, workdir))
        servers.append(start("floor", [py, str(BENCH_DIR / "floor_server.py")],
                             {**serve_env, "KULTIVAR_HTTP_PORT": str(fport)}, fport, "/v2/models/noop/infer",
                             workdir))
        if args.mlserver_python:
            servers.append(start_mlserver(args.mlserver_python, model, workdir))
        drift_off = start("kultivar-drift-off", serve, {**serve_env, "KULTIVAR_HTTP_PORT": str(oport),
                                                        "KULTIVAR_DRIFT_ACCOUNTING": "off",
                                                        "KULTIVAR_BACKEND": "onnx"}, oport, infer, workdir)
        servers.append(drift_off)
        compared = servers[:-1]

        results: dict[tuple[str, int], Point] = {}
        big: dict[tuple[str, int], Point] = {}
        for rows, table, label in ((1, results, "1-row"), (BIG_ROWS, big, f"{BIG_ROWS}-row")):
            print(f"\nthroughput and latency, {label} V2 requests (closed loop)"
                  + (" - the floor answers without reading the rows" if rows > 1 else ""))
            bodies_here = bodies if rows == 1 else request_bodies(len(names), 16, rows)
            for c in CONCURRENCIES:
                for server, points in zip(compared, measure(compared, bodies_here, c, plan), strict=True):
                    table[(server.name, c)] = merge(points)
                    line = fmt_row(table[(server.name, c)])
                    if rows > 1:
                        line += f"   {table[(server.name, c)].rps * rows:>9.0f} rows/s"
                    print(line, flush=True)
        print_goals(results, args.mlserver_python is not None)

        kultivar = servers[1]
        print(f"\nserver CPU per request, drift accounting on vs off (both servers loaded at once on the shared "
              f"core, {plan.cpu_pairs} slices of {plan.cpu_seconds:g}s; CPU from /proc/<pid>/task/*/schedstat)")
        pair = [kultivar, drift_off]
        for c in (32, 1):  # the drift-off server has been idle so far: warm both up the same way first
            run_together(pair, bodies, c, 1.0, 0.0, plan.max_requests)
        off_per_request = {}
        for c in (1, 32):
            batches_before = [batch_stats(s.port) for s in pair]
            # Which server gets each round's request first alternates between slices: the second one tends to run
            # on caches the first has just evicted.
            slices = [run_together(pair[::-1] if i % 2 else pair, bodies, c, plan.cpu_seconds, plan.warmup,
                                   plan.max_requests)[::-1 if i % 2 else 1] for i in range(plan.cpu_pairs)]
            mean_batch = [(rows - rows0) / max(n - n0, 1)
                          for (n0, rows0), (n, rows) in zip(batches_before, (batch_stats(s.port) for s in pair),
                                                            strict=True)]
            ratios = [on.cpu_per_request_us / off.cpu_per_request_us for on, off in slices]
            on, off = merge([p[0] for p in slices]), merge([p[1] for p in slices])
            off_per_request[c] = off.cpu_per_request_us
            ratio = statistics.median(ratios)
            print(f"  c={c:<2} on {on.cpu_per_request_us:7.1f} us/request, off {off.cpu_per_request_us:7.1f} "
                  f"us/request (mean batch {mean_batch[0]:.1f} vs {mean_batch[1]:.1f} rows); per-slice ratios "
                  f"{', '.join(f'{r:.3f}' for r in ratios)}")
            if c == 1:
                # The decisive case: every request is its own batch, so the per-batch accounting is spread over one
                # row (the largest share it can have) and both servers do exactly the same work otherwise.
                print(f"       CPU ratio on/off (median of slices) {ratio:.3f}  (goal <= {GOAL_CPU_RATIO:g}: "
                      f"{'met' if ratio <= GOAL_CPU_RATIO else 'NOT met'}; worst case: one batch per request)")
            else:
                # Under concurrency the CPU per request follows the batch sizes each server happened to form, which
                # move it by more than the accounting does: shown for information, judged by the lines around it.
                print(f"       CPU ratio on/off (median of slices) {ratio:.3f}  (informational: batch sizes differ "
                      "between the servers from slice to slice)")
        off_us, on_us = accounting_cost_us(manifest, manifest["profileUri"])
        extra = on_us - off_us
        print(f"  in-process: metrics per 32-row batch {off_us:.1f} us without and {on_us:.1f} us with drift "
              f"accounting (+{extra:.1f} us per batch): {extra / 32 / off_per_request[32] * 100:.2f}% of the CPU per "
              f"request at c=32 (32-row batches), {extra / off_per_request[1] * 100:.2f}% at c=1 (1-row batches)")
    compare_workers(serve, serve_env, bodies, workdir, plan)
    return 0


def print_goals(results: dict[tuple[str, int], Point], mlserver: bool) -> None:
    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"\ngoals, 1-row requests (load average now {loadavg()})")
    for c in CONCURRENCIES:
        k, f = results[("kultivar-onnx", c)], results[("floor", c)]
        r = ratio(k.rps, f.rps)
        print(f"  c={c:<2} compiled / floor requests per second {r:.2f}x  (goal >= {GOAL_FLOOR_RATIO:g}: "
              f"{verdict(r >= GOAL_FLOOR_RATIO)})")
    k1, b1 = results[("kultivar-onnx", 1)], results[("fastapi-baseline", 1)]
    r = ratio(k1.rps, b1.rps)
    print(f"  c=1  compiled / plain FastAPI + scikit-learn {r:.2f}x  (goal >= {GOAL_BASELINE_C1:g}: "
          f"{verdict(r >= GOAL_BASELINE_C1)})")
    k32, f32 = results[("kultivar-onnx", 32)], results[("floor", 32)]
    r = ratio(k32.pct(99), f32.pct(99))
    print(f"  c=32 compiled p99 / floor p99 {r:.2f}  (goal <= {GOAL_P99_FLOOR:g}: {verdict(r <= GOAL_P99_FLOOR)})")
    for c in CONCURRENCIES:
        k, s, b = results[("kultivar-onnx", c)], results[("kultivar-sklearn", c)], results[("fastapi-baseline", c)]
        print(f"  (c={c}: compiled / scikit-learn Kultivar {ratio(k.rps, s.rps):.2f}x; scikit-learn Kultivar / "
              f"baseline throughput {ratio(s.rps, b.rps):.2f}x, p99 {ratio(s.pct(99), b.pct(99)):.2f})")
    s32, b32 = results[("kultivar-sklearn", 32)], results[("fastapi-baseline", 32)]
    tput = ratio(s32.rps, b32.rps)
    print(f"  c=32 scikit-learn Kultivar / baseline throughput {tput:.2f}x (goal >= {GOAL_THROUGHPUT_RATIO:g}: "
          f"{verdict(tput >= GOAL_THROUGHPUT_RATIO)}) at p99 ratio {ratio(s32.pct(99), b32.pct(99)):.3f} (goal <= 1: "
          f"{verdict(s32.pct(99) <= b32.pct(99))})")
    if mlserver:
        for c in CONCURRENCIES:
            mc, bc, kc = results[("mlserver", c)], results[("fastapi-baseline", c)], results[("kultivar-onnx", c)]
            print(f"  MLServer c={c}: vs baseline throughput {mc.rps / bc.rps:.2f}x, p99 "
                  f"{mc.pct(99) / bc.pct(99):.3f}; Kultivar vs MLServer throughput {kc.rps / mc.rps:.2f}x, p99 "
                  f"{kc.pct(99) / mc.pct(99):.3f}")


def start_mlserver(python: str, model: dict[str, Any], workdir: Path) -> Server:
    repo = workdir / "mlserver"
    (repo / "iris").mkdir(parents=True)
    http, grpc, metrics = free_port(), free_port(), free_port()
    (repo / "settings.json").write_text(json.dumps({
        "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1",
        # In-process inference: the docs warn that the worker pool's IPC dominates for small models.
        "parallel_workers": 0, "debug": False,
    }))
    (repo / "iris" / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_runtime.KultivarSkopsModel",
        "max_batch_size": 32, "max_batch_time": 0.002,
        "parameters": {"uri": model["uri"], "version": "1", "extra": {"digest": model["digest"]}},
    }))
    env = {"PYTHONPATH": str(BENCH_DIR)}
    mlserver = str(Path(python).parent / "mlserver")
    return start("mlserver", [mlserver, "start", str(repo)], env, http,
                 "/v2/models/iris/infer", workdir)


if __name__ == "__main__":
    sys.exit(main())
