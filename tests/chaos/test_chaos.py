"""Chaos (issue 18 item 6): short lifecycles while the operator is SIGKILLed at random moments and the API server
restarts once; afterwards every invariant the operator promises must hold.

Dataset -> several TrainingRuns (some created while the operator is down) -> Model versions, on the real
control plane with real workloads (small iris data: each run takes seconds). The chaos is driven by a seeded
RNG (the seed is in the report header and in every failure; KULTIVAR_CHAOS_SEED replays it). The local kubelet
is never killed: it is the harness (it survives the API-server restart, see test_kubelet_outage.py).
"""

from __future__ import annotations

import copy
import random
import signal
import time
from typing import Any

import pytest
from invariants import (
    KINDS,
    TEST_MANAGER,
    duplicate_jobs,
    objects,
    orphans,
    ready_condition,
    spec_writers,
    unsettled,
    version_problems,
)
from kapi import path, sample, wait_reason

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]  # the bounds below, with room for a loaded machine

RUNS = 4  # half created before the chaos, half during it
CHAOS_SECONDS = 100  # kills stop after this, or once every run has settled (after MIN_KILLS)
MIN_KILLS = 3
SETTLE_TIMEOUT = 180  # from the last kill to every object settled: bounded, as the issue asks
VALIDATE_TIMEOUT = 120


def _create(kube, namespace: str, body: dict[str, Any]) -> None:
    status, out = kube.raw("POST", f"{path(body['kind'], namespace)}?fieldManager={TEST_MANAGER}", body)
    assert status == 201, out


def _run(index: int) -> dict[str, Any]:
    run = copy.deepcopy(sample("TrainingRun"))
    run["metadata"]["name"] = f"chaos-{index}"
    run["spec"]["estimator"]["params"]["C"] = [1.0, 0.5, 2.0, 4.0, 0.8, 1.5][index % 6]
    return run


class Chaos:
    """The operator killed with SIGKILL at random moments; the API server restarted once; everything logged."""

    def __init__(self, rng: random.Random, seed: int, operator, control_plane) -> None:
        self.rng = rng
        self.seed = seed
        self.operator = operator
        self.control_plane = control_plane
        self.log: list[str] = []
        self.began = time.monotonic()
        self.kills = 0
        self.crashes = 0  # operator exits the test did not cause (restarted like a pod's container)

    def note(self, what: str) -> None:
        self.log.append(f"t+{time.monotonic() - self.began:5.1f}s {what}")

    def supervise(self) -> None:
        """restartPolicy: Always, as the operator's pod has it."""
        if self.operator.proc is None or self.operator.proc.poll() is not None:
            code = self.operator.proc.returncode if self.operator.proc else None
            self.crashes += 1
            self.note(f"operator exited by itself (code {code}): restarted")
            self.operator.start()

    def kill_operator(self) -> None:
        self.supervise()
        self.operator.kill()
        self.kills += 1
        down = self.rng.uniform(0.0, 2.0)
        self.note(f"operator SIGKILLed (kill {self.kills}), down {down:.1f}s")
        time.sleep(down)
        self.operator.start()

    def restart_apiserver(self) -> None:
        sig = self.rng.choice([signal.SIGTERM, signal.SIGKILL])
        argv = self.control_plane.stop_apiserver(sig)
        down = self.rng.uniform(2.0, 8.0)
        self.note(f"kube-apiserver stopped ({sig.name}), down {down:.1f}s")
        time.sleep(down)
        self.control_plane.start_apiserver(argv)  # from this thread: the server dies with the thread that starts it
        self.note("kube-apiserver ready again")

    def pause(self) -> None:
        time.sleep(self.rng.uniform(1.0, 6.0))


