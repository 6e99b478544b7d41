"""`python -m kultivar.devcluster dev`: the operator plus a local kubelet against the local cluster.

kwok's node runs no containers, so this plays the kubelet for Kultivar's workload pods (see
localkubelet.py) and gives the namespace an artifact store on a local directory, as a platform team would
with a PVC. Everything a user applies then trains for real on this machine.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kultivar.api.crdgen import all_crds
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


def provision_store(api: Api, namespace: str, store: Path) -> None:
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


def operator_env(kubeconfig: str, store: Path) -> dict[str, str]:
    labels = ",".join(f"{k}={v}" for k, v in EXTERNAL_FINISH_LABELS.items())
    return {**os.environ, "KUBECONFIG": kubeconfig, "KULTIVAR_STORE_URL": f"file://{store}",
            "KULTIVAR_POD_LABELS": labels, "KULTIVAR_METRICS_ADDRESS": "127.0.0.1",
            "KULTIVAR_METRICS_PORT": os.environ.get("KULTIVAR_METRICS_PORT", "0")}


def run_dev(kubeconfig: Path, namespace: str, store: Path, log_dir: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="[dev] %(message)s")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    store.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    api = Api.connect(str(kubeconfig))
    apply_crds(api)
    provision_store(api, namespace, store)
    operator_log = log_dir / "operator.log"
    print(f"[dev] CRDs applied; artifact store {store} provisioned in namespace {namespace}", flush=True)
    print(f"[dev] operator log: {operator_log}; workload logs: {log_dir}", flush=True)
    with operator_log.open("ab") as out:
        operator = subprocess.Popen([sys.executable, "-m", "kultivar.cli", "operator"], stdout=out,
                                    stderr=subprocess.STDOUT, env=operator_env(str(kubeconfig), store))
    print("[dev] operator and local kubelet running; apply manifests now (Ctrl-C stops)", flush=True)
    try:
        LocalKubelet(api, namespace, log_dir).run_forever()
    finally:
        operator.terminate()
        operator.wait(15)
    return 0
