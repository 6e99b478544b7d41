"""The local kubelet's status writes: retried until they land, readiness re-asserted level-based (issue 18 item 8)."""

from __future__ import annotations

import copy

import pytest
import urllib3.exceptions

from kultivar.devcluster.localkubelet import LocalKubelet, readiness_differs, report_restart, reported_readiness
from kultivar.devcluster.statuswrites import Backoff, PendingWrites, transient
from kultivar.k8s.client import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyWrite:
    """A write refused (connection refused) ``failures`` times, then landing."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.error = error or urllib3.exceptions.MaxRetryError(None, "/api", "Connection refused")

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error


def test_backoff_doubles_and_is_capped() -> None:
    backoff = Backoff(base=0.2, cap=5.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5, 6, 10)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


@pytest.mark.parametrize(("exc", "expected"), [
    (urllib3.exceptions.MaxRetryError(None, "/", "refused"), True),
    (ConnectionRefusedError(), True),
    (ApiError(503, "Service Unavailable"), True),
    (ApiError(429, "Too Many Requests"), True),
    (ApiError(0, "no response"), True),
    (ApiError(409, "Conflict"), True),  # raced by kwok more often than the write's own retries: read again later
    (ApiError(404, "Not Found"), False),
    (ApiError(422, "Invalid"), False),
    (ValueError("bug"), False),
])
def test_transient_failures_are_those_that_may_pass_later(exc: Exception, expected: bool) -> None:
    assert transient(exc) is expected


def test_a_refused_write_is_retried_with_backoff_until_it_lands() -> None:
    clock = Clock()
    writes = PendingWrites(Backoff(base=1.0, cap=4.0), clock)
    write = FlakyWrite(failures=4)
    writes.add("ns/pod", write)
    assert writes.flush() == [] and write.calls == 1
    assert writes.flush() == [] and write.calls == 1  # not due yet: 1 s of backoff
    attempts_at = []
    while "ns/pod" in writes and clock.now < 60:
        clock.now += 0.5
        before = write.calls
        landed = writes.flush()
        if write.calls > before:
            attempts_at.append(clock.now)
    assert landed == ["ns/pod"] and write.calls == 5 and len(writes) == 0
    assert attempts_at == [1.0, 3.0, 7.0, 11.0]  # waits of 1, 2, 4, then capped at 4


def test_a_write_that_can_never_land_is_given_up() -> None:
    writes = PendingWrites(clock=Clock())
    write = FlakyWrite(failures=10, error=ApiError(404, "Not Found"))  # the pod was deleted meanwhile
    writes.add("ns/gone", write)
    assert writes.flush() == [] and len(writes) == 0 and write.calls == 1


def test_writes_are_independent() -> None:
    clock = Clock()
    writes = PendingWrites(clock=clock)
    writes.add("ns/a", FlakyWrite(failures=3))
    writes.add("ns/b", FlakyWrite(failures=0))
    assert writes.flush() == ["ns/b"] and "ns/a" in writes


def _pod(ready: str | None, ip: str | None = "127.0.0.5") -> dict:
    status: dict = {"phase": "Running"}
    if ip:
        status["podIP"] = ip
    if ready is not None:
        status["conditions"] = [{"type": "ContainersReady", "status": ready}, {"type": "Ready", "status": ready}]
    return {"status": status}


def test_reported_readiness_reads_the_ready_condition_and_ip() -> None:
    assert reported_readiness(_pod("True")) == (True, "127.0.0.5")
    assert reported_readiness(_pod("False")) == (False, "127.0.0.5")
    assert reported_readiness(_pod(None, ip=None)) == (False, None)


def test_readiness_is_rewritten_when_the_server_holds_something_else() -> None:
    # The node controller marked the pod NotReady during an outage; the probe passes: write it back.
    assert readiness_differs(_pod("False"), True, "127.0.0.5")
    assert readiness_differs(_pod("True"), False, "127.0.0.5")  # the server stopped answering its probe
    assert readiness_differs(_pod("False", ip="10.244.0.7"), False, "127.0.0.5")  # kwok's IP, not the server's
    assert not readiness_differs(_pod("True"), True, "127.0.0.5")  # nothing to write: no write each sweep
    assert not readiness_differs(_pod("False"), False, None)


class FakePodApi:
    """Holds one pod; answers the two requests the local kubelet's status writes make (GET, PUT .../status)."""

    def __init__(self, pod: dict) -> None:
        self.pod = pod
        self.puts = 0

    def request(self, method: str, path: str, body: dict | None = None, **_: object) -> dict:
        if method == "PUT":
            self.puts += 1
            self.pod = body or {}
        return copy.deepcopy(self.pod)


class ProbedServer:
    ip = "127.0.0.9"

    def __init__(self, ready: bool) -> None:
        self.ready = ready

    def probe(self) -> bool:
        return self.ready

    def exited(self) -> None:  # a server that keeps running
        return None

    def restart_due(self) -> bool:
        return False


def test_a_pod_marked_not_ready_by_the_node_controller_is_reported_ready_again(tmp_path) -> None:
    pod = {"metadata": {"namespace": "ns", "name": "serve-1"}, "spec": {"containers": [{"name": "c"}]},
           **_pod("True", ip="127.0.0.9")}
    api = FakePodApi(pod)
    kubelet = LocalKubelet(api, "ns", tmp_path)  # type: ignore[arg-type]
    kubelet.servers["ns/serve-1"] = ProbedServer(ready=True)  # type: ignore[assignment]
    kubelet._sync_servers([api.pod])
    assert api.puts == 0  # the server already holds what the probe says: no write
    # The node was NotReady longer than the grace period: the node controller marked the pod not ready.
    api.pod["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "NodeNotReady"}]
    kubelet._sync_servers([api.pod])
    assert api.puts == 1 and reported_readiness(api.pod) == (True, "127.0.0.9")
    kubelet._sync_servers([api.pod])
    assert api.puts == 1


def test_a_server_that_exited_is_reported_as_a_kubelet_does_and_running_again_after_its_back_off() -> None:
    running = {"name": "server", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": "t0"}}}
    api = FakePodApi({"metadata": {"namespace": "ns", "name": "serve-1"},
                      "status": {"phase": "Running", "containerStatuses": [running]}})
    report_restart(api, "ns", "serve-1", 1, (2, '{"ok": false}'))  # type: ignore[arg-type]
    status = api.pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1 and status["ready"] is False
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"] == {"exitCode": 2, "reason": "Error", "startedAt": "t0",
                                                 "finishedAt": status["lastState"]["terminated"]["finishedAt"],
                                                 "message": '{"ok": false}'}
    report_restart(api, "ns", "serve-1", 1, None)  # type: ignore[arg-type]
    status = api.pod["status"]["containerStatuses"][0]
    assert "running" in status["state"] and status["lastState"]["terminated"]["exitCode"] == 2
