"""The local cluster's persistent state, readable by another process: ports, components, PID files, etcd's data.

See cluster.py for the state directory layout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import node as real_node
from .process import free_ports, pid_runs

NODE_NAME = "kwok-node-0"

# Start order; stop() goes in reverse so that clients go before the API server and etcd goes last.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# With a real node (``node="real"``) containerd, kubelet and kube-proxy take kwok's place.
REAL_NODE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                        *real_node.NODE_COMPONENTS)
ALL_COMPONENTS = (*COMPONENTS, *real_node.NODE_COMPONENTS)
SHM_ROOT = Path("/dev/shm")
SHM_PREFIX = "kultivar-etcd-"
# A /dev/shm etcd directory whose etcd is gone is only swept when older than this, so that a cluster
# being started concurrently (directory created, etcd not yet running) is never swept from under it.
STALE_SHM_AGE_S = 120.0


class ClusterError(RuntimeError):
    """The local cluster failed to start, or is not in the state asked for."""


# --------------------------------------------------------------------------------------------------
# Persistent state, readable by another process


@dataclass
class ClusterState:
    etcd_client_port: int
    etcd_peer_port: int
    etcd_metrics_port: int
    apiserver_port: int
    controller_manager_port: int
    scheduler_port: int
    kwok_port: int
    etcd_dir: str
    detached: bool
    node: str = "kwok"  # or "real": containerd + kubelet + kube-proxy (see node.py)
    host: str = "127.0.0.1"  # where the API server listens
    kubelet_port: int = 0
    kubelet_healthz_port: int = 0
    proxy_healthz_port: int = 0
    proxy_metrics_port: int = 0

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def components(self) -> tuple[str, ...]:
        return REAL_NODE_COMPONENTS if self.node == "real" else COMPONENTS

    @property
    def node_name(self) -> str:
        return real_node.NODE_NAME if self.node == "real" else NODE_NAME

    @classmethod
    def allocate(cls, etcd_dir: Path, detached: bool, node: str = "kwok") -> ClusterState:
        etcd_client, etcd_peer, etcd_metrics, apiserver, controller_manager, scheduler, kwok, *node_ports = (
            free_ports(11)
        )
        real = node == "real"
        return cls(
            etcd_client_port=etcd_client,
            etcd_peer_port=etcd_peer,
            etcd_metrics_port=etcd_metrics,
            apiserver_port=apiserver,
            controller_manager_port=controller_manager,
            scheduler_port=scheduler,
            kwok_port=kwok,
            etcd_dir=str(etcd_dir),
            detached=detached,
            node=node,
            host=real_node.HOST_IP if real else "127.0.0.1",
            kubelet_port=node_ports[0] if real else 0,
            kubelet_healthz_port=node_ports[1] if real else 0,
            proxy_healthz_port=node_ports[2] if real else 0,
            proxy_metrics_port=node_ports[3] if real else 0,
        )

    def save(self, state_dir: Path) -> None:
        (state_dir / "cluster.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        path = state_dir / "cluster.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise ClusterError(f"no cluster state in {state_dir} (missing {path.name})") from None


# --------------------------------------------------------------------------------------------------
# etcd's data directory


def new_etcd_dir(state_dir: Path) -> Path:
    """etcd on tmpfs: with --unsafe-no-fsync this makes every write (and so the whole cluster) fast."""
    if SHM_ROOT.is_dir() and os.access(SHM_ROOT, os.W_OK):
        sweep_stale_etcd_dirs()
        path = SHM_ROOT / f"{SHM_PREFIX}{secrets.token_hex(6)}"
    else:
        path = state_dir / "etcd"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def sweep_stale_etcd_dirs() -> None:
    """Remove etcd directories that a killed test run (no teardown) left on /dev/shm."""
    now = time.time()
    for candidate in SHM_ROOT.glob(f"{SHM_PREFIX}*"):
        try:
            if now - candidate.stat().st_mtime < STALE_SHM_AGE_S:
                continue
            pid = int((candidate / "etcd.pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if not (pid and pid_runs(pid, "etcd")):
            shutil.rmtree(candidate, ignore_errors=True)


def remove_etcd_dir(etcd_dir: str | None, state_dir: Path) -> None:
    if not etcd_dir:
        return
    path = Path(etcd_dir)
    # Only ever delete what this module created, whatever cluster.json says.
    on_shm = path.parent == SHM_ROOT and path.name.startswith(SHM_PREFIX)
    if on_shm or path == state_dir.resolve() / "etcd":
        shutil.rmtree(path, ignore_errors=True)



# --------------------------------------------------------------------------------------------------
# PID files


def read_pids(state_dir: Path) -> dict[str, int]:
    pids: dict[str, int] = {}
    for name in ALL_COMPONENTS:
        try:
            pids[name] = int((state_dir / "pids" / f"{name}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
    return pids
