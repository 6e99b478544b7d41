"""What the commands show, computed from the objects alone (pure; the -o json of lineage and compare)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kultivar.domain.conditions import parse_time
from kultivar.domain.registry import LOWER_IS_BETTER

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Refused(Exception):
    """The request cannot be met as asked; the message says what would work."""


def _status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in _status(obj).get("conditions") or [] if c.get("type") == type_), None)


def versions(model: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(_status(model).get("versions") or [], key=lambda v: v["version"])


def version_record(model: dict[str, Any], number: int) -> dict[str, Any]:
    for v in versions(model):
        if v["version"] == number:
            return v
    known = ", ".join(f"v{v['version']}" for v in versions(model)) or "none yet"
    raise Refused(f"Model {model['metadata']['name']!r} has no version {number} (registered: {known})")


def served(deployments: list[dict[str, Any]]) -> dict[int, list[tuple[str, str, int]]]:
    """version -> (Deployment, role, weight) for every version some Deployment serves."""
    out: dict[int, list[tuple[str, str, int]]] = {}
    for dep in deployments:
        for variant in _status(dep).get("variants") or []:
            out.setdefault(variant["version"], []).append(
                (dep["metadata"]["name"], variant.get("role", "stable"), int(variant.get("weight") or 0)))
    return out


def shadowed(deployments: list[dict[str, Any]]) -> dict[int, list[tuple[str, str, int]]]:
    """version -> (Deployment, state, percent) for every version some Deployment sends copies of its requests to
    (status.shadow): such a version answers no user, so it is not in served()."""
    out: dict[int, list[tuple[str, str, int]]] = {}
    for dep in deployments:
        shadow = _status(dep).get("shadow")
        if shadow and shadow.get("version") is not None:
            out.setdefault(shadow["version"], []).append(
                (dep["metadata"]["name"], shadow.get("state", "Starting"), int(shadow.get("percent") or 0)))
    return out


def short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest.removeprefix("sha256:")[:12]


def lineage(model: dict[str, Any], number: int, run: dict[str, Any] | None, dataset: dict[str, Any] | None,
            deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """Data source and digest -> validation -> TrainingRun -> version -> where it is served."""
    record = version_record(model, number)
    digest = record.get("datasetDigest") or None
    data_version = next((v for v in _status(dataset).get("versions") or [] if v.get("digest") == digest), None)
    run_spec, run_status = (run or {}).get("spec") or {}, _status(run)
    estimator = run_spec.get("estimator") or {}
    return {
        "model": model["metadata"]["name"],
        "version": number,
        "data": {
            "dataset": record.get("dataset"),
            "exists": dataset is not None,
            "source": ((dataset or {}).get("spec") or {}).get("source", {}).get("uri"),
            "digest": digest,
            "rows": (data_version or {}).get("rows"),
            "snapshotUri": (data_version or {}).get("snapshotUri"),
        },
        "validation": {
            "validated": data_version is not None,
            "validatedAt": (data_version or {}).get("validatedAt"),
        },
        "trainingRun": {
            "name": record.get("trainingRun"),
            "exists": run is not None,
            "estimator": estimator.get("className"),
            "params": estimator.get("params") or {},
            "bestParams": run_status.get("bestParams"),
            "search": run_spec.get("search"),
            "evaluation": run_spec.get("evaluation"),
            "image": record.get("image") or run_spec.get("image"),
            "trigger": run_spec.get("trigger"),
            "completionTime": run_status.get("completionTime"),
        },
        "registered": {
            "createdAt": record.get("createdAt"),
            "metric": record.get("metric"),
            "metrics": record.get("metrics") or {},
            "gate": record.get("gate"),
            "artifact": record.get("artifact"),
            "production": _status(model).get("productionVersion") == number,
            "rolledBack": bool(record.get("rolledBack")),
            "rollbackReason": record.get("rollbackReason"),
        },
        "servedBy": [{"deployment": d, "role": role, "weight": w}
                     for d, role, w in served(deployments).get(number, [])],
        "shadowOf": [{"deployment": d, "state": state, "percent": p}
                     for d, state, p in shadowed(deployments).get(number, [])],
    }


def better_of(metric: str, a: float | None, b: float | None) -> int | None:
    """1 or 2 for the better of two values of metric, None when equal or one is missing."""
    if a is None or b is None or a == b:
        return None
    lower = metric in LOWER_IS_BETTER
    return 1 if (a < b) == lower else 2


def _params(run: dict[str, Any] | None) -> dict[str, Any]:
    spec = (run or {}).get("spec") or {}
    params = dict((spec.get("estimator") or {}).get("params") or {})
    params.update(_status(run).get("bestParams") or {})  # what the search chose is what was fitted
    if (spec.get("estimator") or {}).get("className"):
        params = {"estimator": spec["estimator"]["className"], **params}
    return params


def comparison(model: dict[str, Any], first: int, second: int, run1: dict[str, Any] | None,
               run2: dict[str, Any] | None) -> dict[str, Any]:
    """Metrics, parameters and data of two versions side by side."""
    a, b = version_record(model, first), version_record(model, second)
    names = sorted(set(a.get("metrics") or {}) | set(b.get("metrics") or {}))
    metrics = []
    for name in names:
        x, y = (a.get("metrics") or {}).get(name), (b.get("metrics") or {}).get(name)
        metrics.append({"name": name, "a": x, "b": y, "delta": None if x is None or y is None else y - x,
                        "better": better_of(name, x, y), "lowerIsBetter": name in LOWER_IS_BETTER})
    p1, p2 = _params(run1), _params(run2)
    params = [{"name": k, "a": p1.get(k), "b": p2.get(k), "same": p1.get(k) == p2.get(k)}
              for k in sorted(set(p1) | set(p2), key=lambda k: (k != "estimator", k))]
    eval1 = ((run1 or {}).get("spec") or {}).get("evaluation")
    eval2 = ((run2 or {}).get("spec") or {}).get("evaluation")
    same_data = bool(a.get("datasetDigest")) and a.get("datasetDigest") == b.get("datasetDigest")
    # Held-out metrics are only directly comparable when both were measured on the same rows: the same data
    # version split the same way (same test fraction and seed). Otherwise say so next to the numbers.
    same_split = same_data and eval1 is not None and eval1 == eval2
    return {
        "model": model["metadata"]["name"],
        "versions": [first, second],
        "metrics": metrics,
        "params": params,
        "data": {"a": a.get("datasetDigest"), "b": b.get("datasetDigest"), "same": same_data},
        "sameEvaluation": same_split,
        "gate": {"a": a.get("gate"), "b": b.get("gate")},
        "trainingRuns": {"a": a.get("trainingRun"), "b": b.get("trainingRun")},
    }


@dataclass(frozen=True)
class RolloutState:
    done: bool
    ok: bool
    message: str


def rollout_state(dep: dict[str, Any]) -> RolloutState:
    """Whether the Deployment's rollout is over (for --watch) and whether it ended well (the exit code)."""
    meta, status = dep.get("metadata") or {}, _status(dep)
    name = meta.get("name", "")
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return RolloutState(False, False, f"{name}: waiting for the operator to see the latest spec")
    progressing, degraded = condition(dep, "Progressing"), condition(dep, "Degraded")
    if progressing is None:
        return RolloutState(False, False, f"{name}: not reconciled yet")
    if progressing.get("status") == "True":
        return RolloutState(False, False, f"{name}: {progressing.get('message') or progressing.get('reason')}")
    if degraded and degraded.get("status") == "True":
        return RolloutState(True, False, f"{name}: {degraded.get('message') or degraded.get('reason')}")
    stable = status.get("stableVersion")
    return RolloutState(True, True, f"{name}: v{stable} serves all traffic" if stable else f"{name}: settled")


