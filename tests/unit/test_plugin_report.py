"""`kubectl kultivar report`: the HTML page from recorded objects -- its sections, its charts, what it leaves out
when the objects do not hold it, and that nothing from the objects reaches the page unescaped."""

from __future__ import annotations

import argparse
import copy
import re
import sys
from html.parser import HTMLParser

import pytest

from kultivar.plugin import commands, facts, report
from plugin_objects import AB, CANARY, MODEL, NOW, SHADOWED, evaluated


class Page(HTMLParser):
    """What a browser would see: elements (with attributes), scripts and the text, after unescaping."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)
        elif self.tags[-1][0] == "script":
            self.scripts.append(data)

    def charts(self) -> list[str]:
        return [a["data-chart"] or "" for t, a in self.tags if t == "figure" and "data-chart" in a]

    def all_text(self) -> str:
        # pieces of text in separate elements are separated by a space, as a reader sees them in cells
        return re.sub(r" ([,.:;)])", r"\1", " ".join(" ".join(self.text).split()))


@pytest.fixture(scope="module")
def plain() -> str:
    """The page of the recorded Model and its two Deployments (drawn once: charts take a while)."""
    return report.build(MODEL, [CANARY, AB], now=NOW)


@pytest.fixture(scope="module")
def with_evaluation() -> str:
    """The page when v3 records its held-out evaluation and confusion matrix."""
    return report.build(evaluated(MODEL), [CANARY], now=NOW)


def test_page_has_the_card_versions_canary_and_drift_with_their_charts(plain) -> None:
    html = plain
    page = Page(html)
    text = page.all_text()
    assert page.charts() == ["metrics", "drift-0", "drift-history-0"]  # iris has drift checks; iris-ab none yet
    assert "Model card: v3 production iris canary 50% iris-ab variant 30%" in text  # production by default
    assert "Dataset iris-data digest " + MODEL["status"]["versions"][2]["datasetDigest"] in text
    assert "passed Improved accuracy=0.96 beats production v1 (0.9)" in text
    assert "v2 2026-05-01T12:00:00Z accuracy=0.7, f1=0.69 failed BelowMinimum" in text
    # the canary analysis per check, and the rollout it belongs to
    assert "Last analysis at 2026-05-01T12:09:00Z of the v3 canary: Pass, measured from pods" in text
    assert "prediction shift (PSI) 0.31 <= 0.25 FAIL" in text and "error rate 0.01 <= 0.05 ok" in text
    assert "v1: no drift, 0.25 of the features past PSI 0.2" in text
    assert ("Drift per feature over the last 6 judged windows of v1, from 2026-05-01T11:15:00Z to "
            "2026-05-01T12:05:00Z." in text)
    assert "Deployment iris-ab" in text and "No drift check recorded yet." in text
    # held-out evaluation: only what the record holds
    assert "holds no confusion matrix or residuals" in text
    assert html.count("<svg") == 3 and report.chart_count(html) == 3


def test_the_page_is_self_contained_and_runs_only_its_own_script(with_evaluation) -> None:
    html = with_evaluation
    page = Page(html)
    assert [t for t, _ in page.tags if t in ("link", "img", "iframe", "object", "embed")] == []
    assert all("src" not in a and "href" not in a for t, a in page.tags if t in ("script", "a", "use"))
    assert page.scripts == [report.SCRIPT]
    policy = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") ==
                  "Content-Security-Policy")
    assert policy == report.csp(report.SCRIPT) and "default-src 'none'" in policy and "unsafe-inline'" not in \
        policy.split("script-src")[1]
    assert re.search(r"https?://", html.replace("http://www.w3.org/", "")) is None  # SVG namespaces only
    assert 'id="report-status"' in html
    # several charts on one page: every id is unique and every reference inside an SVG finds its target
    ids = re.findall(r' id="([^"]*)"', html)
    assert len(ids) == len(set(ids))
    assert set(re.findall(r'(?:url\(#|href="#)([^)"]*)', html)) <= set(ids)


def test_evaluation_on_the_same_rows_and_the_confusion_matrix_when_recorded(with_evaluation) -> None:
    page = Page(with_evaluation)
    text = page.all_text()
    assert page.charts() == ["evaluation", "confusion", "metrics", "drift-0", "drift-history-0"]
    assert "36 rows of the run's held-out split" in text and "split seed 42" in text
    assert "accuracy of this version minus production: 0.06, 95% interval [0.01, 0.11]" in text
    assert "site north 20 0.95 0.9" in text
    assert "model card file file:///store/ml/iris/v3/card.md" in text
    assert "holds no confusion matrix" not in text
    # the matrix's counts and labels are drawn (as SVG text: fonttype none)
    confusion = page_chart(with_evaluation, "confusion")
    assert all(label in confusion for label in ("setosa", "versicolor", "virginica", "predicted", "actual"))


def page_chart(html: str, name: str) -> str:
    start = html.index(f'data-chart="{name}"')
    return html[start:html.index("</figure>", start)]


def test_residuals_are_drawn_for_a_regression_and_a_malformed_matrix_is_not() -> None:
    model = evaluated(MODEL)
    ev = model["status"]["versions"][2]["evaluation"]
    ev["confusionMatrix"] = {"labels": ["a", "b"], "counts": [[1, 2, 3]]}  # not square over its labels
    ev["residuals"] = {"edges": [-1.0, -0.5, 0.0, 0.5, 1.0], "counts": [2, 10, 11, 3]}
    charts = Page(report.build(model, [], now=NOW)).charts()
    assert "residuals" in charts and "confusion" not in charts


def test_what_the_training_job_left_out_is_named_instead_of_drawn() -> None:
    model = evaluated(MODEL)
    ev = model["status"]["versions"][2]["evaluation"]
    del ev["confusionMatrix"]
    ev["omitted"] = ["confusion matrix: 31 classes, more than the 20 a version records"]
    page = Page(report.build(model, [], now=NOW))
    text = page.all_text()
    assert "confusion" not in page.charts()
    assert "Not recorded: confusion matrix: 31 classes, more than the 20 a version records" in text
    assert "holds no confusion matrix" not in text


def test_drift_over_time_draws_each_feature_marks_drifted_windows_and_version_changes() -> None:
    dep = copy.deepcopy(CANARY)
    history = dep["status"]["drift"]["history"]
    for h in history[3:]:  # v2 took over from the fourth window on
        h["version"] = 2
    many = {"time": "2026-05-01T12:15:00Z", "version": 2, "samples": 400, "drifted": True,
            "features": [{"feature": f"f{i}", "psi": 0.9 - i / 100} for i in range(10)]}
    history.append(many)
    chart = page_chart(report.build(MODEL, [dep], now=NOW), "drift-history-0")
    # one line per feature, most drifted first, at most eight (the palette's colours); the rest named below
    legend = [f"f{i}" for i in range(8)]
    assert all(f">{name}<" in chart for name in legend) and ">petal_length<" not in chart
    assert "Not drawn (lower PSI): f8, f9, petal_length, petal_width, sepal_width." in chart
    assert "judged drifted" in chart and ">v2<" in chart and "threshold 0.2" in chart
    assert "of v1, v2, from 2026-05-01T11:15:00Z to 2026-05-01T12:15:00Z" in chart
    assert report.drift_series(list(reversed(history)))[0] == report.drift_series(history)[0]  # in time order


def test_without_judged_windows_drift_over_time_says_so() -> None:
    dep = copy.deepcopy(CANARY)
    del dep["status"]["drift"]["history"]
    page = Page(report.build(MODEL, [dep], now=NOW))
    assert "drift-history-0" not in page.charts()
    assert "No judged drift window recorded yet, so drift over time is not drawn" in page.all_text()


def test_rollbacks_are_shown_on_the_version_and_the_deployment() -> None:
    model, dep = copy.deepcopy(MODEL), copy.deepcopy(CANARY)
    model["status"]["versions"][1].update(rolledBack=True, rollbackReason="ErrorRate 0.2 > 0.05")
    dep["status"]["rolledBack"] = [2]
    dep["status"]["lastAnalysis"].update(verdict="Fail", failedCheck="ErrorRate")
    text = Page(report.build(model, [dep], now=NOW, version=2)).all_text()
    assert "Model card: v2 rolled back: ErrorRate 0.2 > 0.05" in text
    assert "of the v3 canary: Fail (ErrorRate)" in text and "Rolled back (not rolled out again): v2" in text


def test_the_shadow_version_is_marked_shadow_not_served() -> None:
    html = report.build(MODEL, [CANARY, SHADOWED], now=NOW)
    text = Page(html).all_text()
    assert "Model card: v3 production iris canary 50% iris-shadowed shadow 20% copied" in text
    assert html.count('class="badge shadow"') == 2  # the card and the versions table, on v3 only
    assert "iris-shadowed stable 100%" in text  # v1, which it copies requests from


def test_a_chosen_version_and_an_unknown_one() -> None:
    text = Page(report.build(MODEL, [CANARY], now=NOW, version=2)).all_text()
    assert "Model card: v2" in text and "failed BelowMinimum" in text
    with pytest.raises(facts.Refused, match=r"registered: v1, v2, v3"):
        report.build(MODEL, [], now=NOW, version=7)


def test_a_model_without_versions_or_deployments_says_so_and_draws_nothing() -> None:
    empty = {**copy.deepcopy(MODEL), "status": {}}
    html = report.build(empty, [], now=NOW)
    text = Page(html).all_text()
    assert "No version registered yet" in text and "No Deployment serves this Model." in text
    assert report.chart_count(html) == 0 and "<svg" not in html


EVIL = '<script>alert("x")</script>&amp;'


def test_every_string_from_the_objects_is_escaped() -> None:
    model = evaluated(MODEL)
    model["spec"]["description"] = EVIL
    v3 = model["status"]["versions"][2]
    v3["gate"]["message"] = EVIL
    v3["metrics"][EVIL] = 0.5
    v3["evaluation"]["confusionMatrix"]["labels"][0] = EVIL
    v3["evaluation"]["segments"][0]["value"] = EVIL
    model["status"]["history"] = [{"time": "2026-05-01T12:00:00Z", "type": "Promoted", "version": 3,
                                   "actor": EVIL, "reason": "$x^2$ costs $5"}]
    dep = copy.deepcopy(CANARY)
    dep["status"]["drift"]["topFeatures"].append({"feature": EVIL, "psi": 0.3})
    dep["status"]["drift"]["history"][-1]["features"].append({"feature": EVIL, "psi": 0.9})
    dep["status"]["lastAnalysis"]["message"] = EVIL
    html = report.build(model, [dep], now=NOW)
    page = Page(html)
    assert page.scripts == [report.SCRIPT]  # no injected script, in the page or in an SVG
    assert "<script>alert" not in html
    text = page.all_text()
    # shown as written, everywhere, including inside the charts (mathtext off: dollars stay dollars)
    assert text.count(EVIL) >= 7 and "$x^2$ costs $5" in text
    for chart in ("drift-0", "drift-history-0"):
        assert EVIL in page_chart(html, chart).replace("&lt;", "<").replace("&gt;", ">").replace(
            "&quot;", '"').replace("&#34;", '"').replace("&amp;", "&")


def test_without_matplotlib_the_command_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(facts.Refused, match=r"pip install 'kultivar\[report\]'"):
        report.require_charts()


def _report_args(**kw):
    return argparse.Namespace(**{"kind": "Model", "name": "iris", "version": None, "output": None, **kw})


def test_the_command_writes_the_page_and_names_it(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(commands.fetch, "get", lambda target, kind, name: MODEL)
    monkeypatch.setattr(commands.fetch, "deployments_of", lambda target, name: [CANARY])
    monkeypatch.chdir(tmp_path)
    assert commands.cmd_report(_report_args(), target=None) == 0  # type: ignore[arg-type]
    assert "Model iris v3" in (tmp_path / "iris-report.html").read_text()
    assert capsys.readouterr().err == "wrote iris-report.html (3 charts): open it in a browser\n"
    assert commands.cmd_report(_report_args(output="-", version=1), target=None) == 0  # type: ignore[arg-type]
    assert "Model card: v1" in Page(capsys.readouterr().out).all_text()
    with pytest.raises(facts.Refused, match=r"cannot write .*: .*choose another file with -o"):
        commands.cmd_report(_report_args(output=str(tmp_path / "no" / "such" / "dir.html")),
                            target=None)  # type: ignore[arg-type]


def test_report_arguments() -> None:
    args = commands.build_parser().parse_args(["report", "model", "iris", "v3", "-o", "r.html", "-n", "ml"])
    assert (args.kind, args.name, args.version, args.output, args.namespace) == ("Model", "iris", 3, "r.html", "ml")
    assert args.func is commands.cmd_report
