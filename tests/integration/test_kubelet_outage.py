"""The local kubelet survives an API-server restart (issue 18 item 8): it is the harness of the chaos tier,
so a lost status write there would look like an operator bug.

A training workload exits while the API server is down: its terminal status cannot be written then, and
must land once the server is back, so the TrainingRun still registers its version (rather than waiting
for its deadline).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kapi import create, get, jobs, sample, wait_reason

from helpers import wait_for
from kultivar.devcluster.cluster import LocalCluster
from kultivar.devcluster.localkubelet import LocalKubelet
from kultivar.k8s.client import Api

TRAIN_TIMEOUT = 180
OUTAGE_SECONDS = 5.0


class OutageWhenTrainingEnds(LocalKubelet):
    """Takes the API server away the moment the training workload exits, before its status is written."""

    def __init__(self, *args: Any, cluster: LocalCluster, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.apiserver_argv: list[str] = []
        self.stopped = threading.Event()

    def run_pod(self, pod: dict[str, Any]) -> tuple[int, str]:
        result = super().run_pod(pod)
        if pod["metadata"].get("labels", {}).get("kultivar.io/workload") == "train" and not self.stopped.is_set():
            self.apiserver_argv = self.cluster.stop_apiserver()
            self.stopped.set()
        return result


def test_a_workload_ending_during_an_api_server_outage_is_still_reported(kube, namespace, operator,
                                                                          control_plane) -> None:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    create(kube, namespace, sample("TrainingRun"))
    with OutageWhenTrainingEnds(Api(kube.api_client), namespace, operator.workdir / "pods",
                                cluster=control_plane) as kubelet:
        wait_for(kubelet.stopped.is_set, timeout=TRAIN_TIMEOUT, message="the training pod to run (then the outage)")
        time.sleep(OUTAGE_SECONDS)  # down while the kubelet tries to report the pod's end
        control_plane.start_apiserver(kubelet.apiserver_argv)  # from this thread: the server dies with its starter
        wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
        assert kubelet.unreported.failed_attempts >= 1, "the status write never met the outage: nothing was tested"
        assert len(kubelet.unreported) == 0
    assert get(kube, namespace, "TrainingRun", "iris-logreg-1")["status"]["modelVersion"] == 1
    assert [j["metadata"]["name"] for j in jobs(kube, namespace) if "-train-" in j["metadata"]["name"]] == [
        "iris-logreg-1-train-1"]
