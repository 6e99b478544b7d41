"""No field is accepted and then ignored: every field of every spec model is read somewhere outside api/.

A crude but useful net: each spec field name must appear in the operator's or the pods' code (as an attribute
or a key). A field that only the schema knows is either dead or a promise the product does not keep.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from kultivar.api.resources import KINDS

CODE = Path(__file__).resolve().parents[2] / "operator" / "kultivar"
# Fields inside a block the operator copies whole (`.wire()`) into a child object, where Kubernetes reads them.
COPIED_WHOLE = {
    "limits": "resources are copied whole into the pod's container",
    "sectionName": "gateway.parentRefs are copied whole into the HTTPRoute",
}


def _spec_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        for arg in _models_in(field.annotation):
            names |= _spec_fields(arg, seen)
    return names


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_every_spec_field_is_read_outside_the_api_package() -> None:
    code = "\n".join(p.read_text() for p in CODE.rglob("*.py") if "api" not in p.relative_to(CODE).parts[:1])
    unread = []
    for kind in KINDS:
        for name in sorted(_spec_fields(kind.spec, set())):
            if name not in COPIED_WHOLE and not re.search(rf"""(\.{name}\b|["']{name}["'])""", code):
                unread.append(f"{kind.kind}: {name}")
    assert not unread, f"spec fields nothing reads (implement them or remove them): {unread}"


def test_test_modules_have_unique_basenames() -> None:
    # The test directories are not packages, so pytest imports modules by basename: two test files with the same
    # name in different tiers break collection of the whole run (`make test` collects unit and integration at once).
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
