"""Benchmark: what response ids and the feedback endpoint cost (issue #16's performance clause).

Trains the iris LogisticRegression pipeline through the real training workload (as bench_serving.py does, whose
helpers this reuses: server start-up, core pinning, the closed-loop load generator, per-thread CPU accounting),
then measures two things.

1. **The id path on vs off, CPU per inference request at concurrency 32** (goal: on / off <= 1.05). The server
   has no setting that turns ids off: every answer carries them, and a switch added only for this benchmark
   would be accepted and otherwise pointless. So "off" is bench/no_ids_server.py: the same ``kultivar serve``
   process with, in that process only, the id generation, the ``id``/``model_version`` response fields, the two
   id/version headers and the shadow copy (the only feedback bookkeeping on the inference path; the server keeps
   no record of its answers, the feedback carries the prediction) replaced by no-ops. Both servers run the
   compiled model pinned to the same core and are loaded at the same moment (``run_together``, as the drift
   accounting ratio in bench_serving.py), each with its own 32 connections of 1-row V2 requests, so both meet
   the same background load; which one is sent to first alternates between slices. CPU comes from
   /proc/<pid>/task/*/schedstat; the verdict is the median of the per-slice ratios. At concurrency 32 the batch
   sizes each server happens to form move the CPU per request too, so the mean batch sizes are printed beside
   it, and an in-process line times the id path's own work (an id, the answer with vs without its id and
   version fields) as a share of the measured CPU per request: a lower bound for the process ratio, which also
   carries uvicorn's per-header checks and writes for the two extra headers.

2. **One POST of 10,000 feedback items** (classification labels, each with an id, a version, a prediction and
   an actual) to ``/v2/models/iris/feedback`` on a server pinned to one core, the client on the other core:
   the wall time from sending to the answer, median of several posts (goal < 1 s), and the server's CPU per
   item, also put beside the inference CPU per request (the feedback's share if every prediction gets one label
   back).

Everything binds 127.0.0.1; about a minute with ``--quick``, three without. The machine may be shared: the load
average is printed with the numbers.

    python bench/bench_feedback.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_serving import (
    ALLOWED_CORES,
    BENCH_DIR,
    REPO_ROOT,
    SERVER_CORE,
    Server,
    batch_stats,
    free_port,
    loadavg,
    merge,
    process_cpu,
    request_bodies,
    run_together,
    running,
    start,
    train_model,
)

GOAL_ID_CPU_RATIO = 1.05  # CPU per inference request, ids on / off, at concurrency 32
GOAL_FEEDBACK_SECONDS = 1.0  # one POST of FEEDBACK_ITEMS items, on one core
FEEDBACK_ITEMS = 10_000
CONCURRENCY = 32


@dataclass(frozen=True)
class Plan:
    slices: int  # on/off pairs for the CPU ratio
    slice_seconds: float
    warmup: float
    posts: int  # 10,000-item feedback posts
    max_requests: int = 2_000_000


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def feedback_body(classes: Sequence[Any], items: int = FEEDBACK_ITEMS) -> bytes:
    """A batch as a client would send it: each item with the response's id, version, prediction and the label
    (one in ten wrong, so several (predicted, actual) pairs are counted)."""
    out = []
    for i in range(items):
        predicted = classes[i % len(classes)]
        actual = predicted if i % 10 else classes[(i + 1) % len(classes)]
        out.append({"id": f"5f0c2a9be1d7-{i:x}", "version": 1, "prediction": predicted, "actual": actual})
    return json.dumps({"items": out}).encode()


def post(port: int, path: str, body: bytes) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as r:
        answer = json.loads(r.read())
    return time.perf_counter() - started, answer


def model_classes(port: int) -> list[Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/iris", timeout=10) as r:
        return list(json.loads(r.read())["parameters"]["classes"])


def id_path_cost_us(reps: int = 20_000, repeats: int = 7) -> float:
    """In-process: an id plus the answer with its id and version fields, minus the answer without them, per
    request (best of ``repeats`` alternating timings, so background load inflates neither side)."""
    import itertools
    import secrets

    import numpy as np
    import orjson

    labels = np.zeros(1, dtype=np.int64)
    prefix, ids = secrets.token_hex(6), itertools.count(1)
    with_head = b'{"model_name":"iris","model_version":"1","id":'
    without_head = b'{"model_name":"iris"'

    def tail() -> bytes:
        return b''.join((b',"outputs":[{"name":"predict","shape":[', str(labels.shape[0]).encode(),
                         b'],"datatype":"INT64","data":', orjson.dumps(labels.tolist()), b"}]}"))

    def on() -> bytes:
        response_id = f"{prefix}-{next(ids):x}"
        body = b"".join((with_head, orjson.dumps(response_id), tail()))
        headers = [(b"kultivar-request-id", response_id.encode("latin-1")), (b"kultivar-model-version", b"1")]
        return body + headers[0][1]

    def off() -> bytes:
        return b"".join((without_head, tail()))

    best = {on: math.inf, off: math.inf}
    for _ in range(repeats):
        for fn in (on, off):
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            best[fn] = min(best[fn], (time.perf_counter() - t) / reps * 1e6)
    return best[on] - best[off]


def check_answers(on: Server, off: Server, body: bytes) -> None:
    """The two servers differ only by the id path: same prediction, id and version present only in one."""
    answers = []
    for server in (on, off):
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}{server.infer_path}", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            answers.append((json.loads(r.read()), r.headers.get("Kultivar-Request-Id")))
    (with_ids, on_header), (without, off_header) = answers
    assert with_ids["id"] and with_ids["model_version"] == "1" and on_header == with_ids["id"], with_ids
    assert "id" not in without and "model_version" not in without and off_header is None, without
    assert with_ids["outputs"] == without["outputs"], (with_ids, without)


def compare_ids(on: Server, off: Server, bodies: Sequence[bytes], plan: Plan) -> float:
    """Median per-slice CPU per request ratio, ids on / off, at concurrency 32; returns the on server's CPU per
    request (microseconds)."""
    pair = [on, off]
    check_answers(on, off, bodies[0])
    print(f"\nserver CPU per inference request, ids on vs off (compiled model, 1-row V2 requests, concurrency "
          f"{CONCURRENCY} each; both loaded at once on core {SERVER_CORE}, {plan.slices} slices of "
          f"{plan.slice_seconds:g}s; CPU from /proc/<pid>/task/*/schedstat)")
    run_together(pair, bodies, CONCURRENCY, 1.0, 0.0, plan.max_requests)  # warm both up alike
    before = [batch_stats(s.port) for s in pair]
    # Which server gets each round's request first alternates: the second tends to run on caches the first evicted.
    slices = [run_together(pair[::-1] if i % 2 else pair, bodies, CONCURRENCY, plan.slice_seconds, plan.warmup,
                           plan.max_requests)[::-1 if i % 2 else 1] for i in range(plan.slices)]
    mean_batch = [(rows - rows0) / max(n - n0, 1)
                  for (n0, rows0), (n, rows) in zip(before, (batch_stats(s.port) for s in pair), strict=True)]
    ratios = [a.cpu_per_request_us / b.cpu_per_request_us for a, b in slices]
    a, b = merge([p[0] for p in slices]), merge([p[1] for p in slices])
    errors = a.errors + b.errors
    print(f"  ids on  {a.cpu_per_request_us:7.1f} us/request, {a.rps:6.0f} req/s (mean batch {mean_batch[0]:.1f} rows)")
    print(f"  ids off {b.cpu_per_request_us:7.1f} us/request, {b.rps:6.0f} req/s (mean batch {mean_batch[1]:.1f} rows)"
          + (f"  ({errors} errors)" if errors else ""))
    print(f"  per-slice ratios {', '.join(f'{r:.3f}' for r in ratios)}")
    ratio = statistics.median(ratios)
    print(f"  c={CONCURRENCY} CPU per request ids on / off (median of slices) {ratio:.3f}  (goal <= "
          f"{GOAL_ID_CPU_RATIO:g}: {verdict(ratio <= GOAL_ID_CPU_RATIO)}; load average now {loadavg()})")
    cost = id_path_cost_us()
    print(f"  in-process: making an id and writing the answer's id/version fields and header values cost {cost:.2f} "
          f"us per request, {cost / b.cpu_per_request_us * 100:.2f}% of the ids-off CPU per request (a lower bound: "
          "uvicorn's checks and writes of the two extra headers and the longer body are not in it)")
    return a.cpu_per_request_us


def bench_feedback_post(server: Server, plan: Plan, inference_us: float) -> None:
    path = "/v2/models/iris/feedback"
    body = feedback_body(model_classes(server.port))
    print(f"\none POST of {FEEDBACK_ITEMS:,} feedback items ({len(body) / 1e6:.2f} MB) to {path}, server on core "
          f"{SERVER_CORE}, {plan.posts} posts after one warm-up")
    post(server.port, path, body)
    walls, cpus = [], []
    for _ in range(plan.posts):
        cpu0 = process_cpu(server.pid)
        wall, answer = post(server.port, path, body)
        cpus.append(process_cpu(server.pid) - cpu0)
        assert answer.get("counted") == FEEDBACK_ITEMS, answer
        walls.append(wall)
    wall = statistics.median(walls)
    per_item_us = statistics.median(cpus) / FEEDBACK_ITEMS * 1e6
    print(f"  wall time per post: median {wall * 1000:.0f} ms (min {min(walls) * 1000:.0f}, max "
          f"{max(walls) * 1000:.0f}); server CPU {per_item_us:.2f} us per item")
    print(f"  10,000 items in one request {wall:.3f} s  (goal < {GOAL_FEEDBACK_SECONDS:g} s: "
          f"{verdict(wall < GOAL_FEEDBACK_SECONDS)}; load average now {loadavg()})")
    print(f"  (one label back per prediction would add {per_item_us / inference_us * 100:.1f}% to the "
          f"{inference_us:.0f} us of CPU per inference request at c={CONCURRENCY})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kultivar response-id and feedback benchmark (see the docstring).")
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, model)")
    args = parser.parse_args(argv)
    plan = Plan(6, 1.5, 0.2, 5) if args.quick else Plan(12, 3.0, 0.4, 9)

    client_cores = [c for c in ALLOWED_CORES if c != SERVER_CORE] or ALLOWED_CORES
    os.sched_setaffinity(0, {client_cores[0]})
    print(f"servers pinned to core {SERVER_CORE}, client on core {client_cores[0]}; load average at start "
          f"{loadavg()}")
    workdir = Path(tempfile.mkdtemp(prefix="kultivar-bench-feedback-"))
    try:
        model = train_model(workdir / "store")
        bodies = request_bodies(len(model["manifest"]["features"]))
        py = sys.executable
        env = {"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": model["uri"],
               "KULTIVAR_MODEL_DIGEST": model["digest"], "KULTIVAR_HTTP_HOST": "127.0.0.1",
               "KULTIVAR_BACKEND": "onnx", "PYTHONPATH": str(REPO_ROOT / "operator")}
        infer = "/v2/models/iris/infer"
        servers: list[Server] = []
        with running(servers):
            on_port, off_port = free_port(), free_port()
            servers.append(start("kultivar", [py, "-m", "kultivar.serving.cli", "serve", "--log-level", "warning"],
                                 {**env, "KULTIVAR_HTTP_PORT": str(on_port)}, on_port, infer, workdir))
            servers.append(start("kultivar-no-ids", [py, str(BENCH_DIR / "no_ids_server.py")],
                                 {**env, "KULTIVAR_HTTP_PORT": str(off_port)}, off_port, infer, workdir))
            inference_us = compare_ids(servers[0], servers[1], bodies, plan)
            bench_feedback_post(servers[0], plan, inference_us)
        return 0
    finally:
        print(f"load average at end {loadavg()} (a busy machine makes every number noisy)")
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
