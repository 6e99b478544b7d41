"""A Model's history: an ordered, bounded record of what happened to it and who caused it (status.history).

Events expire after an hour; this lasts as long as the Model. Who caused a change: "operator" for its own
decisions (a registration, the gate's promotion, a failed canary), otherwise the field manager that last wrote
the spec field behind it (metadata.managedFields: kubectl-kultivar, kubectl-client-side-apply, argocd-controller,
...), which the API server records for every write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kultivar.domain.conditions import now_rfc3339

LIMIT = 50  # entries kept, newest last; the CRD's maxItems
OPERATOR = "operator"


def entry(now: datetime, type_: str, reason: str, actor: str = OPERATOR, version: int | None = None,
          training_run: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"time": now_rfc3339(now), "type": type_, "reason": reason, "actor": actor}
    if version is not None:
        item["version"] = version
    if training_run is not None:
        item["trainingRun"] = training_run
    return item


def appended(history: list[dict[str, Any]] | None, new: list[dict[str, Any]], limit: int = LIMIT
             ) -> list[dict[str, Any]]:
    """The history with new entries at the end, the oldest dropped beyond limit."""
    return [*(history or []), *new][-limit:]


def _owns(fields: dict[str, Any], path: list[str]) -> bool:
    node: Any = fields
    for key in path:
        if not isinstance(node, dict) or f"f:{key}" not in node:
            return False
        node = node[f"f:{key}"]
    return True


def field_manager(obj: dict[str, Any], path: list[str]) -> str | None:
    """The manager that last wrote obj's field at path (e.g. ["spec", "production"]), from managedFields."""
    owners = [m for m in (obj.get("metadata") or {}).get("managedFields") or []
              if _owns(m.get("fieldsV1") or {}, path)]
    if not owners:
        return None
    return str(max(owners, key=lambda m: m.get("time") or "").get("manager") or "") or None


def creator(obj: dict[str, Any]) -> str | None:
    """The manager of an object's first write (its creation), from managedFields."""
    managers = (obj.get("metadata") or {}).get("managedFields") or []
    if not managers:
        return None
    return str(min(managers, key=lambda m: m.get("time") or "").get("manager") or "") or None


def started_runs(history: list[dict[str, Any]] | None, runs: list[dict[str, Any]], registered: set[str],
                 now: datetime) -> list[dict[str, Any]]:
    """TrainingStarted entries for runs of this Model that are under way and not yet in the history."""
    known = {h.get("trainingRun") for h in history or [] if h.get("type") == "TrainingStarted"}
    # A full history has dropped its oldest entries: a run created before the oldest one kept was recorded
    # then (or is too old to be news). Without this, more runs under way than LIMIT were "new" at every
    # reconcile, and each rewrite of the history, a Model event, reconciled the Model again, without end.
    horizon = min((h.get("time") or "" for h in history or []), default="") if len(history or []) >= LIMIT else ""
    out = []
    for run in sorted(runs, key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"])):
        name = run["metadata"]["name"]
        if name in known or name in registered or (run.get("status") or {}).get("completionTime"):
            continue
        if horizon and (run["metadata"].get("creationTimestamp") or "") < horizon:
            continue
        trigger = (run.get("spec") or {}).get("trigger", "manual")
        actor = OPERATOR if trigger in ("drift", "performance") else (creator(run) or "unknown")
        out.append(entry(now, "TrainingStarted", f"TrainingRun {name} ({trigger})", actor, training_run=name))
    return out
