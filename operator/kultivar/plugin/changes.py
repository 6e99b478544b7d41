"""The declarative changes the mutating commands make to the user's own objects (pure).

Each is a JSON merge patch of the object's spec: applied as the user (kubectl kultivar promote ...), or printed
as the YAML to commit for GitOps users (--print). The operator itself never writes spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from kultivar.api.common import API_VERSION
from kultivar.domain.labels import RETRAINED_FROM_LABEL
from kultivar.plugin.facts import Refused, version_record, versions

RETRAINED_FROM = RETRAINED_FROM_LABEL


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    namespace: str
    patch: dict[str, Any]  # merge patch of the whole object (only spec is ever set)
    summary: str  # what the change does, in one line
    note: str = ""  # what else the user should know (side effects, how to undo)


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["name"], obj["metadata"].get("namespace", "default")


def _registered(model: dict[str, Any], number: int, *, usable: bool = True) -> dict[str, Any]:
    record = version_record(model, number)
    if usable and record.get("rolledBack"):
        raise Refused(f"v{number} was rolled back ({record.get('rollbackReason') or 'its canary failed'}); "
                      f"choose another version or train a new one (kubectl kultivar retrain model "
                      f"{model['metadata']['name']})")
    return record


def promote(model: dict[str, Any], number: int) -> Change:
    """Make a version production: pin spec.production (the Manual policy is what a pin means)."""
    _registered(model, number)
    name, ns = _meta(model)
    policy = ((model.get("spec") or {}).get("promotion") or {}).get("policy", "Automatic")
    note = ("promotion.policy becomes Manual: new versions are registered but no longer promoted by themselves "
            f"(kubectl kultivar pin model {name} --auto returns to Automatic)") if policy != "Manual" else ""
    return Change("Model", name, ns, {"spec": {"promotion": {"policy": "Manual"}, "production": number}},
                  f"Model {name}: v{number} becomes production", note)


def automatic(model: dict[str, Any]) -> Change:
    """Unpin: let the gate choose production again."""
    name, ns = _meta(model)
    return Change("Model", name, ns, {"spec": {"promotion": {"policy": "Automatic"}, "production": None}},
                  f"Model {name}: production follows the promotion gate again (policy Automatic)")


def previous_version(model: dict[str, Any], before: int) -> int:
    """The newest usable version older than `before`: passed its gate, never rolled back."""
    for v in reversed(versions(model)):
        if v["version"] < before and (v.get("gate") or {}).get("passed", True) and not v.get("rolledBack"):
            return int(v["version"])
    raise Refused(f"no version before v{before} passed its gate without being rolled back; name one with --to")


def rollback_model(model: dict[str, Any], to: int | None) -> Change:
    name, _ = _meta(model)
    current = ((model.get("status") or {}).get("productionVersion"))
    if to is None:
        if current is None:
            raise Refused(f"Model {name} has no production version to roll back from; name one with --to")
        to = previous_version(model, int(current))
    change = promote(model, to)
    return Change(change.kind, change.name, change.namespace, change.patch,
                  f"Model {name}: production rolls back from v{current} to v{to}", change.note)


def pin_deployment(dep: dict[str, Any], model: dict[str, Any] | None, number: int | None) -> Change:
    name, ns = _meta(dep)
    if number is None:
        return Change("Deployment", name, ns, {"spec": {"modelRef": {"version": None}}},
                      f"Deployment {name}: follows its Model's production version again")
    if model is not None:
        _registered(model, number)
    return Change("Deployment", name, ns, {"spec": {"modelRef": {"version": number}}},
                  f"Deployment {name}: serves v{number} (pinned; the Model's production no longer moves it)",
                  f"kubectl kultivar pin deployment {name} --unpin follows production again")


def _canary(dep: dict[str, Any]) -> int:
    status = dep.get("status") or {}
    canary = status.get("canaryVersion") or (status.get("rollout") or {}).get("version")
    if not canary:
        name, _ = _meta(dep)
        stable = status.get("stableVersion")
        raise Refused(f"Deployment {name} runs no canary" + (f" (v{stable} serves all traffic)" if stable else ""))
    return int(canary)


def pause(dep: dict[str, Any], paused: bool) -> Change:
    name, ns = _meta(dep)
    if paused:
        canary = _canary(dep)
        strategy = ((dep.get("spec") or {}).get("strategy") or {}).get("type", "Canary")
        if strategy != "Canary":
            raise Refused(f"Deployment {name} uses strategy {strategy}; only a canary can be paused")
        return Change("Deployment", name, ns, {"spec": {"strategy": {"canary": {"paused": True}}}},
                      f"Deployment {name}: the v{canary} canary holds its current step",
                      f"kubectl kultivar resume deployment {name} continues it")
    if not (((dep.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("paused"):
        raise Refused(f"Deployment {name}'s canary is not paused")
    return Change("Deployment", name, ns, {"spec": {"strategy": {"canary": {"paused": False}}}},
                  f"Deployment {name}: the canary continues its steps")


def abort(dep: dict[str, Any]) -> Change:
    """Stop the canary and keep serving stable: pin the Deployment to its stable version."""
    name, ns = _meta(dep)
    canary = _canary(dep)
    stable = (dep.get("status") or {}).get("stableVersion")
    if not stable:
        raise Refused(f"Deployment {name} has no stable version to return to")
    return Change("Deployment", name, ns, {"spec": {"modelRef": {"version": int(stable)}}},
                  f"Deployment {name}: the v{canary} canary stops; v{stable} takes all traffic (pinned)",
                  f"kubectl kultivar pin deployment {name} --unpin retries the canary of the Model's production")


def rollback_deployment(dep: dict[str, Any], model: dict[str, Any] | None, to: int | None) -> Change:
    """During a canary: abort it. Otherwise: serve an earlier version (the newest usable one, or --to)."""
    name, _ = _meta(dep)
    status = dep.get("status") or {}
    if to is None and (status.get("canaryVersion") or status.get("rollout")):
        return abort(dep)
    stable = status.get("stableVersion")
    if to is None:
        if stable is None or model is None:
            raise Refused(f"Deployment {name} serves no version yet; name one with --to")
        to = previous_version(model, int(stable))
    change = pin_deployment(dep, model, to)
    return Change(change.kind, change.name, change.namespace, change.patch,
                  f"Deployment {name}: rolls back from v{stable} to v{to} (through its canary steps)", change.note)


def retrain(model: dict[str, Any], run: dict[str, Any] | None, now: datetime, same_data: bool = False,
            name: str | None = None) -> dict[str, Any]:
    """A new TrainingRun like the one behind production (or the newest version), on the latest valid data."""
    model_name, ns = _meta(model)
    if run is None:
        raise Refused(f"Model {model_name} has no TrainingRun to repeat (none registered, or it was deleted); "
                      f"create one: see examples/ for a TrainingRun manifest")
    spec = dict(run.get("spec") or {})
    data = dict(spec.get("datasetRef") or {})
    if not same_data:
        data.pop("digest", None)  # the latest valid version of the Dataset: retraining is for newer data
    spec.update(datasetRef=data, trigger="manual")
    run_name = name or f"{model_name}-retrain-{now.strftime('%Y%m%d-%H%M%S')}"
    return {
        "apiVersion": API_VERSION, "kind": "TrainingRun",
        "metadata": {"name": run_name, "namespace": ns,
                     "annotations": {RETRAINED_FROM: run["metadata"]["name"]}},
        "spec": spec,
    }


def run_to_repeat(model: dict[str, Any]) -> str | None:
    """The TrainingRun behind the production version, else behind the newest version."""
    status = model.get("status") or {}
    records = versions(model)
    prod = next((v for v in records if v["version"] == status.get("productionVersion")), None)
    chosen = prod or (records[-1] if records else None)
    return (chosen or {}).get("trainingRun")


def as_yaml(change: Change) -> str:
    """The change as a partial manifest to merge into the file in Git (null: remove the field)."""
    doc = {"apiVersion": API_VERSION, "kind": change.kind,
           "metadata": {"name": change.name, "namespace": change.namespace}, **change.patch}
    header = f"# {change.summary}\n# Merge into the {change.kind}'s manifest (null: delete the field) and commit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)
