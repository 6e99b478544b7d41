"""Types shared by all four kinds: conditions, references, resources, durations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

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


def cel_list(values: Any) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=32),
]

# The seconds a duration stands for, in CEL: CEL's duration() knows no "d", so the parts are summed by hand,
# exactly as parse_duration does. Every part matches the pattern, so double() never sees anything but a number.
DURATION_SECONDS_CEL = (
    "self.findAll('[0-9]+([.][0-9]+)?(ms|s|m|h|d)').map(p, p.endsWith('ms') "
    "? double(p.substring(0, size(p) - 2)) / 1000.0 "
    ": double(p.substring(0, size(p) - 1)) * (p.endsWith('s') ? 1.0 : p.endsWith('m') ? 60.0 "
    ": p.endsWith('h') ? 3600.0 : 86400.0)).sum()"
)


@dataclass(frozen=True)
class DurationFloor:
    """A smallest sensible Duration, refused below it by the API server (CEL) and by the models alike.

    Use as ``Annotated[Duration, floor.validator] = Field(..., json_schema_extra=floor.schema)``.
    """

    minimum: str
    why: str

    @property
    def message(self) -> str:
        return f"must be at least {self.minimum}: {self.why}"

    @property
    def schema(self) -> dict[str, Any]:
        seconds = parse_duration(self.minimum).total_seconds()
        return {"x-kubernetes-validations": [{"rule": f"{DURATION_SECONDS_CEL} >= {seconds!r}",
                                              "message": self.message}]}

    @property
    def validator(self) -> AfterValidator:
        def check(value: str) -> str:
            if parse_duration(value) < parse_duration(self.minimum):
                raise ValueError(f"{value!r} {self.message}")
            return value
        return AfterValidator(check)


# Kubernetes quantities ("500m", "2Gi", 1) are int-or-string in the API; the same grammar as resource.Quantity.
QUANTITY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
            "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
            "E": Decimal("1e18")}
QUANTITY_MESSAGE = "must be a Kubernetes quantity, e.g. 500m, 2, 1.5Gi"


def parse_quantity(value: int | str) -> Decimal:
    """The amount a Kubernetes quantity stands for (cpu in cores, memory in bytes)."""
    text = str(value)
    if not re.fullmatch(QUANTITY_PATTERN, text):
        raise ValueError(f"{text!r} {QUANTITY_MESSAGE}")
    match = re.fullmatch(r"([+-]?[0-9.]+)(.*)", text)
    assert match is not None  # the pattern above guarantees it
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the pattern admits only decimal numbers
        raise ValueError(f"{text!r} {QUANTITY_MESSAGE}") from e
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return amount * Decimal(10) ** int(suffix[1:])
    return amount * _DECIMAL[suffix]


def _check_quantity(value: int | str) -> int | str:
    parse_quantity(value)
    return value


Quantity = Annotated[
    int | str,
    # maxLength bounds the CEL cost estimate of the rule (it applies to the string form only).
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "maxLength": 64,
                    "x-kubernetes-validations": [{"rule": "isQuantity(string(self))", "message": QUANTITY_MESSAGE}]}),
    AfterValidator(_check_quantity),
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


REQUEST_ABOVE_LIMIT = "a request must not exceed its limit (requests.cpu <= limits.cpu, and so on)"


class ResourceRequirements(KModel):
    """Compute resources for the pods Kultivar creates (same shape as a container's resources)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}.",
        json_schema_extra={"maxProperties": 16},
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources, e.g. {cpu: 2, memory: 4Gi}; no request may exceed its limit.",
        json_schema_extra={"maxProperties": 16},
    )

    # Malformed quantities are refused by their own rule; this one only compares well-formed pairs.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) "
                 "|| !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) "
                 "|| quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
         "message": REQUEST_ABOVE_LIMIT, "fieldPath": ".requests"},
    ]})

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, request in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"requests.{name} {request} exceeds limits.{name} {limit}: {REQUEST_ABOVE_LIMIT}")
        return self


class ArtifactRef(KModel):
    """A file in the artifact store, with its content digest."""

    uri: str = Field(description="fsspec URI of the artifact in the store.")
    digest: str = Field(description="sha256 of the file content, as sha256:<hex>.", pattern=r"^sha256:[a-f0-9]{64}$")
    sizeBytes: int | None = Field(default=None, ge=0, description="Size of the file in bytes.")


Metrics = dict[str, float]
