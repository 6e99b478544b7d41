"""`make dev` stops cleanly and completely: Ctrl-C, or `make cluster-down`, leaves no process it started.

`dev` runs against a cluster of its own here (its operator watches every namespace, so it must not share the
session's cluster with the session's operator). The test process is made a child subreaper while `dev` runs:
anything `dev` started and left behind is then re-parented to the test rather than to init, so "nothing left"
is checked over every descendant, not only over the ones seen while it ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import wait_for
from kultivar.devcluster import iris_data
from kultivar.devcluster.children import proc_info, processes
from kultivar.devcluster.cluster import LocalCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris"
PLURALS = {"Dataset": "datasets", "TrainingRun": "trainingruns", "Model": "models", "Deployment": "deployments"}
_PR_SET_CHILD_SUBREAPER = 36
SERVE_TIMEOUT = 300  # validation, training, registry and two model servers, on a busy 2-core machine


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    infos = [p for p in processes() if p.alive]
    children: dict[int, list[int]] = {}
    for p in infos:
        children.setdefault(p.ppid, []).append(p.pid)
    start = {p.pid: p.start for p in infos}
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = start[pid]
        todo += children.get(pid, [])
    return found


def still_running(seen: dict[int, int], before: set[int]) -> list[str]:
    """Processes seen under `dev` that still run, and new children re-parented to this (subreaper) process."""
    me = os.getpid()
    left = {pid for pid, start in seen.items() if (i := proc_info(pid)) and i.alive and i.start == start}
    left |= {p.pid for p in processes() if p.ppid == me and p.alive and p.pid not in before}
    return [f"{pid}: {_cmdline(pid)}" for pid in sorted(left)]


def reap_orphans(before: set[int]) -> None:
    """Collect zombies re-parented to this process (never the test's own children, which Popen reaps)."""
    for p in processes():
        if p.ppid == os.getpid() and p.pid not in before and not p.alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def kill_all(pids: list[str]) -> None:
    for line in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


@pytest.fixture(scope="module")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("dev-cluster"), detach=False)
    cluster.start()
    yield cluster
    cluster.stop()


def start_dev(state_dir: Path, log: Path, ignore_sigint: bool = False) -> subprocess.Popen[bytes]:
    def preexec() -> None:
        if ignore_sigint:  # what a shell does to a background job: `make dev &` in a script
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    with log.open("ab") as out:
        # Its own process group, as the foreground job of a terminal is: Ctrl-C signals that group.
        return subprocess.Popen([sys.executable, "-m", "kultivar.devcluster", "dev", "--state-dir", str(state_dir)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                process_group=0, preexec_fn=preexec)


def apply_iris(cluster: LocalCluster) -> None:
    """examples/iris/ in namespace default, once `dev` has installed the CRDs, with its source file in the store
    (examples/iris reads pvc://kultivar-artifacts/sources/iris.csv, which an upstream writes: here, the test)."""
    iris_data.write_local(cluster.state_dir / "store", iris_data.original())
    api = cluster.api()
    for path in sorted(EXAMPLE.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        url = f"/apis/kultivar.io/v1alpha1/namespaces/default/{PLURALS[body['kind']]}"
        wait_for(lambda u=url, b=body: api.request("POST", u, b)[0] in (201, 409), timeout=60,
                 message=f"{body['kind']} {body['metadata']['name']} created")


def wait_for_servers(dev: subprocess.Popen[bytes], log: Path) -> dict[int, int]:
    def serving() -> dict[int, int]:
        assert dev.poll() is None, f"dev exited:\n{log.read_text()[-3000:]}"
        found = descendants(dev.pid)
        return found if any(" serve " in _cmdline(pid) for pid in found) else {}

    return wait_for(serving, timeout=SERVE_TIMEOUT, interval=1, message=f"a model server under dev ({log})")


def test_ctrl_c_stops_dev_and_everything_it_started(dev_cluster: LocalCluster, tmp_path: Path) -> None:
    before = {p.pid for p in processes() if p.ppid == os.getpid()}
    log = tmp_path / "dev.log"
    with subreaper():
        dev = start_dev(dev_cluster.state_dir, log, ignore_sigint=True)
        left: list[str] = []
        try:
            apply_iris(dev_cluster)
            seen = wait_for_servers(dev, log)
            commands = [_cmdline(pid) for pid in seen]
            assert any(" operator" in c for c in commands), commands
            seen |= descendants(dev.pid)

            os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
            assert dev.wait(90) == 0, log.read_text()[-3000:]
            reap_orphans(before)
            left = still_running(seen, before)
            assert not left, "left running after Ctrl-C:\n" + "\n".join(left)
        finally:
            if dev.poll() is None:
                dev.kill()
                dev.wait()
            kill_all(left)
            reap_orphans(before)
    output = log.read_text()
    assert "SIGINT: stopping" in output and "[dev] stopped" in output, output[-3000:]
    assert not any((dev_cluster.state_dir / "dev" / "pids").iterdir())
    assert not (dev_cluster.state_dir / "dev" / "dev.pid").exists()
    # The store follows the cluster's state directory, so two local clusters never share files.
    assert any((dev_cluster.state_dir / "store").iterdir())


def test_cluster_down_stops_what_a_killed_dev_left(dev_cluster: LocalCluster, tmp_path: Path) -> None:
    before = {p.pid for p in processes() if p.ppid == os.getpid()}
    log = tmp_path / "dev.log"
    with subreaper():
        dev = start_dev(dev_cluster.state_dir, log)
        left: list[str] = []
        try:
            apply_iris(dev_cluster)  # already there after the first test; trains if run alone
            seen = wait_for_servers(dev, log) | descendants(dev.pid)
            dev.kill()  # no handler runs: only the kernel (PR_SET_PDEATHSIG) and the pid files are left
            dev.wait()
            down = subprocess.run([sys.executable, "-m", "kultivar.devcluster", "down", "--state-dir",
                                   str(dev_cluster.state_dir)], capture_output=True, text=True, timeout=120)
            assert down.returncode == 0, down.stderr
            reap_orphans(before)
            left = still_running(seen, before)
            assert not left, "left running after `down`:\n" + "\n".join(left)
        finally:
            kill_all(left)
            reap_orphans(before)
    assert not (dev_cluster.state_dir / "dev" / "pids").exists() or not any(
        (dev_cluster.state_dir / "dev" / "pids").iterdir())
