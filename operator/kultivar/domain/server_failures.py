"""Model servers that refuse to start for good: read from their pods, reported on the Kultivar Deployment. Pure.

A server that cannot serve with its settings (``spec.serving.unknownCategories: Refuse`` on a version that records
no allowed values, a model file failing its digest, ...) writes a termination message (kultivar.serving.server:
``{"ok": false, "reason", "message", "retryable": false}``) and exits. Its apps/v1 Deployment restarts it forever
(CrashLoopBackOff) and says nothing of why; the kubelet keeps the message in the container's ``lastState`` (or
``state`` while it is down). The operator reads it (k8s.serving.server_failures) while a version is not ready, and
this module turns it into ``Ready=False`` with reason ServerFailed naming the version, the server's reason and
its message (k8s/apply posts the Warning Event of that transition once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kultivar.api.contracts import decode_termination
from kultivar.domain.conditions import READY, Cond
from kultivar.domain.labels import DEPLOYMENT_LABEL, VERSION_LABEL
from kultivar.domain.plan import Plan
from kultivar.domain.reasons import Reason

# While a version's pods are not ready, how soon to read them again for a server that refused to start.
STARTING_RECHECK_SECONDS = 30.0


@dataclass(frozen=True)
class ServerFailure:
    """A served version's pod whose server stopped with a failure retrying cannot fix."""

    version: int
    pod: str
    reason: str  # the server's own reason, e.g. NoAllowedValues, DigestMismatch
    message: str


def _permanent(terminated: dict[str, Any] | None) -> tuple[str, str] | None:
    """The server's (reason, message) when a terminated state carries a Kultivar message marked permanent."""
    result = decode_termination((terminated or {}).get("message"))
    # Only a message the server wrote itself: it always says retryable (a log tail or a crash does not).
    if not result or result.get("ok") is not False or result.get("retryable") is not False:
        return None
    return str(result.get("reason") or "ServerFailed"), str(result.get("message") or "")


def pod_failure(pod: dict[str, Any]) -> ServerFailure | None:
    """Why this server pod cannot serve, when its server said so and is not running again since."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if meta.get("deletionTimestamp") or VERSION_LABEL not in labels:
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "running" in state and cs.get("ready"):  # up again: an old exit is history
            continue
        found = _permanent(state.get("terminated")) or _permanent((cs.get("lastState") or {}).get("terminated"))
        if found:
            return ServerFailure(int(labels[VERSION_LABEL]), str(meta.get("name", "")), *found)
    return None


def server_failures(pods: list[dict[str, Any]]) -> dict[int, ServerFailure]:
    """The first permanent failure per version among a Deployment's server pods (by pod name: stable output)."""
    found: dict[int, ServerFailure] = {}
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        failure = pod_failure(pod)
        if failure is not None and failure.version not in found:
            found[failure.version] = failure
    return found


def served_versions(deployments: list[dict[str, Any]]) -> list[int]:
    """The versions a serving plan runs (its apps/v1 Deployments that answer users, not the shadow's)."""
    out = []
    for d in deployments:
        labels = d["metadata"].get("labels") or {}
        if DEPLOYMENT_LABEL in labels and VERSION_LABEL in labels:
            out.append(int(labels[VERSION_LABEL]))
    return sorted(out)


def failure_message(failures: list[ServerFailure], deployment: str) -> str:
    # No restart count: the message (and so the status) stays the same while the pod keeps crashing.
    parts = [f"the model server of v{f.version} (pod {f.pod}) refused to start: {f.reason}: {f.message}"
             for f in failures]
    return ("; ".join(parts) + f"; it fails the same way on every restart (apps/v1 Deployment "
            f"{deployment}-v{failures[0].version} in CrashLoopBackOff): fix the cause named above (the "
            "Deployment's spec or the Model version)")


def report_server_failures(plan: Plan, failures: dict[int, ServerFailure], versions: list[int],
                           deployment: str) -> None:
    """Ready=False ServerFailed when a version this plan serves has a server that refused to start for good
    (failures: read this reconcile because a version is not ready yet).

    It replaces whatever Ready the serving plan chose: Deploying would wait forever, and Serving (old pods of the
    version still answer while the new ones crash, maxUnavailable 0) would hide that the spec is not in effect.
    """
    failing = [failures[v] for v in versions if v in failures]
    if not failing:
        # Still starting: look again soon, as a crash changes nothing the operator watches (the apps/v1
        # Deployment's status stays the same while its pod crash-loops).
        plan.requeue_after = min(plan.requeue_after or STARTING_RECHECK_SECONDS, STARTING_RECHECK_SECONDS)
        return
    plan.conditions = [c for c in plan.conditions if c.type != READY]
    plan.conditions.append(Cond(READY, False, Reason.SERVER_FAILED, failure_message(failing, deployment)))
