"""`python -m kultivar.devcluster dev`: the operator plus a local kubelet against the local cluster.

kwok's node runs no containers, so this plays the kubelet for Kultivar's workload pods (see
localkubelet.py) and gives the namespace an artifact store on a local directory, as a platform team would
with a PVC. Everything a user applies then trains for real on this machine.

It lives in the cluster's state directory: ``dev/dev.pid`` (one `dev` per cluster), ``dev/pids/`` (every
process it started, see children.py) and, by default, the artifact store ``store/``, so two local clusters
never share files. SIGINT, SIGTERM and SIGHUP stop it and everything it started, even when it was started
with SIGINT ignored (as a shell does for a background job); `make cluster-down` stops a `dev` still running
and whatever a killed one left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from kultivar.api.crdgen import all_crds
from kultivar.devcluster.children import ProcessGroups, running_pid, stop_recorded, write_pid_file
from kultivar.devcluster.kubelet import EXTERNAL_FINISH_LABELS
from kultivar.devcluster.localkubelet import LocalKubelet
from kultivar.k8s.client import Api, ApiError

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
STORE_CLAIM = "kultivar-artifacts"


def apply_crds(api: Api) -> None:
    for crd in all_crds():
        name = crd["metadata"]["name"]
        try:
            api.request("POST", CRD_PATH, crd)
        except ApiError as e:
            if e.status != 409:
                raise
            current = api.request("GET", f"{CRD_PATH}/{name}")
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            api.request("PUT", f"{CRD_PATH}/{name}", crd)


def provision_store(api: Api, namespace: str, store: Path, timeout: float = 60.0) -> None:
    """A PVC named kultivar-artifacts in the namespace, bound to a hostPath PV on the store directory."""
    pv_name = f"{STORE_CLAIM}-{namespace}"
    pv: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/managed-by": "kultivar-devcluster"}},
        "spec": {
            "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(store)},
            "claimRef": {"namespace": namespace, "name": STORE_CLAIM},
        },
    }
    pvc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": STORE_CLAIM, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "10Gi"}}},
    }
    for path, body in (("/api/v1/persistentvolumes", pv),
                       (f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", pvc)):
        try:
            api.request("POST", path, body)
        except ApiError as e:
            if e.status != 409:
                raise
    # Return only once the controller-manager has bound the claim: the scheduler finds a pod that needs an unbound
    # claim unschedulable, and may take minutes to try it again after the claim is bound.
    claim = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{STORE_CLAIM}"
    deadline = time.monotonic() + timeout
    while (api.request("GET", claim).get("status") or {}).get("phase") != "Bound":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the claim {STORE_CLAIM} in namespace {namespace} was not bound to {pv_name} "
                               f"within {timeout:.0f}s; is kube-controller-manager running?")
        time.sleep(0.1)


def operator_env(kubeconfig: str, store: Path) -> dict[str, str]:
    labels = ",".join(f"{k}={v}" for k, v in EXTERNAL_FINISH_LABELS.items())
    return {**os.environ, "KUBECONFIG": kubeconfig, "KULTIVAR_STORE_URL": f"file://{store}",
            "KULTIVAR_POD_LABELS": labels, "KULTIVAR_METRICS_ADDRESS": "127.0.0.1",
            "KULTIVAR_METRICS_PORT": os.environ.get("KULTIVAR_METRICS_PORT", "0")}


def dev_dir(state_dir: Path) -> Path:
    return state_dir / "dev"


def default_store(state_dir: Path) -> Path:
    return state_dir / "store"


class DevError(RuntimeError):
    """`dev` cannot start: no cluster, or another `dev` already runs for it."""


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT, SIGTERM and SIGHUP all mean "stop": set even if SIGINT came in ignored (`make dev &`)."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        # os.write: print() could be re-entered if the signal arrived inside one; OSError: the terminal is gone.
        if not stop.is_set():
            with contextlib.suppress(OSError):
                os.write(sys.stdout.fileno(), f"\n[dev] {signal.Signals(signum).name}: stopping the local kubelet, "
                         "its processes and the operator\n".encode())
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def run_dev(state_dir: Path, namespace: str, store: Path | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[dev] %(message)s")
    stop = threading.Event()
    _stop_on_signals(stop)
    kubeconfig, here = state_dir / "kubeconfig", dev_dir(state_dir)
    store, log_dir = store or default_store(state_dir), state_dir / "logs" / "dev"
    if not kubeconfig.is_file():
        raise DevError(f"no local cluster in {state_dir} (no kubeconfig): start one with `make cluster-up`")
    other = running_pid(here / "dev.pid")
    if other is not None and other != os.getpid():
        raise DevError(f"`dev` already runs for the cluster in {state_dir} (pid {other}); stop it first")
    write_pid_file(here / "dev.pid")
    try:
        left = stop_recorded(here / "pids")  # from a `dev` that was killed
        if left:
            print(f"[dev] stopped {', '.join(left)}, left by an earlier `dev`", flush=True)
        return _serve(kubeconfig, namespace, store, log_dir, here / "pids", stop)
    finally:
        (here / "dev.pid").unlink(missing_ok=True)


def _serve(kubeconfig: Path, namespace: str, store: Path, log_dir: Path, pid_dir: Path,
           stop: threading.Event) -> int:
    os.environ["KUBECONFIG"] = str(kubeconfig)
    store.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    api = Api.connect(str(kubeconfig))
    apply_crds(api)
    provision_store(api, namespace, store)
    operator_log = log_dir / "operator.log"
    print(f"[dev] CRDs applied; artifact store {store} provisioned in namespace {namespace} "
          "as the PVC kultivar-artifacts", flush=True)
    print(f"[dev] operator log: {operator_log}; workload logs: {log_dir}", flush=True)
    children = ProcessGroups(pid_dir)
    code = 0
    with LocalKubelet(api, namespace, log_dir, children=children):
        with operator_log.open("ab") as out:
            operator = children.start("operator", [sys.executable, "-m", "kultivar.cli", "operator"], stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=operator_env(str(kubeconfig), store))
        print("[dev] operator and local kubelet running; apply manifests now (Ctrl-C stops)", flush=True)
        while not stop.wait(0.5):
            if operator.poll() is not None:
                print(f"[dev] the operator exited with code {operator.returncode}; see {operator_log}",
                      flush=True)
                code = 1
                break
        # Leaving the block stops every process group at once: the operator, servers and any running workload.
    print("[dev] stopped", flush=True)
    return code