def test_lifecycles_survive_operator_kills_and_an_api_server_restart(
        kube, namespace, operator, kubelet, control_plane, chaos_seed, chaos_summary) -> None:
    chaos_rng = random.Random(chaos_seed)
    chaos = Chaos(chaos_rng, chaos_seed, operator, control_plane)
    model = sample("Model")
    model["spec"]["retention"]["keepVersions"] = RUNS + 2  # retention must not hide a lost or extra version
    _create(kube, namespace, sample("Dataset"))
    _create(kube, namespace, model)
    wait_reason(kube, namespace, "Dataset", "iris", "Validated", timeout=VALIDATE_TIMEOUT)
    for index in range(RUNS // 2):
        _create(kube, namespace, _run(index))

    apiserver_step = chaos_rng.randint(1, 3)
    late_runs_step = chaos_rng.randint(0, 2)
    step = 0
    while time.monotonic() - chaos.began < CHAOS_SECONDS:
        chaos.pause()
        if step == apiserver_step:
            chaos.restart_apiserver()
        else:
            chaos.kill_operator()
        if step == late_runs_step:  # created right after a kill: some while the operator is down or starting
            for index in range(RUNS // 2, RUNS):
                _create(kube, namespace, _run(index))
            chaos.note(f"created the remaining {RUNS - RUNS // 2} TrainingRuns")
        step += 1
        if step > apiserver_step and chaos.kills >= MIN_KILLS and _all_settled(kube, namespace):
            break
    chaos.supervise()
    chaos.note("chaos over")

    _wait_settled(kube, namespace, chaos, operator)
    runs, models = objects(kube, namespace, "TrainingRun"), objects(kube, namespace, "Model")
    datasets = objects(kube, namespace, "Dataset")
    _, jobs = kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")
    _, pods = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods")
    problems = (duplicate_jobs(runs, jobs["items"]) + version_problems(runs, models)
                + orphans([*datasets, *runs, *models], jobs["items"], pods["items"])
                + [p for obj in [*datasets, *runs, *models] for p in spec_writers(obj)])
    registered = [r["metadata"]["name"] for r in runs if (ready_condition(r) or {}).get("reason") == "Registered"]
    if not registered:
        problems.append("no TrainingRun was Registered: the lifecycle under test never completed")
    assert not problems, _report(kube, namespace, chaos, operator, "invariants broken:\n  " + "\n  ".join(problems))
    chaos_summary.append(f"{chaos.kills} operator kills, {chaos.crashes} operator crashes, one API-server restart; "
                         f"{len(registered)}/{RUNS} runs Registered; {chaos.log[-1].strip()}")


def _all_settled(kube, namespace: str) -> bool:
    return not [u for kind in KINDS for obj in objects(kube, namespace, kind) if (u := unsettled(obj))]


def _wait_settled(kube, namespace: str, chaos: Chaos, operator) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        chaos.supervise()
        waiting = [u for kind in KINDS for obj in objects(kube, namespace, kind) if (u := unsettled(obj))]
        if len(objects(kube, namespace, "TrainingRun")) != RUNS:
            waiting.append("not every TrainingRun exists")
        if not waiting:
            chaos.note("every object settled")
            return
        if time.monotonic() >= deadline:
            raise AssertionError(_report(kube, namespace, chaos, operator,
                                         f"not settled {SETTLE_TIMEOUT}s after the chaos:\n  " + "\n  ".join(waiting)))
        time.sleep(1.0)


def _report(kube, namespace: str, chaos: Chaos, operator, headline: str) -> str:
    """Everything needed to understand a failure without rerunning: seed, chaos timeline, objects, events, log."""
    lines = [f"chaos seed {chaos.seed} (replay: KULTIVAR_CHAOS_SEED={chaos.seed}): {headline}", "chaos timeline:"]
    lines += [f"  {entry}" for entry in chaos.log]
    lines.append("objects:")
    for kind in KINDS:
        for obj in objects(kube, namespace, kind):
            status = obj.get("status") or {}
            lines.append(f"  {kind} {obj['metadata']['name']} generation {obj['metadata'].get('generation')} "
                         f"observedGeneration {status.get('observedGeneration')}")
            lines += [f"    {c['type']}={c['status']} {c.get('reason')}: {c.get('message')}"
                      for c in status.get("conditions") or []]
    _, jobs = kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")
    lines.append("jobs:")
    lines += [f"  {j['metadata']['name']} {({k: v for k, v in (j.get('status') or {}).items() if k != 'conditions'})}"
              for j in jobs["items"]]
    _, events = kube.raw("GET", f"/api/v1/namespaces/{namespace}/events")
    lines.append("events (last 40):")
    lines += [f"  {e['involvedObject']['kind']} {e['involvedObject']['name']} {e['type']} {e['reason']}: "
              f"{e.get('message')}" for e in events["items"][-40:]]
    lines.append(f"operator log ({operator.log_path}), last lines:")
    lines += [f"  {line}" for line in operator.log_tail(40).splitlines()]
    return "\n".join(lines)
