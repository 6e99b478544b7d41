"""Processes by PID: free ports, liveness, log tails, and signalling and waiting for processes to exit.

Used by the local cluster harness (cluster.py) to start, watch and stop its components from PID files alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1; the sockets are held together so no port is handed out twice."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (a zombie has exited and only awaits reaping)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def pid_runs(pid: int, binary_name: str) -> bool:
    """True if ``pid`` is alive and still runs ``binary_name`` -- a guard against signalling a reused PID."""
    if not pid_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return Path(argv0).name == binary_name


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def wait_gone(pids: dict[str, int], timeout: float, reap: Callable[[int], None]) -> dict[str, int]:
    """Wait until the processes have exited; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    remaining = dict(pids)
    while remaining and time.monotonic() < deadline:
        for name, pid in list(remaining.items()):
            reap(pid)
            if not pid_alive(pid):
                del remaining[name]
        if remaining:
            time.sleep(0.05)
    return remaining


def signal_all(pids: dict[str, int], sig: signal.Signals) -> dict[str, int]:
    signalled = {}
    for name, pid in pids.items():
        if pid_runs(pid, name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            signalled[name] = pid
    return signalled


def reap_if_child(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
