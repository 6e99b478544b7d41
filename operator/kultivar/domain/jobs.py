"""Jobs for the workloads, planned from specs, and what their finished pods reported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kultivar.api.common import API_VERSION
from kultivar.api.contracts import decode_termination, failure
from kultivar.config import OperatorConfig
from kultivar.domain.labels import MANAGED_BY, MANAGER, OWNER_KIND, OWNER_NAME

# Exit code of a workload that failed for a reason retrying cannot fix (bad data, bad estimator).
PERMANENT_FAILURE_EXIT_CODE = 2
TERMINATION_LOG = "/dev/termination-log"

# Pod Security "restricted": non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp.
RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def store_problem(config: OperatorConfig, claim_found: bool | None) -> tuple[str, str] | None:
    """Workload pods of a file store mount its PVC; without it they would stay Pending with no word why."""
    if claim_found is False:
        return ("ArtifactStoreUnavailable",
                f"PersistentVolumeClaim {config.store_pvc!r} (the artifact store at {config.store_path}) does not "
                "exist in this namespace; create it (ReadWriteMany, on the artifact volume) or configure an "
                "object store (KULTIVAR_STORE_URL=s3://...)")
    return None


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_labels(obj: dict[str, Any]) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGER,
        OWNER_KIND: obj["kind"],
        OWNER_NAME: obj["metadata"]["name"],
    }


def store_volume(config: OperatorConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts that give a pod the artifact store (a PVC for file stores)."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if config.store_path and config.store_pvc:
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": config.store_pvc}})
        mounts.append({"name": "artifacts", "mountPath": config.store_path})
    return volumes, mounts


def workload_job(
    *,
    name: str,
    owner: dict[str, Any],
    command: list[str],
    env: dict[str, str],
    config: OperatorConfig,
    image: str | None = None,
    resources: dict[str, Any] | None = None,
    backoff_limit: int = 0,
    active_deadline_seconds: int | None = None,
    secret_names: tuple[str, ...] = (),
    annotations: dict[str, str] | None = None,
    extra_labels: dict[str, str] | None = None,
    extra_volumes: list[tuple[dict[str, Any], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A Job running one workload command in the runtime image, meeting Pod Security "restricted"."""
    labels = {**owner_labels(owner), **(extra_labels or {})}
    volumes, mounts = store_volume(config)
    for volume, mount in extra_volumes or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        same = next((v for v in volumes if claim and (v.get("persistentVolumeClaim") or {}).get("claimName") == claim),
                    None)
        if same is not None:
            # One claim twice in a pod must be one volume with two mounts: the kubelet keys volumes by the claim's
            # PersistentVolume and never reports a second volume on it mounted (the pod hangs in ContainerCreating).
            mounts.append({**mount, "name": same["name"]})
            continue
        volumes.append(volume)
        mounts.append(mount)
    env_list = [{"name": k, "value": v} for k, v in sorted(env.items())]
    env_from = [{"secretRef": {"name": s}} for s in secret_names if s]
    container: dict[str, Any] = {
        "name": "workload",
        "image": image or config.runtime_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "env": env_list,
        "volumeMounts": mounts,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the workload writes its message still explains itself through the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    if resources:
        container["resources"] = resources
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff_limit,
        # Bad data or a bad estimator fails the same way every time: do not burn retries on it.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "workload", "operator": "In",
                                    "values": [PERMANENT_FAILURE_EXIT_CODE]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "ttlSecondsAfterFinished": 7 * 86400,
        "template": {
            "metadata": {"labels": {**config.pod_labels, **labels}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": RESTRICTED_POD_SECURITY,
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations or {},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": job_spec,
    }


@dataclass(frozen=True)
class JobOutcome:
    """Where a Job stands, and what its workload reported if it finished."""

    state: str  # Pending | Running | Succeeded | Failed
    reason: str = ""  # Job failure reason: BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy
    message: str = ""
    result: dict[str, Any] | None = None  # decoded termination message of the last finished pod
    attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None


def _finished_message(pod: dict[str, Any]) -> tuple[str | None, str]:
    """The termination message of a pod's workload container and its finishedAt time."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("message"), terminated.get("finishedAt") or ""
    return None, ""


def job_finished(job: dict[str, Any]) -> bool:
    """Whether the Job is Complete or Failed (only then do its pods have a result to read)."""
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def job_outcome(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> JobOutcome:
    if job is None:
        return JobOutcome("Pending")
    status = job.get("status") or {}
    attempts = int(status.get("succeeded") or 0) + int(status.get("failed") or 0) + int(status.get("active") or 0)
    finished = [(msg, at) for msg, at in map(_finished_message, pods) if msg is not None]
    finished.sort(key=lambda t: t[1])
    result = decode_termination(finished[-1][0]) if finished else None
    started = status.get("startTime")
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobOutcome("Succeeded", result=result, attempts=attempts, start_time=started,
                              completion_time=status.get("completionTime"))
        if cond.get("type") == "Failed":
            return JobOutcome("Failed", reason=cond.get("reason") or "JobFailed", message=cond.get("message") or "",
                              result=result, attempts=attempts, start_time=started,
                              completion_time=cond.get("lastTransitionTime"))
    return JobOutcome("Running" if started else "Pending", result=result, attempts=attempts, start_time=started)


def limit_failure(job: JobOutcome) -> tuple[str, str] | None:
    """A Job that hit its own limit (retries or deadline) failed for that reason, whatever its last pod said."""
    if job.reason not in ("BackoffLimitExceeded", "DeadlineExceeded"):
        return None
    message = job.message or job.reason
    reported = failure(job.result)
    last = reported.message if reported else ""
    return job.reason, f"{message}; last attempt: {last}" if last else message
