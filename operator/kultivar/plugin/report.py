"""`kubectl kultivar report`: one self-contained HTML page about a Model (pure: object dicts -> HTML string).

The page loads nothing: its charts are SVG drawn by matplotlib (its SVG backend: no display, no server) and
embedded inline, its style and its one script are inline, and its Content-Security-Policy forbids fetching
anything else, so it can be mailed, attached to a ticket or opened offline. Every string taken from the objects is
HTML-escaped here; text inside the charts is escaped by matplotlib's SVG writer (and never parsed as mathtext).

It shows what the objects hold, nothing more: a section whose data the objects do not record says so instead of
drawing something. The held-out evaluation's confusion matrix and residual histogram are drawn when the version
record has them (status.versions[].evaluation.confusionMatrix: {labels, counts} with rows the actual and columns
the predicted class, as sklearn.metrics.confusion_matrix; evaluation.residuals: {edges, counts}, a histogram of
actual - predicted; both recorded by the training Job, kultivar.workloads.diagnostics), and drift per feature over
time from the Deployment's bounded history of judged drift windows (status.drift.history).
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from itertools import pairwise
from typing import Any

from kultivar.domain.conditions import parse_time
from kultivar.domain.registry import LOWER_IS_BETTER
from kultivar.plugin.facts import Refused, condition, served, shadowed, short_digest, version_record, versions
from kultivar.plugin.render import ANALYSIS_DEFAULTS, CHECKS, fmt

INSTALL_HINT = "pip install 'kultivar[report]'"

# Colours a reader with the common colour-vision deficiencies can tell apart (Okabe & Ito's palette).
BLUE, ORANGE, GREEN, RED, GREY, PURPLE = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#999999", "#CC79A7"
SKY, YELLOW, BLACK = "#56B4E9", "#F0E442", "#000000"
# One line per feature in the drift-over-time chart: the palette's eight colours, so at most eight features (the
# ones that drifted most over the history); the rest are named in the caption.
FEATURE_COLOURS = (BLUE, ORANGE, GREEN, RED, PURPLE, SKY, BLACK, YELLOW)

# Runs on load: marks the page as rendered (and counts its charts) so a headless browser -- or a reader -- can
# tell a complete page from a broken one; any script error on the page is recorded beside it.
SCRIPT = """\
(function () {
  var status = document.getElementById("report-status");
  window.addEventListener("error", function (e) {
    status.setAttribute("data-errors", (status.getAttribute("data-errors") || "") + String(e.message) + ";");
  });
  window.addEventListener("load", function () {
    var charts = document.querySelectorAll("figure.chart svg").length;
    status.setAttribute("data-charts", String(charts));
    status.setAttribute("data-loaded", "true");
    status.textContent = "Rendered " + charts + " chart" + (charts === 1 ? "" : "s") + " in this browser.";
  });
})();
"""

STYLE = """\
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0;
       background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #ddd;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 20px 0 6px; }
