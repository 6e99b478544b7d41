"""Types shared by all four kinds: conditions, references, resources, durations."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

GROUP = "kultivar.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``90s``, ``5m`` or ``1h30m`` (plus ``d`` for days)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 30s, 5m, 1h30m, 1d")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=32),
]

# Kubernetes quantities ("500m", "2Gi", 1) are int-or-string in the API.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]

# Arbitrary JSON values (estimator hyperparameters, search spaces) are kept as the user wrote them.
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]


class KModel(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields rejected, enums as plain values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: aliases, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(KModel):
    """A condition per the Kubernetes API conventions (metav1.Condition)."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. Ready.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(
        description="A CamelCase, machine-readable reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(default="", description="A human-readable message: what happened and what to do next.",
                         max_length=32768)
    lastTransitionTime: str = Field(
        description="When the condition last changed status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observedGeneration: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was computed from."
    )


CONDITIONS_FIELD: Any = Field(
    default_factory=list,
    description="Observations of the object's state. Ready summarises whether the object does its job now.",
    json_schema_extra={
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "maxItems": 16,
    },
)


class LocalObjectReference(KModel):
    """A reference to another object in the same namespace."""

    name: ObjectName = Field(description="Name of the referenced object in the same namespace.")


class SecretReference(KModel):
    """A Secret in the same namespace whose keys become environment variables (credentials)."""

    name: ObjectName = Field(description="Name of the Secret in the same namespace.")


class ResourceRequirements(KModel):
    """Compute resources for the pods Kultivar creates (same shape as a container's resources)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources, e.g. {cpu: 2, memory: 4Gi}."
    )


class ArtifactRef(KModel):
    """A file in the artifact store, with its content digest."""

    uri: str = Field(description="fsspec URI of the artifact in the store.")
    digest: str = Field(description="sha256 of the file content, as sha256:<hex>.", pattern=r"^sha256:[a-f0-9]{64}$")
    sizeBytes: int | None = Field(default=None, ge=0, description="Size of the file in bytes.")


Metrics = dict[str, float]
