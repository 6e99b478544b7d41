"""Run the operator as its own process (`kultivar operator`), as it runs in a pod, so a test can kill it."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from pathlib import Path

from kultivar.devcluster.dev import operator_env


class OperatorProcess:
    def __init__(self, kubeconfig: Path, workdir: Path, store: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.store = store
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = workdir / "operator.log"
        # Like a pod's name: kept across restarts of this process, so a restarted operator takes its own
        # leader-election Lease back at once instead of waiting out the lease duration.
        self.identity = f"test-operator-{secrets.token_hex(3)}"

    @property
    def env(self) -> dict[str, str]:
        # Same settings as `python -m kultivar.devcluster dev`: kwok leaves workload pods to the local kubelet.
        base = operator_env(str(self.kubeconfig), self.store)
        return {**base, "KULTIVAR_WORKERS": "2", "KULTIVAR_RESYNC_SECONDS": "20", "KULTIVAR_IDENTITY": self.identity,
                **self.extra_env}

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kultivar.cli", "operator", "--log-level", "debug"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.workdir,
        )

    def kill(self) -> None:
        """Stop abruptly, like a crashed or evicted pod: no cleanup handlers run."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
