"""The iris example's upstream data: the original rows, the larger flowers landed at drift, and the demo's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kultivar.api.dataset import DatasetSpec
from kultivar.devcluster import demo, iris_data
from kultivar.workloads.data import load_source

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris" / "dataset.yaml"


def example_spec() -> DatasetSpec:
    return DatasetSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])


def test_the_example_reads_the_file_the_upstream_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = example_spec()
    assert spec.source.uri == iris_data.SOURCE_URI
    # The validation pod mounts the claim at <pvc root>/<claim>; the local store directory is what the claim holds.
    monkeypatch.setenv("KULTIVAR_PVC_ROOT", str(tmp_path))
    store = tmp_path / iris_data.CLAIM
    iris_data.write_local(store, iris_data.original())
    frame = load_source(spec.source, spec.schema_)
    assert len(frame) == 150
    assert list(frame.columns) == [f.name for f in spec.schema_.features] + [spec.schema_.target]
    iris_data.write_local(store, iris_data.refreshed())  # the upstream replaces the file: no staging file is left
    assert len(load_source(spec.source, spec.schema_)) == 150 + 150 * iris_data.COPIES
    assert sorted(p.name for p in (store / "sources").iterdir()) == ["iris.csv"]


def test_the_larger_flowers_are_real_flowers_scaled_up_keeping_their_species() -> None:
    base, larger = iris_data.original(), iris_data.larger()
    assert len(larger) == iris_data.COPIES * len(base)
    features = iris_data.FEATURES
    for copy in range(iris_data.COPIES):
        part = larger.iloc[copy * len(base):(copy + 1) * len(base)].reset_index(drop=True)
        assert (part[iris_data.TARGET] == base[iris_data.TARGET]).all()
        ratio = part[features].to_numpy() / base[features].to_numpy()
        # SCALE with a few percent of noise (and the rounding to a tenth of a centimetre on the smallest petals)
        assert np.median(ratio) == pytest.approx(iris_data.SCALE, rel=0.02)
        assert np.all(np.abs(ratio - iris_data.SCALE) < 0.6)
    assert (larger[features].mean() > 1.6 * base[features].mean()).all()
    refreshed = iris_data.refreshed()  # appended: the original rows are unchanged, first, and it is reproducible
    assert refreshed.iloc[:len(base)].equals(base)
    assert refreshed.equals(iris_data.refreshed())


def test_a_model_trained_on_the_refreshed_data_beats_v1_by_a_real_margin_on_the_same_rows() -> None:
    """The demo's v2 must win on merit: the same estimator and split as examples/iris/trainingrun.yaml."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    run = yaml.safe_load((EXAMPLE.parent / "trainingrun.yaml").read_text())["spec"]
    test_size, seed = run["evaluation"]["testFraction"], run["evaluation"]["seed"]

    def fit(frame: Any) -> Any:
        rows = np.arange(len(frame))
        train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=frame["species"])
        model = make_pipeline(StandardScaler(), LogisticRegression(**run["estimator"]["params"]))
        model.fit(frame.iloc[train][iris_data.FEATURES], frame.iloc[train]["species"])
        return model, frame.iloc[test]

    v1, _ = fit(iris_data.original())
    v2, held_out = fit(iris_data.refreshed())
    x, y = held_out[iris_data.FEATURES], held_out["species"]
    assert v2.score(x, y) >= 0.9  # the example's gate minimum
    assert v2.score(x, y) - v1.score(x, y) >= 0.15
    samples = demo.SAMPLES + demo.LARGER_SAMPLES
    assert list(v2.predict(pd.DataFrame(samples, columns=iris_data.FEATURES))) == [0, 1, 2, 0, 1, 2]


class Recorder(demo.Progress):
    def __init__(self) -> None:
        super().__init__(interactive=False)
        self.lines: list[str] = []

    def done(self, message: str) -> None:
        self.lines.append(message)

    def step(self, message: str) -> None:
        self.lines.append(message)


def loop() -> tuple[demo.Loop, Recorder]:
    progress = Recorder()
    return demo.Loop(api=None, kubeconfig=Path("/dev/null"), progress=progress, timeout=1), progress  # type: ignore[arg-type]


def test_the_demo_reports_both_versions_on_the_same_rows_with_the_interval() -> None:
    model = {"status": {"versions": [
        {"version": 1, "metric": "accuracy", "metrics": {"accuracy": 0.9737}, "datasetDigest": "sha256:" + "a" * 64},
        {"version": 2, "metric": "accuracy", "metrics": {"accuracy": 0.9558}, "datasetDigest": "sha256:" + "b" * 64,
         "gate": {"passed": True, "reason": "Promoted", "message": "beats v1"},
         "evaluation": {"metric": "accuracy", "rows": 113, "dataDigest": "sha256:" + "b" * 64,
                        "candidate": {"accuracy": 0.9558},
                        "production": {"version": 1, "metrics": {"accuracy": 0.7522}},
                        "interval": {"low": 0.1239, "high": 0.2832, "confidence": 0.95}}},
    ]}}
    runner, progress = loop()
    runner.comparison(model, 2)
    line = progress.lines[0]
    assert line.startswith("accuracy on the same 113 held-out rows of sha256:bbbbbbbbbbbb...: v2 0.956, v1 0.752 "
                           "(+0.204), 95% interval [+0.124, +0.283]")
    from tests.e2e.test_demo import SAME_ROWS  # the e2e test reads exactly this line

    match = SAME_ROWS.search(line)
    assert match and match[2] == "0.956" and match[5] == "+0.124"
    assert progress.lines[1] == "  the gate: Promoted: beats v1"


def test_the_demo_reports_own_split_scores_when_the_record_has_no_evaluation() -> None:
    model = {"status": {"versions": [
        {"version": 1, "metric": "accuracy", "metrics": {"accuracy": 0.9737}, "datasetDigest": "sha256:" + "a" * 64},
        {"version": 2, "metric": "accuracy", "metrics": {"accuracy": 0.9558}, "datasetDigest": "sha256:" + "b" * 64,
         "evaluation": {"production": None}},
    ]}}
    runner, progress = loop()
    runner.comparison(model, 2)
    assert progress.lines == ["each version on its own held-out split: v1 accuracy 0.974 on sha256:aaaaaaaaaaaa..., "
                              "v2 accuracy 0.956 on sha256:bbbbbbbbbbbb..."]
