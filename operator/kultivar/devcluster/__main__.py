"""``python -m kultivar.devcluster up|down|status [--state-dir DIR]``: a local cluster for development.

``up`` starts the control plane detached (it outlives the command) and prints ``KUBECONFIG=<path>`` as
its last line -- the only line on stdout, so ``export $(python -m kultivar.devcluster up)`` works;
progress goes to stderr. ``down`` stops it from the PID files (and a `dev` running against it, with
everything that `dev` started); ``status`` reports each component. ``dev`` runs the operator and a local
kubelet against it until Ctrl-C (see dev.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cluster import (
    LocalCluster,
    api_client,
    component_status,
    is_running,
    stop_from_state_dir,
)
from .paths import BinaryNotFoundError
from .state import ClusterError


def default_state_dir() -> Path:
    return Path(os.environ.get("KULTIVAR_CLUSTER_DIR") or Path.home() / ".cache" / "kultivar" / "cluster")


def _progress(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def _print_kubeconfig(state_dir: Path) -> None:
    print(f"KUBECONFIG={state_dir / 'kubeconfig'}", flush=True)


def cmd_up(state_dir: Path, node: str = "kwok") -> int:
    if is_running(state_dir):
        _progress(f"already running from {state_dir}")
        _print_kubeconfig(state_dir)
        return 0
    if any(s.running for s in component_status(state_dir)):
        # Half a cluster (e.g. one process crashed) is not worth repairing: start again from scratch.
        _progress("found a partially running cluster; stopping it first")
        stop_from_state_dir(state_dir, progress=_progress)
    cluster = LocalCluster(state_dir, detach=True, progress=_progress, node=node)
    cluster.start()
    _print_kubeconfig(cluster.state_dir)
    return 0


def cmd_down(state_dir: Path) -> int:
    if not any(s.running for s in component_status(state_dir)):
        _progress(f"no cluster running from {state_dir}")
    stop_from_state_dir(state_dir, progress=_progress)
    return 0


def cmd_status(state_dir: Path) -> int:
    """Exit code: 0 running, 1 partially running, 3 stopped (like `systemctl status`)."""
    statuses = component_status(state_dir)
    for status in statuses:
        state = "running" if status.running else "stopped"
        pid = f"pid {status.pid}" if status.pid else "no pid file"
        print(f"{status.name:<24} {state:<8} {pid}")
    running = [s.running for s in statuses]
    if all(running):
        ready, detail = api_client(state_dir).readyz()
        print(f"{'kube-apiserver /readyz':<24} {'ok' if ready else 'NOT READY: ' + detail[:200]}")
        print(f"KUBECONFIG={state_dir / 'kubeconfig'}")
        return 0 if ready else 1
    return 1 if any(running) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kultivar.devcluster", description="A local Kubernetes control plane for development."
    )
    parser.add_argument("command", choices=("up", "down", "status", "dev"),
                        help="dev: run the operator plus a local kubelet that runs workload pods on this machine")
    parser.add_argument("--namespace", default="default", help="dev: namespace whose workload pods run locally")
    parser.add_argument("--node", choices=("kwok", "real"), default=os.environ.get("KULTIVAR_NODE", "kwok"),
                        help="up: kwok (a fake node, default) or real (containerd + kubelet + kube-proxy; root)")
    parser.add_argument("--store", type=Path, default=None,
                        help="dev: directory holding the artifact store (default: store/ in the state directory)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where kubeconfig, PKI, logs and PID files live (default: $KULTIVAR_CLUSTER_DIR or "
        "~/.cache/kultivar/cluster)",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.expanduser().resolve()
    commands = {"up": lambda d: cmd_up(d, args.node), "down": cmd_down, "status": cmd_status}
    try:
        if args.command == "dev":
            from .dev import DevError, run_dev

            try:
                return run_dev(state_dir, args.namespace, args.store.expanduser().resolve() if args.store else None)
            except DevError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        return commands[args.command](state_dir)
    except (ClusterError, BinaryNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
