"""Generate CustomResourceDefinitions from the pydantic models.

The models are the single source of truth. Pydantic emits JSON Schema (draft 2020-12); Kubernetes wants a
*structural* OpenAPI v3 schema: no $ref, every node typed, no additionalProperties: false next to
properties, nullable unions collapsed to the type itself, and boolean exclusive bounds.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from kultivar.api.common import GROUP, VERSION
from kultivar.api.resources import CATEGORY, KINDS, Kind

_DROP_KEYS = {"title"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs and turn JSON Schema idioms into structural OpenAPI v3."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        extra_rules = node.pop("x-kubernetes-validations", [])
        target.update(node)  # field-level description/default win over the class docstring
        if extra_rules:
            target["x-kubernetes-validations"] = target.get("x-kubernetes-validations", []) + extra_rules
        node = target
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:  # Optional[X] -> X; absence already means "unset"
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = _resolve(options[0], defs)
            rules = merged.get("x-kubernetes-validations", []) + rest.pop("x-kubernetes-validations", [])
            merged.update(rest)
            if rules:
                merged["x-kubernetes-validations"] = rules
            node = merged
    if node.get("default", 0) is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(v, defs) for name, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        elif key == "anyOf":
            out[key] = [_resolve(v, defs) for v in value]
        else:
            out[key] = value
    if out.get("additionalProperties") is False or (
        out.get("additionalProperties") is True and "properties" in out
    ):
        del out["additionalProperties"]
    if out.get("additionalProperties") is True:  # free-form object
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), (int, float)) and not isinstance(out.get(bound), bool):
            out[plain] = out[bound]
            out[bound] = True
    if out.get("type") == "array" and "minLength" in out:
        out["minItems"] = out.pop("minLength")
    if "default" in out and isinstance(out["default"], (dict, list)):
        # Object defaults would be written into every stored object; nested scalar defaults suffice.
        del out["default"]
    if "properties" in out:
        out.setdefault("type", "object")
    # type and description first: the generated YAML is read by people too.
    lead = {k: out.pop(k) for k in ("type", "description") if k in out}
    return {**lead, **out}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of a model, with descriptions on every field."""
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    defs = raw.pop("$defs", {})
    return _resolve(raw, defs)


def _columns(kind: Kind) -> list[dict[str, Any]]:
    cols = []
    for c in kind.columns:
        col: dict[str, Any] = {"name": c.name, "type": c.type, "jsonPath": c.json_path}
        if c.description:
            col["description"] = c.description
        if c.priority:
            col["priority"] = c.priority
        cols.append(col)
    return cols


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = openapi_schema(kind.spec)
    spec_schema["description"] = f"Desired state of the {kind.kind}."
    status_schema = openapi_schema(kind.status)
    status_schema["description"] = f"Observed state of the {kind.kind}, written by Kultivar."
    root = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of the object: kultivar.io/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind of the object: {kind.kind}."},
            "metadata": {"type": "object"},  # the API server allows nothing more here
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {kind.max_name_length}",
                "message": f"metadata.name must be at most {kind.max_name_length} characters: Kultivar derives "
                           "the names of the objects it creates from it",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "kultivar", "app.kubernetes.io/part-of": "kultivar"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _columns(kind),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(k) for k in KINDS]


HEADER = "# Generated by `make crds` from the models in operator/kultivar/api. Do not edit.\n"


def render_yaml(doc: dict[str, Any]) -> str:
    import yaml

    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def render_chart_template(doc: dict[str, Any]) -> str:
    """The same CRD as a Helm template: optional, and kept on uninstall so no user data is lost."""
    import yaml

    doc = copy.deepcopy(doc)
    doc["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
    body = yaml.safe_dump(doc, sort_keys=False, width=120)
    comment = HEADER.replace("#", "{{/*", 1).rstrip("\n") + " */}}\n"
    return comment + "{{- if .Values.crds.install }}\n" + body + "{{- end }}\n"


def generated_files() -> dict[str, str]:
    """Every file `make crds` writes, keyed by path relative to the repository root."""
    files = {}
    for kind, doc in zip(KINDS, all_crds(), strict=True):
        files[f"crds/{kind.crd_name}.yaml"] = render_yaml(doc)
        files[f"charts/kultivar/templates/crds/{kind.crd_name}.yaml"] = render_chart_template(doc)
    return files


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Write the CRDs generated from the models.")
    parser.add_argument("--root", default=".", help="repository root")
    parser.add_argument("--check", action="store_true", help="fail if the files on disk differ")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in generated_files().items():
        path = Path(args.root) / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print("stale generated files (run `make crds`):", *stale, sep="\n  ")
        return 1
    for rel in stale:
        print("wrote", rel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