# --- a Deployment over time ---------------------------------------------------------------------------------


def drift_windows(dep: dict[str, Any]) -> list[dict[str, Any]]:
    """status.drift.history as stored: the judged drift windows, oldest first (domain/drift_history.py keeps the
    newest DRIFT_HISTORY_LIMIT; windows with too few requests to judge are not in it)."""
    return list((_status(dep).get("drift") or {}).get("history") or [])


def worst_feature(window: dict[str, Any]) -> dict[str, Any] | None:
    """The window's feature with the highest PSI (its features are the top ones; their order is not relied on)."""
    return max(window.get("features") or [], key=lambda f: f.get("psi", 0.0), default=None)


def deployment_history(dep: dict[str, Any]) -> dict[str, Any]:
    """What the Deployment's status keeps of its past: the judged drift windows, and the last record of each
    rollout and retraining decision, each under the status field it comes from and with the time it carries
    (status keeps the last analysis and the last retraining only, not every one)."""
    status = _status(dep)
    events: list[dict[str, Any]] = []
    if analysis := status.get("lastAnalysis"):
        events.append({"time": analysis.get("time"), "field": "lastAnalysis", "record": analysis})
    if retrain := status.get("lastRetrain"):
        events.append({"time": retrain.get("time"), "field": "lastRetrain", "record": retrain})
    if wait := status.get("retrainWait"):
        events.append({"time": wait.get("skippedAt") or wait.get("requestedAt"), "field": "retrainWait",
                       "record": wait})
    events.sort(key=lambda e: parse_time(e["time"]) or EPOCH)
    return {"deployment": (dep.get("metadata") or {}).get("name"), "driftWindows": drift_windows(dep),
            "events": events, "rolledBack": list(status.get("rolledBack") or [])}
