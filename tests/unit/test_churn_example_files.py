"""examples/churn/ stays true: valid resources, a data file its generator reproduces and its Dataset accepts, and
the README's request body accepted by the server's parser. (tests/integration/test_churn_example.py trains it.)"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from kultivar.api.dataset import DatasetSpec
from kultivar.api.resources import KINDS
from kultivar.serving.payload import FeatureSpec, parse_v2
from kultivar.workloads.data import load_source
from kultivar.workloads.validation import validate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn"


def _docs() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for file in sorted(EXAMPLE.glob("*.yaml")) for doc in yaml.safe_load_all(file.read_text())}


def test_resources_are_complete_and_valid() -> None:
    docs = _docs()
    assert set(docs) == {k.kind for k in KINDS}
    for kind in KINDS:
        doc = docs[kind.kind]
        assert doc["apiVersion"] == kind.api_version and "namespace" not in doc["metadata"]
        kind.spec.model_validate(doc["spec"])
    assert docs["TrainingRun"]["spec"]["datasetRef"]["name"] == docs["Dataset"]["metadata"]["name"] == "churn"
    assert docs["Deployment"]["spec"]["modelRef"]["name"] == docs["Model"]["metadata"]["name"] == "churn"
    assert docs["Dataset"]["spec"]["source"]["uri"] == "pvc://kultivar-artifacts/data/churn.csv"
    types = {f["type"] for f in docs["Dataset"]["spec"]["schema"]["features"]}
    assert types == {"numeric", "categorical", "boolean"}


def test_the_generator_reproduces_the_committed_file(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_churn_data", EXAMPLE / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "churn.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=module.COLUMNS)
        writer.writeheader()
        writer.writerows(module.rows(2000, 7))
    assert out.read_bytes() == (EXAMPLE / "churn.csv").read_bytes()
    assert (EXAMPLE / "churn.csv").stat().st_size < 300_000


@pytest.fixture(scope="module")
def report() -> Any:
    spec = DatasetSpec.model_validate(_docs()["Dataset"]["spec"])
    source = spec.source.model_copy(update={"uri": str(EXAMPLE / "churn.csv")})
    return validate(load_source(source, spec.schema_), spec.schema_, spec.checks)


def test_the_dataset_accepts_the_file_with_its_missing_values(report: Any) -> None:
    assert report.ok, report.message()
    assert report.rows == 2000
    missing = {name for name, share in report.missing.items() if share > 0}
    assert missing == {"tenure_months", "payment_method", "senior_citizen"}
    labels = set(report.frame["churn"].astype(str))
    assert labels == {"churned", "stayed"}


def test_the_readme_request_parses_with_missing_values() -> None:
    features = [FeatureSpec(f["name"], f["type"]) for f in _docs()["Dataset"]["spec"]["schema"]["features"]]
    request = parse_v2((EXAMPLE / "request.json").read_bytes(), features, "churn")
    assert request.rows.count == 2
    columns = dict(zip([f.name for f in features], request.rows.columns, strict=True))
    assert list(columns["contract"]) == ["month-to-month", "two-year"]
    assert columns["tenure_months"][1] != columns["tenure_months"][1]  # null arrives as NaN: imputed by the model
    assert columns["paperless_billing"].tolist() == [1.0, 0.0]
