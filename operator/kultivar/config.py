"""Operator configuration, read once from the environment (set by the Helm chart)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kultivar.api.contracts import DEFAULT_ESTIMATOR_PACKAGES


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _labels(value: str) -> dict[str, str]:
    """Parse "k=v,k2=v2" into a dict."""
    pairs = (item.split("=", 1) for item in _split(value))
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass(frozen=True)
class OperatorConfig:
    # Artifact store: an fsspec URL that the operator and every workload pod can reach.
    store_url: str = "file:///var/lib/kultivar/artifacts"
    # The PVC holding a file:// store, mounted at the store path in workload pods. Empty for object stores.
    store_pvc: str = "kultivar-artifacts"
    # Secret with object-store credentials (AWS_* keys), passed to workload pods as environment variables.
    store_secret: str = ""
    runtime_image: str = "kultivar-runtime:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    workers: int = 8
    # Level-based safety net: every object is reconciled at least this often even without events.
    resync_seconds: float = 300.0
    # Top-level packages estimators may come from (chart value operator.estimatorPackages): TrainingRuns naming
    # another package are refused, and the training pods get the list (see kultivar.api.contracts).
    estimator_packages: tuple[str, ...] = DEFAULT_ESTIMATOR_PACKAGES
    metrics_port: int = 8080  # 0 turns the operator's metrics endpoint off
    metrics_address: str = "0.0.0.0"  # in a pod Prometheus scrapes the pod IP; local runs use 127.0.0.1
    # Extra labels on every workload pod (cost allocation, mesh opt-outs, a test harness's kubelet stand-in).
    pod_labels: dict[str, str] = field(default_factory=dict)
    # Leader election: the Lease (in the operator's own namespace) naming the one replica that reconciles.
    lease_name: str = "kultivar-operator"
    lease_namespace: str = ""
    # This replica's name in the Lease. In a pod, the pod's name: a restarted container keeps it and takes its
    # own Lease back at once, and two pods never share it.
    identity: str = ""

    @property
    def store_path(self) -> str:
        """Local path of a file:// store (the PVC mount path in pods), or '' for object stores."""
        url = self.store_url
        if url.startswith("file://"):
            return url[len("file://"):]
        return url if url.startswith("/") else ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        return cls(
            store_url=env.get("KULTIVAR_STORE_URL", defaults.store_url),
            store_pvc=env.get("KULTIVAR_STORE_PVC", defaults.store_pvc),
            store_secret=env.get("KULTIVAR_STORE_SECRET", defaults.store_secret),
            runtime_image=env.get("KULTIVAR_RUNTIME_IMAGE", defaults.runtime_image),
            image_pull_policy=env.get("KULTIVAR_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            workers=int(env.get("KULTIVAR_WORKERS", defaults.workers)),
            resync_seconds=float(env.get("KULTIVAR_RESYNC_SECONDS", defaults.resync_seconds)),
            estimator_packages=_split(env.get("KULTIVAR_ESTIMATOR_PACKAGES", ",".join(defaults.estimator_packages))),
            metrics_port=int(env.get("KULTIVAR_METRICS_PORT", defaults.metrics_port)),
            metrics_address=env.get("KULTIVAR_METRICS_ADDRESS", defaults.metrics_address),
            pod_labels=_labels(env.get("KULTIVAR_POD_LABELS", "")),
            lease_name=env.get("KULTIVAR_LEASE_NAME", defaults.lease_name),
            # Empty: resolved at start-up (k8s/lease.py) from the pod's ServiceAccount, or the host name and PID.
            lease_namespace=env.get("KULTIVAR_LEASE_NAMESPACE") or env.get("POD_NAMESPACE") or "",
            identity=env.get("KULTIVAR_IDENTITY") or env.get("POD_NAME") or "",
        )
