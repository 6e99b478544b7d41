"""The process groups `make dev` starts: stopped with everything they started, and only ours are signalled."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kultivar.devcluster.children import (
    ProcessGroups,
    group_members,
    proc_info,
    running_pid,
    stop_recorded,
    write_pid_file,
)

# A child that starts a grandchild of its own and then waits: what a server or a joblib pool does.
PARENT_OF_GRANDCHILD = [sys.executable, "-c",
                        "import subprocess, sys, time\n"
                        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                        "print('started', flush=True); time.sleep(60)"]


def _wait_members(pgid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while len(members := group_members(pgid)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return members


def test_stop_all_stops_each_group_with_its_grandchildren(tmp_path: Path) -> None:
    groups = ProcessGroups(tmp_path / "pids")
    proc = groups.start("worker", PARENT_OF_GRANDCHILD, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    members = _wait_members(proc.pid, 2)
    assert len(members) == 2
    info = proc_info(proc.pid)
    assert info is not None and info.pgid == proc.pid and info.sid == proc.pid  # its own session
    assert sorted(p.name for p in (tmp_path / "pids").iterdir()) == [f"worker-{proc.pid}.pid"]

    groups.stop_all(timeout=5)

    assert proc.returncode is not None
    assert group_members(proc.pid) == []
    assert not any((tmp_path / "pids").iterdir())


def test_stop_recorded_stops_what_a_killed_owner_left(tmp_path: Path) -> None:
    groups = ProcessGroups(tmp_path / "pids")
    proc = groups.start("serve", PARENT_OF_GRANDCHILD, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    assert len(_wait_members(proc.pid, 2)) == 2

    # Another process (`make cluster-down`) knows only the pid files.
    assert stop_recorded(tmp_path / "pids", timeout=5) == [f"serve-{proc.pid}"]
    proc.wait(5)
    assert group_members(proc.pid) == []
    assert not any((tmp_path / "pids").iterdir())


def test_a_record_whose_pid_was_reused_is_not_signalled(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        info = proc_info(bystander.pid)
        assert info is not None
        (tmp_path / "pids").mkdir()
        # The same pid with another start time: the recorded process is gone and the pid belongs to another.
        (tmp_path / "pids" / f"serve-{bystander.pid}.pid").write_text(f"{bystander.pid} {info.start - 1}\n")
        assert stop_recorded(tmp_path / "pids", timeout=1) == []
        assert bystander.poll() is None
        assert not any((tmp_path / "pids").iterdir())
    finally:
        bystander.kill()
        bystander.wait()


def test_running_pid_names_only_the_recorded_live_process(tmp_path: Path) -> None:
    record = tmp_path / "dev.pid"
    assert running_pid(record) is None
    write_pid_file(record)
    assert running_pid(record) == os.getpid()
    pid, start = record.read_text().split()
    record.write_text(f"{pid} {int(start) + 1}\n")
    assert running_pid(record) is None