.sub, .note, figcaption { color: #666; } .note { font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid #eee; vertical-align: top; }
th { font-weight: 600; color: #444; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 6px 0; }
dt { color: #666; } dd { margin: 0; }
.ok { color: #007a55; } .fail { color: #b33c00; font-weight: 600; } .warn { color: #8a6d00; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; background: #eee; }
.badge.production { background: #fff2c2; } .badge.canary { background: #f6dcec; } .badge.served { background: #d8ecf7; }
.badge.rolledback { background: #f9dcd0; } .badge.shadow { background: #fff; border: 1px dashed #0072B2; }
figure.chart { margin: 8px 0 16px; } figure.chart svg { max-width: 100%; height: auto; }
footer { margin-top: 32px; color: #888; font-size: 12px; }
"""


def require_charts() -> None:
    """Fail early, with the install command, when the optional chart library is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Refused(f"kubectl kultivar report draws its charts with matplotlib, which is not installed: "
                      f"{INSTALL_HINT}") from None


# --- charts -------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    # A bare Figure, not pyplot: no global state and no GUI backend; savefig(format="svg") uses the SVG backend.
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    # Text stays text (svg.fonttype none), laid out with matplotlib's font metrics but drawn with the browser's
    # font: a wider margin than the default keeps a label that comes out a little larger inside the figure.
    return Figure(figsize=(width, height), layout=ConstrainedLayoutEngine(w_pad=0.15, h_pad=0.1))


def _svg(fig: Any, name: str) -> str:
    """The figure as an inline <svg> element (its ids prefixed with the chart's name: unique on the page)."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"kultivar-{name}",
                                "text.parse_math": False}):
        # no metadata block: no date (reproducible pages) and no RDF boilerplate in every chart
        fig.savefig(out, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = out.getvalue()
    svg = text[text.index("<svg"):]
    # matplotlib numbers its groups figure_1, axes_1, ... in every chart: prefix every id and every reference
    # to one with the chart's name, so ids stay unique on a page with several charts
    return (svg.replace(' id="', f' id="{name}-').replace('url(#', f'url(#{name}-')
            .replace('xlink:href="#', f'xlink:href="#{name}-'))


def _chart(name: str, fig: Any, caption: str) -> str:
    # caption is HTML this module built (escaped parts); the SVG is matplotlib's (escaped text).
    return (f'<figure class="chart" data-chart="{escape(name)}">{_svg(fig, name)}'
            f"<figcaption>{caption}</figcaption></figure>")


def _style_axes(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def metrics_chart(model: dict[str, Any]) -> str | None:
    """Each metric of each version at the time it was registered: one panel per metric (their scales differ)."""
    records = [(r, parse_time(r.get("createdAt"))) for r in versions(model)]
    timed = sorted(((r, t) for r, t in records if t is not None and r.get("metrics")),
                   key=lambda rt: (rt[1], rt[0]["version"]))
    if not timed:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    names = sorted({m for r, _ in timed for m in r["metrics"]},
                   key=lambda m: (m != (versions(model)[-1].get("metric") or ""), m))  # headline first
    production = (model.get("status") or {}).get("productionVersion")
    fig = _figure(9.5, 1.1 + 1.7 * len(names))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        points = [(t, r["metrics"][name], r) for r, t in timed if name in r["metrics"]]
        ax.plot([p[0] for p in points], [p[1] for p in points], color=BLUE, linewidth=1.2, zorder=2)
        for t, value, r in points:
            passed = (r.get("gate") or {}).get("passed", True) and not r.get("rolledBack")
            ax.scatter([t], [value], zorder=3, s=80 if r["version"] == production else 36,
                       marker="*" if r["version"] == production else ("o" if passed else "X"),
                       color=ORANGE if r["version"] == production else (BLUE if passed else RED))
            ax.annotate(f"v{r['version']}", (t, value), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=8, color="#444")
        ax.set_ylabel(name + (" (lower is better)" if name in LOWER_IS_BETTER else ""), fontsize=9)
        ax.margins(x=0.08, y=0.25)
        _style_axes(ax)
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes[-1].set_xlabel("registered (UTC)", fontsize=9)
    return _chart("metrics", fig, "Held-out metrics of each version at its registration. "
                  "<span style='color:#E69F00'>&#9733;</span> production, &#9679; passed its gate, "
                  "<span style='color:#D55E00'>&#10006;</span> failed its gate or was rolled back.")


def evaluation_chart(record: dict[str, Any]) -> str | None:
    """Candidate, production (on the same rows) and the baseline, metric by metric."""
    evaluation = record.get("evaluation") or {}
    series = [("this version", evaluation.get("candidate") or record.get("metrics") or {}, BLUE)]
    prod = evaluation.get("production") or {}
    if prod.get("metrics"):
        series.append((f"production v{prod.get('version')}", prod["metrics"], ORANGE))
    if evaluation.get("baseline"):
        series.append(("baseline", evaluation["baseline"], GREY))
    if len(series) < 2:  # the metrics alone are in the card's table; a chart adds nothing
        return None
    import numpy as np

    names = sorted({m for _, values, _ in series for m in values})
    fig = _figure(9.5, 3.2)
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, values, colour) in enumerate(series):
        heights = [values.get(m, np.nan) for m in names]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label, color=colour)
        ax.bar_label(bars, labels=[fmt(h, 3) if h == h else "" for h in heights], fontsize=7, padding=2)
    ax.set_xticks(x, names)
    ax.legend(frameon=False, fontsize=8, ncols=len(series), loc="upper left", bbox_to_anchor=(0, 1.18))
    _style_axes(ax)
    rows = evaluation.get("rows")
    return _chart("evaluation", fig, f"Scored on the same {escape(fmt(rows))} held-out rows." if rows else
                  "Held-out metrics.")


def confusion_chart(matrix: dict[str, Any]) -> str | None:
    labels, counts = [str(label) for label in matrix.get("labels") or []], matrix.get("counts") or []
    if not labels or len(counts) != len(labels) or any(len(row) != len(labels) for row in counts):
        return None  # not a square matrix over its labels: nothing trustworthy to draw
    import numpy as np

    values = np.asarray(counts, dtype=float)
    side = min(7.0, 2.2 + 0.55 * len(labels))
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="rows")
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0, ha="right"
                  if len(labels) > 4 else "center")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    top = values.max() if values.size else 0
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "#222")
    return _chart("confusion", fig, "Confusion matrix of the held-out rows (rows: actual class).")


def residuals_chart(hist: dict[str, Any]) -> str | None:
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) != len(counts) + 1 or not counts:
        return None
    fig = _figure(9.5, 3.0)
    ax = fig.subplots()
    ax.stairs(counts, edges, fill=True, color=BLUE, alpha=0.8)
    ax.axvline(0.0, color="#444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("residual (actual - predicted)")
    ax.set_ylabel("rows")
    _style_axes(ax)
    return _chart("residuals", fig, "Residuals of the held-out rows.")


def drift_chart(dep: dict[str, Any], index: int) -> str | None:
    drift = (dep.get("status") or {}).get("drift") or {}
    features = sorted(drift.get("topFeatures") or [], key=lambda f: f.get("psi", 0.0))
    if not features:
        return None
    threshold = float(((dep.get("spec") or {}).get("monitoring") or {}).get("threshold", 0.2))
    fig = _figure(9.5, 1.0 + 0.32 * len(features))
    ax = fig.subplots()
    psi = [float(f.get("psi", 0.0)) for f in features]
    ax.barh([str(f.get("feature")) for f in features], psi, color=[RED if p > threshold else GREEN for p in psi])
    ax.axvline(threshold, color="#444", linewidth=1, linestyle="--")
    # above the plot, where no bar can cover it (x in data units, y in axes units)
    ax.annotate(f"threshold {fmt(threshold)}", (threshold, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(0, 3),
                textcoords="offset points", fontsize=8, ha="center", va="bottom", color="#444")
    ax.set_xlabel("PSI against the training profile")
    ax.set_xlim(0, max([*psi, threshold]) * 1.15)
    _style_axes(ax)
    return _chart(f"drift-{index}", fig, f"Drift per feature of v{escape(fmt(drift.get('version')))} "
                  f"at the check of {escape(str(drift.get('checkedAt', '-')))} "
                  f"({escape(fmt(drift.get('samples', 0)))} requests).")


def drift_series(history: list[dict[str, Any]]) -> tuple[list[tuple[datetime, dict[str, Any]]], list[str]]:
    """The judged windows in time order and the features to draw: those with the highest PSI over the history,
    at most one per colour."""
    timed = sorted(((t, h) for h in history if (t := parse_time(h.get("time"))) is not None), key=lambda th: th[0])
    peak: dict[str, float] = {}
    for _, h in timed:
        for f in h.get("features") or []:
            name = str(f.get("feature"))
            peak[name] = max(peak.get(name, 0.0), float(f.get("psi", 0.0)))
    features = sorted(peak, key=lambda name: (-peak[name], name))
    return timed, features


def drift_history_chart(dep: dict[str, Any], index: int) -> str | None:
    """PSI per feature at each judged window (a gap where a feature was not among that window's most drifted),
    the threshold, the windows judged drifted, and where the served version changed."""
    history = ((dep.get("status") or {}).get("drift") or {}).get("history") or []
    timed, features = drift_series(history)
    if not timed or not features:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    threshold = float(((dep.get("spec") or {}).get("monitoring") or {}).get("threshold", 0.2))
    drawn, left_out = features[:len(FEATURE_COLOURS)], features[len(FEATURE_COLOURS):]
    times = [t for t, _ in timed]
    fig = _figure(9.5, 3.6)
    ax = fig.subplots()
    for name, colour in zip(drawn, FEATURE_COLOURS, strict=False):
        values = [next((float(f.get("psi", 0.0)) for f in h.get("features") or [] if str(f.get("feature")) == name),
                       float("nan")) for _, h in timed]
        ax.plot(times, values, color=colour, linewidth=1.3, marker="o", markersize=3.5, label=name)
    ax.axhline(threshold, color="#444", linewidth=1, linestyle="--")
    ax.annotate(f"threshold {fmt(threshold)}", (0.0, threshold), xycoords=ax.get_yaxis_transform(), xytext=(3, 3),
                textcoords="offset points", fontsize=8, color="#444")
    drifted = [t for t, h in timed if h.get("drifted")]
    if drifted:  # along the top edge, where no line runs: the windows judged drifted
        ax.scatter(drifted, [1.0] * len(drifted), transform=ax.get_xaxis_transform(), marker="v", s=40, color=RED,
                   clip_on=False, zorder=4, label="judged drifted")
    for (_, before), (t, after) in pairwise(timed):
        if before.get("version") != after.get("version"):
            ax.axvline(t, color=GREY, linewidth=0.9, linestyle=":")
            # a blended transform takes plain numbers: the date as matplotlib's day number
            ax.annotate(f"v{fmt(after.get('version'))}", (date2num(t), 0.0), xycoords=ax.get_xaxis_transform(),
                        xytext=(3, 3), textcoords="offset points", fontsize=8, color="#444")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("PSI against the training profile", fontsize=9)
    ax.set_xlabel("judged (UTC)", fontsize=9)
    ax.set_ylim(bottom=0)
    # the axis spans every judged window, including those where none of the drawn features was among the top
    start, end = date2num(times[0]), date2num(times[-1])
    pad = max((end - start) * 0.04, 5 / 1440)  # at least five minutes either side of a single window
    ax.set_xlim(start - pad, end + pad)
    ax.legend(frameon=False, fontsize=8, ncols=min(5, len(drawn) + bool(drifted)), loc="upper left",
              bbox_to_anchor=(0, 1.22))
    _style_axes(ax)
    first, last = timed[0][1], timed[-1][1]
    checked = sorted({int(h["version"]) for _, h in timed if h.get("version") is not None})
    caption = (f"Drift per feature over the last {len(timed)} judged windows of "
               f"{escape(', '.join(f'v{v}' for v in checked))}, from {escape(str(first.get('time')))} to "
               f"{escape(str(last.get('time')))}.")
    if left_out:
        caption += f" Not drawn (lower PSI): {escape(', '.join(left_out))}."
    return _chart(f"drift-history-{index}", fig, caption)


# --- HTML ---------------------------------------------------------------------------------------------------


def _e(value: Any, digits: int = 4) -> str:
    return escape(fmt(value, digits))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of cells that are already HTML (each built with escape)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _gate(gate: dict[str, Any] | None) -> str:
    if not gate:
        return '<span class="note">-</span>'
    css, word = ("ok", "passed") if gate.get("passed") else ("fail", "failed")
    return (f'<span class="{css}">{word}</span> {escape(gate.get("reason", ""))}'
            + (f'<br><span class="note">{escape(gate["message"])}</span>' if gate.get("message") else ""))


def _digest(digest: str | None) -> str:
    return f'<code title="{escape(digest or "")}">{escape(short_digest(digest))}</code>'


def chosen(model: dict[str, Any], number: int | None) -> dict[str, Any] | None:
    """The version the card is about: the one asked for, else production, else the newest."""
    if number is not None:
        return version_record(model, number)
    records = versions(model)
    production = (model.get("status") or {}).get("productionVersion")
    return next((r for r in records if r["version"] == production), records[-1] if records else None)


def _shadow_badges(deployments: list[dict[str, Any]], number: int) -> list[str]:
    """The Deployments copying their requests to this version (status.shadow): it answers none of them."""
    return [f'<span class="badge shadow">{escape(d)} shadow {p}% copied'
            + ("" if state == "Running" else f" ({escape(state.lower())})") + "</span>"
            for d, state, p in shadowed(deployments).get(number, [])]


def card_section(model: dict[str, Any], record: dict[str, Any] | None, deployments: list[dict[str, Any]]) -> str:
    if record is None:
        return ("<h2>Model card</h2><p class='note'>No version registered yet: a TrainingRun with modelRef.name "
                f"{escape(model['metadata']['name'])} registers one when it succeeds.</p>")
    n = record["version"]
    status = model.get("status") or {}
    badges = []
    if status.get("productionVersion") == n:
        badges.append('<span class="badge production">production</span>')
    for dep, role, weight in served(deployments).get(n, []):
        badges.append(f'<span class="badge {"canary" if role == "canary" else "served"}">'
                      f"{escape(dep)} {escape(role)} {weight}%</span>")
    badges += _shadow_badges(deployments, n)
    if record.get("rolledBack"):
        badges.append(f'<span class="badge rolledback">rolled back: {escape(record.get("rollbackReason") or "")}'
                      "</span>")
    artifact = record.get("artifact") or {}
    rows = [
        ("registered", escape(record.get("createdAt", "-"))),
        ("trained by", f"TrainingRun <code>{escape(record.get('trainingRun', '-'))}</code>"
                       + (f" with image <code>{escape(record['image'])}</code>" if record.get("image") else "")),
        ("data", f"Dataset <code>{escape(record.get('dataset') or '-')}</code> digest "
                 f"<code>{escape(record.get('datasetDigest') or '-')}</code>"),
        ("model file", f"<code>{escape(artifact.get('uri', '-'))}</code> digest "
                       f"<code>{escape(artifact.get('digest', '-'))}</code>"),
        ("promotion gate", _gate(record.get("gate"))),
    ]
    if record.get("cardUri"):
        rows.append(("model card file", f"<code>{escape(record['cardUri'])}</code>"))
    headline = record.get("metric")
    metrics = "".join(f"<tr><td>{'<b>' if m == headline else ''}{escape(m)}{'</b>' if m == headline else ''}"
                      f'</td><td class="num">{_e(v)}</td></tr>'
                      for m, v in sorted((record.get("metrics") or {}).items()))
    description = (model.get("spec") or {}).get("description")
    return (f"<h2>Model card: v{n} {' '.join(badges)}</h2>"
            + (f"<p>{escape(description)}</p>" if description else "")
            + "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
            + (f"<h3>Held-out metrics</h3><table><tbody>{metrics}</tbody></table>" if metrics else ""))


def evaluation_section(record: dict[str, Any] | None) -> str:
    if record is None:
        return ""
    evaluation = record.get("evaluation") or {}
    parts = [f"<h2>Held-out evaluation of v{record['version']}</h2>"]
    if evaluation:
        source = ("a fixed holdout Dataset " + escape(evaluation.get("dataset") or "")
                  if evaluation.get("source") == "holdout" else "the run's held-out split")
        parts.append(f"<p>{_e(evaluation.get('rows'))} rows of {source} (data "
                     f"{_digest(evaluation.get('dataDigest'))}"
                     + (f", split seed {_e(evaluation['splitSeed'])}" if evaluation.get("splitSeed") is not None
                        else "") + ").</p>")
        interval = evaluation.get("interval")
        if interval:
            parts.append(f"<p>{escape(interval.get('metric', ''))} of this version minus "
                         f"{escape(interval.get('against', ''))}: {_e(interval.get('estimate'))}, "
                         f"{_e(100 * float(interval.get('confidence', 0)), 3)}% interval "
                         f"[{_e(interval.get('low'))}, {_e(interval.get('high'))}] "
                         f"<span class='note'>({escape(interval.get('method', ''))}, "
                         f"{_e(interval.get('resamples'))} resamples, seed {_e(interval.get('seed'))})</span></p>")
        if evaluation.get("productionError"):
            parts.append(f"<p class='fail'>Production could not be scored: "
                         f"{escape(evaluation['productionError'])}</p>")
    charts = [c for c in (evaluation_chart(record),
                          confusion_chart(evaluation["confusionMatrix"]) if evaluation.get("confusionMatrix") else None,
                          residuals_chart(evaluation["residuals"]) if evaluation.get("residuals") else None) if c]
    parts += charts
    segments = evaluation.get("segments") or []
    if segments:
        parts.append("<h3>Per segment</h3>" + _table(
            ["feature", "value", "rows", "this version", "production"],
            ([escape(s.get("feature", "")), escape(str(s.get("value", ""))), _e(s.get("rows")),
              _e(s.get("candidate")), _e(s.get("production"))] for s in segments), numeric=(2, 3, 4)))
    for note in evaluation.get("omitted") or []:
        parts.append(f"<p class='note'>Not recorded: {escape(str(note))}</p>")
    if not (evaluation.get("confusionMatrix") or evaluation.get("residuals") or evaluation.get("omitted")):
        parts.append("<p class='note'>The version record holds no confusion matrix or residuals of its held-out "
                     "rows (trained by a Kultivar that did not record them), so none is drawn.</p>")
    return "".join(parts)


def versions_section(model: dict[str, Any], deployments: list[dict[str, Any]]) -> str:
    records = versions(model)
    if not records:
        return ""
    production = (model.get("status") or {}).get("productionVersion")
    where = served(deployments)
    rows = []
    for r in records:
        marks = []
        if r["version"] == production:
            marks.append('<span class="badge production">production</span>')
        marks += [f'<span class="badge {"canary" if role == "canary" else "served"}">{escape(d)} {escape(role)} '
                  f"{w}%</span>" for d, role, w in where.get(r["version"], [])]
        marks += _shadow_badges(deployments, r["version"])
        if r.get("rolledBack"):
            marks.append('<span class="badge rolledback">rolled back</span>')
        headline = r.get("metric")
        metrics = ", ".join(("<b>{}={}</b>" if m == headline else "{}={}").format(escape(m), _e(v))
                            for m, v in sorted((r.get("metrics") or {}).items()))
        rows.append([f"v{r['version']}", escape(r.get("createdAt", "-")), metrics or "-", _gate(r.get("gate")),
                     _digest(r.get("datasetDigest")), f"<code>{escape(r.get('trainingRun', '-'))}</code>",
                     " ".join(marks)])
    chart = metrics_chart(model) or ""
    return ("<h2>Versions</h2>" + chart
            + _table(["version", "registered", "metrics", "gate", "data", "TrainingRun", ""], rows))


def _check_rows(dep: dict[str, Any], analysis: dict[str, Any]) -> list[list[str]]:
    spec = ((((dep.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("analysis") or {})
    rows = []
    for field, limit_field, label, op in CHECKS:
        value, limit = analysis.get(field), spec.get(limit_field, ANALYSIS_DEFAULTS[limit_field])
        if value is None:
            result = '<span class="note">not measured</span>'
        else:
            ok = value >= limit if op == ">=" else value <= limit
            result = '<span class="ok">ok</span>' if ok else '<span class="fail">FAIL</span>'
        rows.append([escape(label), _e(value), escape(f"{op} {fmt(limit)}"), result])
    return rows


def deployment_section(dep: dict[str, Any], index: int) -> str:
    meta, spec, status = dep["metadata"], dep.get("spec") or {}, dep.get("status") or {}
    strategy = (spec.get("strategy") or {}).get("type", "Canary")
    parts = [f"<h2>Deployment {escape(meta['name'])}</h2>"]
    ready = condition(dep, "Ready") or {}
    parts.append(f"<p>Strategy {escape(strategy)}; stable v{_e(status.get('stableVersion'))}"
                 + (f", canary v{_e(status['canaryVersion'])} at {_e(status.get('canaryWeight'))}% "
                    f"(step {_e(status.get('canaryStep'))})" if status.get("canaryVersion") else "")
                 + f". Ready={escape(ready.get('status', 'Unknown'))} {escape(ready.get('reason', ''))}"
                 + (f": {escape(ready['message'])}" if ready.get("message") else "") + "</p>")
    if status.get("variants"):
        parts.append(_table(["version", "role", "weight", "ready", "requests", "error rate", "p95 latency (s)"],
                            ([f"v{v['version']}", escape(v.get("role", "-")), f"{_e(v.get('weight', 0))}%",
                              f"{_e(v.get('readyReplicas', 0))}/{_e(v.get('replicas', 0))}", _e(v.get("requests")),
                              _e(v.get("errorRate"), 3), _e(v.get("latencyP95Seconds"), 3)]
                             for v in status["variants"]), numeric=(2, 4, 5, 6)))
    if strategy == "Canary":
        parts.append("<h3>Canary analysis</h3>")
        analysis = status.get("lastAnalysis")
        if analysis:
            verdict = analysis.get("verdict", "")
            css = {"Pass": "ok", "Fail": "fail"}.get(verdict, "warn")
            rollout = status.get("rollout") or {}
            parts.append(f"<p>Last analysis at {escape(analysis.get('time', '-'))}"
                         + (f" of the v{_e(rollout['version'])} canary" if rollout.get("version") else "")
                         + f": <span class='{css}'>{escape(verdict)}</span>"
                         + (f" ({escape(analysis['failedCheck'])})" if analysis.get("failedCheck") else "")
                         + f", measured from {escape(analysis.get('metricsSource') or 'pods')}"
                         + (f". <span class='note'>{escape(analysis['message'])}</span>"
                            if analysis.get("message") else "") + "</p>")
            parts.append(_table(["check", "value", "threshold", "result"], _check_rows(dep, analysis),
                                numeric=(1,)))
        else:
            parts.append("<p class='note'>No canary analysis recorded.</p>")
        if status.get("rolledBack"):
            parts.append(f"<p class='fail'>Rolled back (not rolled out again): "
                         f"{escape(', '.join(f'v{v}' for v in status['rolledBack']))}</p>")
    parts.append("<h3>Input drift</h3>")
    drift = status.get("drift")
    if drift:
        threshold = ((spec.get("monitoring") or {}).get("threshold", 0.2))
        parts.append(f"<p>v{_e(drift.get('version'))}: "
                     + ("<span class='fail'>drifted</span>" if drift.get("drifted") else
                        "<span class='ok'>no drift</span>")
                     + f", {_e(drift.get('driftedShare'), 3)} of the features past PSI {_e(threshold)}"
                     + (f", since {escape(drift['since'])}" if drift.get("since") else "") + ".</p>")
        parts.append(drift_chart(dep, index) or "<p class='note'>The check recorded no per-feature scores.</p>")
        parts.append(drift_history_chart(dep, index) or
                     "<p class='note'>No judged drift window recorded yet, so drift over time is not drawn (the "
                     "Deployment keeps its judged windows in <code>status.drift.history</code>).</p>")
    else:
        parts.append("<p class='note'>No drift check recorded yet.</p>")
    retrain = status.get("lastRetrain")
    if retrain:
        parts.append(f"<p>Last drift retraining: TrainingRun <code>{escape(retrain.get('trainingRun', ''))}</code> "
                     f"at {escape(retrain.get('time', ''))}: {escape(retrain.get('reason', ''))}</p>")
    return "".join(parts)


def history_section(model: dict[str, Any]) -> str:
    entries = (model.get("status") or {}).get("history") or []
    if not entries:
        return ""
    return "<h2>History</h2>" + _table(
        ["time", "what", "version", "by", "why"],
        ([escape(h.get("time", "-")), escape(h.get("type", "-")),
          f"v{_e(h['version'])}" if h.get("version") else escape(h.get("trainingRun") or "-"),
          escape(h.get("actor", "-")), escape(h.get("reason", ""))] for h in entries))


def chart_count(page: str) -> int:
    return page.count('<figure class="chart"')


def csp(script: str) -> str:
    """Nothing may be fetched; only this page's own script (by its hash) runs."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"


def build(model: dict[str, Any], deployments: list[dict[str, Any]], *, now: datetime,
          version: int | None = None) -> str:
    """The page, as one HTML string."""
    meta, spec, status = model["metadata"], model.get("spec") or {}, model.get("status") or {}
    record = chosen(model, version)
    promotion = spec.get("promotion") or {}
    gate = f"policy {promotion.get('policy', 'Automatic')}"
    if promotion.get("metric"):
        gate += f", gate on {promotion['metric']}" + (f" >= {fmt(promotion['minimum'])}"
                                                      if promotion.get("minimum") is not None else "")
    ready = condition(model, "Ready") or {}
    title = f"Model {meta['name']}" + (f" v{record['version']}" if record else "")
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p class='sub'>namespace {escape(meta.get('namespace', 'default'))}; {escape(gate)}; production "
        f"{'v' + _e(status['productionVersion']) if status.get('productionVersion') else 'none'}; "
        f"Ready={escape(ready.get('status', 'Unknown'))} {escape(ready.get('reason', ''))}</p>",
        card_section(model, record, deployments),
        evaluation_section(record),
        versions_section(model, deployments),
    ]
    body += [deployment_section(d, i) for i, d in enumerate(deployments)]
    if not deployments:
        body.append("<h2>Deployments</h2><p class='note'>No Deployment serves this Model.</p>")
    body.append(history_section(model))
    body.append(f"<footer>Generated by kubectl kultivar report at {escape(now.isoformat(timespec='seconds'))} "
                "from the Model's and its Deployments' status. <span id=\"report-status\">"
                "(charts are inline SVG)</span></footer>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp(SCRIPT)}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}: Kultivar report</title><style>{STYLE}</style></head>"
            f"<body><main>{''.join(body)}</main><script>{SCRIPT}</script></body></html>\n")
