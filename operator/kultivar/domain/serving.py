"""Deployment decisions: which Model version to serve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kultivar.api.deployment import DeploymentSpec
from kultivar.domain.plan import Plan, blocked


@dataclass(frozen=True)
class DeploymentObserved:
    obj: dict[str, Any]
    model: dict[str, Any] | None


def target_version(spec: DeploymentSpec, model: dict[str, Any]) -> tuple[int | None, str, str]:
    """The version to serve, or None with a reason and message."""
    status = model.get("status") or {}
    known = {v["version"] for v in status.get("versions") or []}
    name = spec.modelRef.name
    if spec.modelRef.version is not None:
        if spec.modelRef.version not in known:
            return None, "VersionNotFound", (
                f"Model {name!r} has no version {spec.modelRef.version} (registered: "
                f"{', '.join(f'v{n}' for n in sorted(known)) or 'none'}); fix spec.modelRef.version")
        return spec.modelRef.version, "", ""
    if not status.get("productionVersion"):
        return None, "NoProductionVersion", f"Model {name!r} has no production version yet; train one and it is " \
                                            "served automatically"
    return int(status["productionVersion"]), "", ""


def plan_deployment(observed: DeploymentObserved) -> Plan:
    obj = observed.obj
    try:
        spec = DeploymentSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        return blocked("InvalidSpec", f"spec is invalid: {e.errors()[0].get('msg')}; fix the manifest")
    if observed.model is None:
        return blocked("ModelNotFound", f"Model {spec.modelRef.name!r} does not exist in namespace "
                                        f"{obj['metadata']['namespace']}; create it or fix spec.modelRef")
    version, reason, message = target_version(spec, observed.model)
    if version is None:
        return blocked(reason, message)
    return blocked("ServingUnavailable", f"v{version} of Model {spec.modelRef.name!r} is resolved; this build of "
                                         "Kultivar does not serve models yet")
