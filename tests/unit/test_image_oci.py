"""hack/images/oci.py: the Python steps of the image build (no Docker), tested on small synthetic layouts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("kultivar_hack_oci", ROOT / "hack" / "images" / "oci.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oci = _load()


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layout(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    layout = tmp_path / "oci"
    layer, config = _put(layout, b"layer"), _put(layout, b"{}")
    manifest = _put(layout, json.dumps({"config": config, "layers": [layer]}).encode())
    orphan = _put(layout, b"left over from an older tag")
    tagged = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
              "annotations": {"org.opencontainers.image.ref.name": "app-1"}}
    (layout / "index.json").write_text(json.dumps({"manifests": [tagged]}))
    return layout, tagged, orphan


def test_requirements_expand_self_referencing_extras() -> None:
    pyproject = ROOT / "pyproject.toml"
    serve = oci.requirements(str(pyproject), "serve")
    assert any(r.startswith("uvicorn") for r in serve) and not any(r.startswith("kultivar") for r in serve)
    test = oci.requirements(str(pyproject), "test")
    assert set(serve) <= set(test)  # test includes kultivar[serve]
    assert oci.requirements(str(pyproject), "core") == oci._project(str(pyproject))["project"]["dependencies"]
    assert oci.version(str(pyproject)) and oci.build_requires(str(pyproject))


def test_gc_deletes_only_unreachable_blobs(tmp_path: Path) -> None:
    layout, tagged, orphan = _layout(tmp_path)
    oci.gc(str(layout))
    left = {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}
    assert orphan["digest"] not in left and tagged["digest"] in left and len(left) == 3


def test_export_writes_a_one_image_layout_named_for_containerd(tmp_path: Path) -> None:
    layout, tagged, orphan = _layout(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    digest = oci.export(str(layout), "app-1", "docker.io/library/kultivar-app:0.1.0", "0.1.0", str(out))
    assert digest == tagged["digest"]
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/kultivar-app:0.1.0"
    assert not (out / "blobs" / "sha256" / orphan["digest"].split(":")[1]).exists()
    with pytest.raises(StopIteration):
        oci.export(str(layout), "no-such-tag", "r", "s", str(out))


def test_sidecar_round_trip_and_a_clean_upper_dir(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(oci.sidecar("kultivar-app", "ref", "sha256:1", "key", "/a.tar"))
    assert oci.sidecar_read(str(path), "digest") == "sha256:1"
    (tmp_path / "upper" / "etc").mkdir(parents=True)
    (tmp_path / "upper" / "etc" / "new").write_text("added")
    assert oci.upper_problems(str(tmp_path / "upper")) == []
