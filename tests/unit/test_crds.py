"""The committed CRDs are exactly what the models generate, and they follow the API conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kultivar.api import crdgen
from kultivar.api.resources import KINDS

ROOT = Path(__file__).resolve().parents[2]
# Short names of built-in resources and popular CRDs that ours must not shadow.
TAKEN_SHORT_NAMES = {
    "ds", "deploy", "rs", "po", "svc", "cm", "ns", "no", "pv", "pvc", "sa", "ep", "ev", "ing", "netpol", "pdb",
    "sts", "hpa", "cj", "crd", "pc", "sc", "csr", "limits", "quota", "rc", "tr", "isvc", "ksvc", "wf", "ro",
    "app", "hr", "ks", "sm", "pm", "km", "mdl", "exp", "tj", "pj", "nb",
}


def test_committed_files_match_models() -> None:
    stale = [rel for rel, text in crdgen.generated_files().items()
             if not (ROOT / rel).exists() or (ROOT / rel).read_text() != text]
    assert not stale, f"run `make crds`: these files differ from the models: {stale}"


def _walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_documented(kind) -> None:
    root = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            continue
        if path.endswith("[]") and node.get("x-kubernetes-preserve-unknown-fields"):
            continue  # list items of any JSON type (search candidates)
        assert "type" in node, f"{kind.kind}{path} has no type"
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if path.count(".") and path != ".metadata" and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{kind.kind}{path} has no description (kubectl explain)"
        if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata", path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_names_columns_and_conventions(kind) -> None:
    doc = crdgen.crd(kind)
    names = doc["spec"]["names"]
    assert names["categories"] == ["kultivar"]
    assert not set(names["shortNames"]) & TAKEN_SHORT_NAMES
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Reason", "Age"} <= columns
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert "observedGeneration" in status
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    cond_props = conditions["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= set(cond_props)
    assert "phase" not in status


def test_short_names_are_unique_across_kinds() -> None:
    short = [s for k in KINDS for s in k.short_names]
    assert len(short) == len(set(short))


def test_chart_templates_keep_crds_and_are_switchable() -> None:
    for rel, text in crdgen.generated_files().items():
        if rel.startswith("charts/"):
            assert "{{- if .Values.crds.install }}" in text
            body = text.split("\n", 2)[2].rsplit("{{- end }}", 1)[0]
            doc = yaml.safe_load(body)
            assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
