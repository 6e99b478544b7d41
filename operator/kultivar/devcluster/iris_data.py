"""The iris example's upstream: the labelled data that lands in the Dataset's source, as a real pipeline's would.

``examples/iris/`` reads ``pvc://kultivar-artifacts/sources/iris.csv``, a file in the artifact store's claim. At
first it holds scikit-learn's 150 iris rows. When the population changes (the demo's drift step: flowers far
larger than any in the training data arrive), the upstream labels some of the new flowers and appends them, so a
retraining run on the refreshed Dataset learns them.

The larger flowers are real flowers scaled up: every measurement of a flower times :data:`SCALE` with a little
noise, keeping its species. Scaling keeps a flower's shape (the ratios of its measurements), which is what tells
the species apart, so the species of a scaled flower is that of the flower it was scaled from. A model trained
only on the original rows misreads many of them (their size looks like virginica's); one trained on both learns
the shapes, which is the real improvement the demo's v2 shows.

``python -m kultivar.devcluster.iris_data original|larger --store DIR`` writes the file into a local store
directory (the directory the claim is bound to), ``--namespace NS`` through a short-lived pod that mounts the
claim (any cluster; the pod runs the runtime image).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CLAIM = "kultivar-artifacts"
SOURCE_PATH = "sources/iris.csv"  # inside the claim
SOURCE_URI = f"pvc://{CLAIM}/{SOURCE_PATH}"
TARGET = "species"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SPECIES = {0: "setosa", 1: "versicolor", 2: "virginica"}
SCALE = 1.8  # how much larger the new flowers are
NOISE = 0.03  # relative noise of each scaled measurement
COPIES = 2  # new labelled flowers per original one: the new population soon outnumbers the old
OWNER_UID = 65532  # the workload pods' user: the store's files are theirs


def original() -> pd.DataFrame:
    """scikit-learn's iris set, species as its integer code (0 setosa, 1 versicolor, 2 virginica)."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    frame = pd.DataFrame(bunch.data, columns=FEATURES)
    frame[TARGET] = bunch.target.astype(np.int64)
    return frame


def larger_flowers(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flowers of the same shapes as ``rows``, SCALE times larger, each measurement with NOISE relative noise."""
    return (np.asarray(rows, dtype=float) * SCALE * rng.normal(1.0, NOISE, size=np.shape(rows))).round(1)


def larger(copies: int = COPIES, seed: int = 2026) -> pd.DataFrame:
    """The new population, labelled: ``copies`` scaled copies of every real flower, keeping its species."""
    base = original()
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(copies):
        part = pd.DataFrame(larger_flowers(base[FEATURES].to_numpy(), rng), columns=FEATURES)
        part[TARGET] = base[TARGET].to_numpy()
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def refreshed() -> pd.DataFrame:
    """The source after the upstream appended the new population's labelled rows to the original ones."""
    return pd.concat([original(), larger()], ignore_index=True)


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def write_local(store: Path, frame: pd.DataFrame) -> Path:
    """Replace the source file in a store directory atomically: a validation never reads half a file."""
    path = store / SOURCE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(csv_text(frame))
    if os.geteuid() == 0:  # the store belongs to the pods' user; keep what we add theirs
        for item in (path.parent, staging):
            os.chown(item, OWNER_UID, OWNER_UID)
    staging.replace(path)
    return path


def writer_pod(name: str, image: str, config_map: str) -> dict[str, Any]:
    """A pod (Pod Security "restricted") that copies the ConfigMap's CSV into the claim, atomically."""
    target = f"/claim/{SOURCE_PATH}"
    script = (f"import os, shutil; t = {target!r}; os.makedirs(os.path.dirname(t), exist_ok=True); "
              "shutil.copyfile('/data/iris.csv', t + '.new'); os.replace(t + '.new', t)")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kultivar-iris-upstream"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": OWNER_UID, "runAsGroup": OWNER_UID,
                                "fsGroup": OWNER_UID, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "upstream", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "claim", "mountPath": "/claim"},
                                 {"name": "data", "mountPath": "/data", "readOnly": True}],
            }],
            "volumes": [{"name": "claim", "persistentVolumeClaim": {"claimName": CLAIM}},
                        {"name": "data", "configMap": {"name": config_map}}],
        },
    }


def write_through_pod(api: Any, namespace: str, frame: pd.DataFrame, image: str, timeout: float = 300) -> None:
    """Land the CSV in the namespace's claim from inside the cluster (any cluster, no node access needed)."""
    from kultivar.k8s.client import ApiError

    name = "iris-upstream"
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                  "data": {"iris.csv": csv_text(frame)}}
    base = f"/api/v1/namespaces/{namespace}"
    for path in (f"{base}/pods/{name}", f"{base}/configmaps/{name}"):
        try:
            api.request("DELETE", path)
        except ApiError as exc:
            if exc.status != 404:
                raise
    def pod() -> dict[str, Any] | None:
        try:
            return dict(api.request("GET", f"{base}/pods/{name}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    deadline = time.monotonic() + timeout
    while pod() is not None:  # the previous writer is gone before the next starts
        if time.monotonic() > deadline:
            raise TimeoutError(f"pod {namespace}/{name} from an earlier run was not deleted")
        time.sleep(1)
    api.request("POST", f"{base}/configmaps", config_map)
    api.request("POST", f"{base}/pods", writer_pod(name, image, name))
    phase = ""
    while time.monotonic() < deadline:
        phase = ((pod() or {}).get("status") or {}).get("phase", "")
        if phase == "Succeeded":
            return
        if phase == "Failed":
            logs = api.request("GET", f"{base}/pods/{name}/log")
            raise RuntimeError(f"pod {namespace}/{name} failed writing {SOURCE_URI}: {str(logs)[-2000:]}")
        time.sleep(1)
    raise TimeoutError(f"pod {namespace}/{name} did not write {SOURCE_URI} within {timeout:.0f}s (phase {phase})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kultivar.devcluster.iris_data", description=__doc__.split("\n")[0])
    parser.add_argument("data", choices=("original", "larger"),
                        help="original: the 150 iris rows; larger: those plus the larger flowers, labelled")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path, help="the store directory the claim is bound to (a local node)")
    where.add_argument("--namespace", help="write through a pod in this namespace (uses KUBECONFIG)")
    parser.add_argument("--image", default="kultivar-runtime:0.1.0", help="image of the writer pod (--namespace)")
    args = parser.parse_args(argv)
    frame = original() if args.data == "original" else refreshed()
    if args.store:
        print(f"wrote {len(frame)} rows to {write_local(args.store.expanduser(), frame)}")
    elif args.namespace:
        from kultivar.k8s.client import Api

        write_through_pod(Api.connect(os.environ.get("KUBECONFIG")), args.namespace, frame, args.image)
        print(f"wrote {len(frame)} rows to {SOURCE_URI} in namespace {args.namespace}")
    else:
        sys.stdout.write(csv_text(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
