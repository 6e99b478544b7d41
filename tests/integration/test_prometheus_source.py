"""metricsSource: prometheus on the real control plane: a canary analysed from a real Prometheus server.

A real Prometheus (Debian's `prometheus`, which .ci/run installs) runs in the test's own directory on a free
port and scrapes the real serving processes every second. It finds them the way kubernetes_sd would: a
thread writes the namespace's serving pods (their pod IPs, which the local kubelet gives each server as its
own 127.0.0.N address) into a file_sd target file. The operator never scrapes a pod in this mode: it asks
Prometheus for increase() over each canary step and each drift window.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from kapi import BETTER_C, assert_promoted, create, events_for, get, sample, wait_reason, weak_first_run
from test_serving_path import IRIS_ROW, TIMEOUT, Traffic, _serving_pods, infer

from helpers import require_tool, wait_for
from kultivar.domain import promql
from kultivar.domain.metrics import parse
from kultivar.k8s import prometheus

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture(autouse=True)
def _prometheus_installed() -> None:
    require_tool(PROMETHEUS, "Debian's prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """A Prometheus process scraping the serving pods of one namespace every second."""

    def __init__(self, kube, namespace: str, workdir: Path) -> None:
        self.kube, self.namespace = kube, namespace
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.targets = workdir / "targets.json"
        self.targets.write_text("[]")
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "kultivar-model-servers", "metrics_path": "/metrics",
                                "file_sd_configs": [{"files": [str(self.targets)], "refresh_interval": "1s"}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--storage.tsdb.retention.time=1h",
             "--log.level=warn"], stdout=self._log, stderr=subprocess.STDOUT)
        self._stop = threading.Event()
        self._discovery = threading.Thread(target=self._discover, daemon=True)

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self.log_path.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _discover(self) -> None:
        """Like kubernetes_sd with a PodMonitor: every serving pod with an IP is a target, labelled by its pod."""
        while not self._stop.wait(0.3):
            _, out = self.kube.raw("GET", f"/api/v1/namespaces/{self.namespace}/pods"
                                          "?labelSelector=kultivar.io/deployment")
            groups = [{"targets": [f"{p['status']['podIP']}:8080"],
                       "labels": {"namespace": self.namespace, "pod": p["metadata"]["name"]}}
                      for p in (out or {}).get("items") or []
                      if (p.get("status") or {}).get("podIP", "").startswith("127.")
                      and not p["metadata"].get("deletionTimestamp")]
            text = json.dumps(groups, sort_keys=True)
            if text != self.targets.read_text():
                tmp = self.targets.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(self.targets)  # atomic: Prometheus never reads half a file

    def __enter__(self) -> PrometheusServer:
        wait_for(self.ready, timeout=60, message=f"prometheus ready at {self.url}")
        self._discovery.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._discovery.join(5)
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def prom(kube, namespace, tmp_path) -> Iterator[PrometheusServer]:
    with PrometheusServer(kube, namespace, tmp_path) as server:
        yield server


class RecordingTraffic(Traffic):
    """Traffic to every serving pod, remembering when each answered request reached which version."""

    def __init__(self, kube, namespace: str) -> None:
        super().__init__(kube, namespace)
        self.answered: list[tuple[float, int]] = []

    def _run(self) -> None:
        rows = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
        while not self._stop.is_set():
            for version, ips in _serving_pods(self.kube, self.namespace).items():
                for ip in ips:
                    for row in rows:
                        try:
                            infer(ip, row, timeout=2)
                        except OSError:
                            continue
                        self.answered.append((time.time(), version))
            self._stop.wait(0.05)

    def count(self, version: int, start: float, end: float) -> int:
        return sum(1 for t, v in list(self.answered) if v == version and start <= t < end)


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_canary_analysed_from_prometheus_is_promoted(kube, namespace, kubelet, prom) -> None:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    create(kube, namespace, weak_first_run())
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TIMEOUT)
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["strategy"] = {"type": "Canary", "canary": {
        "steps": [{"weight": 25, "pause": "6s"}, {"weight": 50, "pause": "6s"}],
        "analysis": {"interval": "2s", "minRequests": 10, "maxErrorRate": 0.05, "maxLatencyP95Seconds": 10.0,
                     "maxPredictionShift": 0.5, "metricsSource": "prometheus", "prometheusUrl": prom.url}}}
    # Short drift windows, so drift is measured from Prometheus during the test too.
    body["spec"]["monitoring"] = {"window": "5s", "minSamples": 5, "retrain": {"enabled": False}}
    create(kube, namespace, body)
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)

    run = sample("TrainingRun")
    run["metadata"]["name"] = "iris-logreg-2"
    run["spec"]["estimator"]["params"]["C"] = BETTER_C
    with RecordingTraffic(kube, namespace) as traffic:
        # Drift on v1, judged from Prometheus' increase() over the window: no baseline is kept in status.
        drift = wait_for(lambda: (d := get(kube, namespace, "Deployment", "iris")["status"].get("drift") or {})
                         .get("samples", 0) > 0 and d, timeout=60, message="a drift window judged from Prometheus")
        assert drift["version"] == 1 and "baseline" not in drift and drift["topFeatures"]

        create(kube, namespace, run)
        wait_reason(kube, namespace, "TrainingRun", "iris-logreg-2", "Registered", timeout=TIMEOUT)
        assert_promoted(kube, namespace, "iris", 2)
        step_started: dict[int, str] = {}

        def promoted() -> dict | None:
            status = get(kube, namespace, "Deployment", "iris")["status"]
            rollout = status.get("rollout") or {}
            if rollout.get("state") == "Stepping":
                step_started[int(rollout["step"])] = rollout["stepStartedAt"]
            return status if status.get("stableVersion") == 2 else None

        status = wait_for(promoted, timeout=TIMEOUT, interval=0.2,
                          message=f"v2 promoted on Prometheus' numbers ({get(kube, namespace, 'Deployment', 'iris')})")
    analysis = status["lastAnalysis"]
    assert analysis["verdict"] == "Pass" and analysis["metricsSource"] == "prometheus", analysis
    assert "rollout" not in status and status.get("canaryVersion") is None
    reasons = [e["reason"] for e in events_for(kube, namespace, "iris")]
    assert "CanaryStarted" in reasons and "Promoted" in reasons

    # The last step's analysis counted the canary's requests of that step, as the pods answered them. Its
    # bounds are whole seconds and increase() extrapolates to them: allow a few seconds' worth of requests.
    start, end = _time(step_started[1]), _time(analysis["time"]) + 1
    sent = traffic.count(2, start, end)
    slack = 3 * sent / (end - start) + 3
    assert abs(analysis["requests"] - sent) <= slack, (analysis, sent, slack)
    assert analysis["errorRate"] == 0.0 and 0 < analysis["latencyP95Seconds"] < 10

    # What Prometheus holds is exactly what the pods report: the operator's selector finds every series.
    selector = promql.selector(namespace, "iris", [2])
    expression = f"sum by (outcome) (kultivar_inference_requests_total{selector})"

    def same_as_pods() -> tuple[dict, dict] | None:
        from_pods: dict[str, float] = {}
        for ip in _serving_pods(kube, namespace).get(2, []):
            with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as response:
                for outcome, count in parse(response.read().decode()).requests.items():
                    from_pods[outcome] = from_pods.get(outcome, 0.0) + count
        answer = prometheus.query(prom.url, expression, time.time())
        from_prometheus = {s["metric"]["outcome"]: float(s["value"][1]) for s in answer}
        return (from_pods, from_prometheus) if from_pods == from_prometheus and from_pods.get("success") else None

    wait_for(same_as_pods, timeout=30, message="Prometheus' counters equal to the pods' own /metrics")
