"""The processes `make dev` starts, kept so that nothing it started outlives it.

Every child (the operator, each workload run, each model server) gets:

- its own session and process group, so the terminal's Ctrl-C reaches only `dev`, which then stops them
  together -- rather than a training run dying of the same SIGINT half-way and being reported as a failed
  pod -- and so stopping a group also stops whatever the child started itself (e.g. joblib workers);
- PR_SET_PDEATHSIG: the kernel SIGTERMs it when the thread that started it dies, so a `dev` killed with
  SIGKILL leaves no orphan behind;
- a pid file ``<pid_dir>/<name>-<pid>.pid`` holding its pid and start time, so `make cluster-down`
  (:func:`stop_dev`) can stop whatever a killed `dev` left, without ever signalling a reused pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
Progress = Callable[[str], None]


class ShuttingDown(RuntimeError):
    """A child was to be started after :meth:`ProcessGroups.stop_all` began."""


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn that has the kernel SIGTERM the child when the process that started it dies.

    libc is loaded here, in the parent: dlopen() in a forked child of a threaded process can deadlock.
    The kernel tracks the *thread* that forked, so start children from a long-lived thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class ProcInfo:
    """The fields of /proc/<pid>/stat this module needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int  # clock ticks after boot: with the pid, identifies one process for good
    state: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")  # a zombie has exited and only awaits reaping


def proc_info(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces and parentheses
    return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0])


def processes() -> Iterator[ProcInfo]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := proc_info(int(entry.name))) is not None:
            yield info


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group."""
    return [p.pid for p in processes() if p.pgid == pgid and p.alive]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_groups(pgids: Sequence[int], timeout: float, reap: Callable[[], object] = lambda: None) -> list[int]:
    """SIGTERM every group at once, wait up to ``timeout`` for all members to exit, SIGKILL the rest.

    ``reap`` collects exited children of this process (a zombie is gone, but its pid stays until reaped).
    Returns the groups that had to be killed.
    """
    for pgid in pgids:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    remaining = list(pgids)
    while True:
        reap()
        remaining = [g for g in remaining if group_members(g)]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for pgid in remaining:
        _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(group_members(g) for g in remaining) and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    reap()
    return remaining


class ProcessGroups:
    """Starts children each in its own process group and stops them, with everything they started."""

    def __init__(self, pid_dir: Path | None = None) -> None:
        self.pid_dir = pid_dir
        self._lock = threading.Lock()
        self._procs: dict[int, tuple[subprocess.Popen[bytes], Path | None]] = {}
        self._closing = False

    def start(self, name: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._closing:
                raise ShuttingDown(f"not starting {name}: stopping")
            proc: subprocess.Popen[bytes] = subprocess.Popen(
                list(argv), start_new_session=True, preexec_fn=die_with_parent(), **popen)
            record = None
            info = proc_info(proc.pid)
            if self.pid_dir is not None and info is not None:
                self.pid_dir.mkdir(parents=True, exist_ok=True)
                record = self.pid_dir / f"{name}-{proc.pid}.pid"
                record.write_text(f"{proc.pid} {info.start}\n")
            self._procs[proc.pid] = (proc, record)
            return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """Stop one child's process group (SIGTERM, then SIGKILL after ``timeout``)."""
        stop_groups([proc.pid], timeout, reap=lambda: proc.poll())
        self._forget(proc.pid)

    def stop_all(self, timeout: float = 10.0) -> list[int]:
        """Stop every child's group together; no child can be started any more. Returns the killed ones."""
        with self._lock:
            self._closing = True
            procs = [p for p, _ in self._procs.values()]
        killed = stop_groups([p.pid for p in procs], timeout, reap=lambda: [p.poll() for p in procs])
        for proc in procs:
            self._forget(proc.pid)
        return killed

    def _forget(self, pid: int) -> None:
        with self._lock:
            _, record = self._procs.pop(pid, (None, None))
        if record is not None:
            record.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# What `make cluster-down` uses: the records of a `dev` that may have been killed


def _recorded(path: Path) -> tuple[int, int] | None:
    try:
        pid, start = (int(x) for x in path.read_text().split())
    except (FileNotFoundError, ValueError):
        return None
    return pid, start


def _is_ours(pid: int, start: int) -> bool:
    """Whether the recorded group still holds processes that are ours.

    The leader alive with the recorded start time: ours. The leader gone: its group's remaining members are
    ours, because the kernel hands out no pid that is still some group's id. The pid alive with another
    start time: reused by an unrelated process, whose group this is not.
    """
    info = proc_info(pid)
    if info is not None and info.alive:
        return info.start == start
    return bool(group_members(pid))


def write_pid_file(path: Path) -> None:
    """Record this process (pid and start time) at ``path``."""
    info = proc_info(os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()} {info.start if info else 0}\n")


def running_pid(path: Path) -> int | None:
    """The pid recorded at ``path`` if that very process still runs."""
    record = _recorded(path)
    if record is None:
        return None
    info = proc_info(record[0])
    return record[0] if info is not None and info.alive and info.start == record[1] else None


def stop_recorded(pid_dir: Path, timeout: float = 10.0) -> list[str]:
    """Stop the process groups recorded in ``pid_dir`` that are still ours; remove the records."""
    names, pgids = [], []
    for path in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []:
        record = _recorded(path)
        if record is not None and _is_ours(*record):
            names.append(path.stem)
            pgids.append(record[0])
        path.unlink(missing_ok=True)
    stop_groups(pgids, timeout)
    return names


def stop_dev(dev_dir: Path, timeout: float = 20.0, progress: Progress | None = None) -> None:
    """Stop a running `dev` (it stops its children itself), then any child a killed `dev` left behind."""
    say = progress or (lambda _msg: None)
    pid = running_pid(dev_dir / "dev.pid")
    if pid is not None:
        say(f"stopping `dev` (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while (info := proc_info(pid)) is not None and info.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(dev_dir / "dev.pid") == pid:
            say(f"killing `dev` (pid {pid}; no exit {timeout:.0f}s after SIGTERM)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for name in stop_recorded(dev_dir / "pids"):
        say(f"stopped {name}, left by an earlier `dev`")
    (dev_dir / "dev.pid").unlink(missing_ok=True)
