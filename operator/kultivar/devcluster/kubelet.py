"""Play the kubelet's part for pods on the fake kwok node.

kwok makes pods Running and completes ordinary Job pods by itself (see stages.yaml). Pods labelled
``kultivar.io/finish=external`` are left Running so a test decides how they end: it calls
:func:`finish_pod` with an exit code and a termination message, exactly what the operator would read
from a real pod whose container wrote ``/dev/termination-log``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

FINISH_LABEL = "kultivar.io/finish"
FINISH_EXTERNAL = "external"
# Label a Job's pod template with this so kwok leaves its pods Running for finish_pod().
EXTERNAL_FINISH_LABELS = {FINISH_LABEL: FINISH_EXTERNAL}

_CONFLICT_RETRIES = 10


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated_status(
    container: dict[str, Any], previous: dict[str, Any] | None, exit_code: int, message: str, now: str
) -> dict[str, Any]:
    previous = previous or {}
    running = (previous.get("state") or {}).get("running") or {}
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        # The kubelet's reasons for a container that exited by itself.
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": running.get("startedAt") or now,
        "finishedAt": now,
    }
    if message:
        terminated["message"] = message
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": previous.get("imageID", ""),
        "ready": False,
        "started": False,
        "restartCount": previous.get("restartCount", 0),
        # Exactly one state: the API server rejects a status that is both running and terminated.
        "state": {"terminated": terminated},
    }


def _not_ready_conditions(conditions: list[dict[str, Any]], reason: str, now: str) -> list[dict[str, Any]]:
    updated = [c for c in conditions if c.get("type") not in ("Ready", "ContainersReady")]
    for kind in ("ContainersReady", "Ready"):
        updated.append({"type": kind, "status": "False", "reason": reason, "lastTransitionTime": now})
    return updated


def finished_status(
    pod: dict[str, Any], exit_code: int = 0, message: str = "", container: str | None = None
) -> dict[str, Any]:
    """The pod's status after its containers exited: every container (or just ``container``) terminated.

    ``message`` goes to the terminated state of each container that is finished here, as the kubelet
    copies a container's termination-log file into ``state.terminated.message``.
    """
    now = _now()
    status = dict(pod.get("status") or {})
    previous = {s["name"]: s for s in status.get("containerStatuses") or []}
    statuses = []
    for spec in pod["spec"]["containers"]:
        if container is None or spec["name"] == container:
            statuses.append(_terminated_status(spec, previous.get(spec["name"]), exit_code, message, now))
        elif spec["name"] in previous:
            statuses.append(previous[spec["name"]])
    all_terminated = all("terminated" in (s.get("state") or {}) for s in statuses)
    failed = any(((s.get("state") or {}).get("terminated") or {}).get("exitCode", 0) != 0 for s in statuses)
    status["containerStatuses"] = statuses
    if all_terminated:
        status["phase"] = "Failed" if failed else "Succeeded"
        reason = "PodFailed" if failed else "PodCompleted"
        status["conditions"] = _not_ready_conditions(status.get("conditions") or [], reason, now)
    return status


def finish_pod(
    core_api: Any,
    namespace: str,
    name: str,
    exit_code: int = 0,
    message: str = "",
    container: str | None = None,
) -> dict[str, Any]:
    """Finish a running pod the way a kubelet reports it: phase, terminated container states, Ready=False.

    ``core_api`` is a ``kubernetes.client.CoreV1Api``. With ``exit_code`` 0 the pod Succeeds (reason
    Completed), otherwise it Fails (reason Error). Returns the pod as stored by the API server (a dict).
    The status is replaced with the read resourceVersion and retried on a conflict, so a concurrent kwok
    update is never silently overwritten.
    """
    from kubernetes.client.exceptions import ApiException  # a dev-only dependency of the harness

    serialize = core_api.api_client.sanitize_for_serialization
    for _ in range(_CONFLICT_RETRIES):
        pod = serialize(core_api.read_namespaced_pod(name, namespace))
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            raise RuntimeError(f"pod {namespace}/{name} has already finished ({pod['status']['phase']})")
        pod["status"] = finished_status(pod, exit_code, message, container)
        try:
            stored = core_api.replace_namespaced_pod_status(name, namespace, pod)
        except ApiException as exc:
            if exc.status == 409:  # someone (kwok) updated the pod in between: read it again
                time.sleep(0.05)
                continue
            raise
        return serialize(stored)
    raise RuntimeError(f"could not update the status of pod {namespace}/{name}: too many conflicts")
