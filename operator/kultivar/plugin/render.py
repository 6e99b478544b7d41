"""Trees and tables from object dicts (pure: no I/O; `now` is passed in). fancy=False is the piped form:
words instead of symbols, so that grep and diff see what a terminal user sees in colour."""

from __future__ import annotations

import io
import math
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from kultivar.api.common import parse_duration
from kultivar.api.deployment import DRIFT_HISTORY_LIMIT
from kultivar.domain.conditions import parse_time
from kultivar.plugin.facts import (
    EPOCH,
    condition,
    drift_windows,
    served,
    shadowed,
    short_digest,
    versions,
    worst_feature,
)

# key -> (symbol on a terminal, word when piped, style)
MARKS = {
    "ok": ("✔", "ok", "green"),
    "fail": ("✖", "FAIL", "bold red"),
    "wait": ("…", "inconclusive", "yellow"),
    "production": ("★ production", "[production]", "bold yellow"),
    "served": ("●", "[served]", "cyan"),
    "canary": ("◐", "[canary]", "magenta"),
    "shadow": ("◌", "[shadow]", "blue"),
    "paused": ("⏸ paused", "[paused]", "yellow"),
    "drifted": ("⚠ drifted", "[drifted]", "bold red"),
    "rolledback": ("↩ rolled back", "[rolled back]", "red"),
    "current": ("▶", ">", "bold"),
    "done": ("✔", "done", "green"),
    "pending": ("·", "-", "dim"),
    "info": ("•", "-", "cyan"),
}


def mark(key: str, fancy: bool) -> Text:
    symbol, word, style = MARKS[key]
    return Text(symbol if fancy else word, style=style)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def ago(stamp: str | None, now: datetime) -> str:
    when = parse_time(stamp)
    if when is None:
        return "-"
    seconds = int((now - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def _digest(digest: str | None, wide: bool) -> str:
    return (digest or "-") if wide else short_digest(digest)


def _cond(obj: dict[str, Any], type_: str, fancy: bool) -> Text:
    c = condition(obj, type_)
    if c is None:
        return Text(f"{type_}: unknown", style="dim")
    good = (c.get("status") == "True") != (type_ in ("Degraded", "Underperforming"))
    symbol = mark("info", fancy) if type_ == "Progressing" else mark("ok" if good else "fail", fancy)
    if not good and (c.get("status") == "Unknown" or type_ == "ABTestConcluded"):  # not judged, or no winner yet
        symbol = mark("wait", fancy)
    text = Text.assemble(symbol, f" {type_}={c.get('status')} {c.get('reason', '')}")
    if c.get("message"):
        text.append(f": {c['message']}", style="dim" if good else "")
    return text


def to_text(renderable: RenderableType, width: int = 120) -> str:
    """The renderable as plain text (what a pipe gets)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False,
                      legacy_windows=False, soft_wrap=False)
    console.print(renderable)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


# --- Model ------------------------------------------------------------------------------------------------


def _gate(gate: dict[str, Any] | None, fancy: bool) -> Text:
    if not gate:
        return Text("gate -", style="dim")
    return Text.assemble("gate ", mark("ok" if gate.get("passed") else "fail", fancy), f" {gate.get('reason', '')}")


def _headline(record: dict[str, Any]) -> str:
    metric = record.get("metric")
    value = (record.get("metrics") or {}).get(metric) if metric else None
    return f"{metric}={fmt(value)}" if metric else "no metric"


def deployment_line(dep: dict[str, Any], fancy: bool, now: datetime) -> Text:
    """One line per Deployment: stable, canary (weight, step), analysis, drift."""
    status, spec = dep.get("status") or {}, dep.get("spec") or {}
    ab = (spec.get("strategy") or {}).get("type") == "ABTest"
    text = Text.assemble((dep["metadata"]["name"], "bold"),
                         "  A/B test" if ab else f"  stable v{fmt(status.get('stableVersion'))}")
    if status.get("canaryVersion"):
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        text.append("  ")
        text.append_text(mark("canary", fancy))
        text.append(f" canary v{status['canaryVersion']} {fmt(status.get('canaryWeight'))}% "
                    f"step {fmt(status.get('canaryStep'))}/{len(steps) or '?'}")
        if ((spec.get("strategy") or {}).get("canary") or {}).get("paused"):
            text.append(" ")
            text.append_text(mark("paused", fancy))
    for variant in status.get("variants") or []:
        if variant.get("role") == "variant":
            text.append(f"  v{variant['version']}={variant.get('weight', 0)}%")
    shadow = status.get("shadow")
    if shadow:
        text.append("  ")
        text.append_text(mark("shadow", fancy))
        text.append(f" shadow v{shadow.get('version')} {fmt(shadow.get('percent'))}%")
        measured = shadow.get("state") == "Running" and shadow.get("measuredAt")
        text.append(f": {shadow_summary(shadow)}" if measured else f" {str(shadow.get('state', '-')).lower()}")
    analysis = status.get("lastAnalysis")
    if analysis:
        verdict = analysis.get("verdict")
        key = {"Pass": "ok", "Fail": "fail"}.get(verdict or "", "wait")
        text.append("  analysis ")
        text.append_text(mark(key, fancy))
        text.append(f" {verdict} {ago(analysis.get('time'), now)}")
    drift = status.get("drift")
    if drift:
        top = max((f.get("psi", 0.0) for f in drift.get("topFeatures") or []), default=None)
        text.append("  drift ")
        text.append_text(mark("drifted", fancy) if drift.get("drifted") else mark("ok", fancy))
        text.append(f" max PSI {fmt(top, 3)} ({drift.get('samples', 0)} requests)")
    result = (status.get("abTest") or {}).get("result") or {}
    if result:
        numbers = ", ".join(f"v{o.get('version')} {fmt(o.get('value'))} ({o.get('labels', 0)} labels)"
                            for o in result.get("variants") or [])
        text.append("  A/B ")
        if result.get("verdict") == "Concluded":
            text.append_text(mark("ok", fancy))
            text.append(f" v{result.get('winner')} wins (p={fmt(result.get('pValue'), 3)}): {numbers}")
        else:
            text.append_text(mark("wait", fancy))
            text.append(f" no winner yet (p={fmt(result.get('pValue'), 3)}): {numbers}")
    perf = status.get("performance")
    if perf and perf.get("versions"):
        judged = next((v for v in perf["versions"] if v.get("version") == perf.get("version")), None)
        if judged and judged.get("value") is not None:
            text.append(f"  live {perf.get('metric')} ")
            text.append_text(mark("fail" if perf.get("belowFloor") else "ok", fancy))
            text.append(f" v{judged['version']} {fmt(judged['value'])} ({judged.get('labels', 0)} labels, floor "
                        f"{fmt(perf.get('floor'))})")
    stable = next((v for v in status.get("variants") or [] if v.get("role") == "stable"), None)
    if stable and stable.get("requests") is not None:
        text.append(f"  live: {stable['requests']} req, errors {fmt(stable.get('errorRate'), 3)}, "
                    f"p95 {fmt(stable.get('latencyP95Seconds'), 3)}s")
    return text


def model_tree(model: dict[str, Any], deployments: list[dict[str, Any]], *, fancy: bool, now: datetime,
               wide: bool = False) -> Tree:
    meta, spec, status = model["metadata"], model.get("spec") or {}, model.get("status") or {}
    promotion = spec.get("promotion") or {}
    label = Text.assemble(("Model ", "bold"), (meta["name"], "bold cyan"), f"  (namespace {meta.get('namespace')})  ",
                          _cond(model, "Ready", fancy))
    tree = Tree(label)
    gate = f"policy {promotion.get('policy', 'Automatic')}"
    if promotion.get("metric"):
        gate += f", gate on {promotion['metric']}"
    if promotion.get("minimum") is not None:
        gate += f" >= {fmt(promotion['minimum'])}"
    if promotion.get("minImprovement"):
        gate += f", must beat production by {fmt(promotion['minImprovement'])}"
    if spec.get("production"):
        gate += f", pinned to v{spec['production']}"
    tree.add(Text(gate, style="dim"))
    where, shadows = served(deployments), shadowed(deployments)
    records = versions(model)
    branch = tree.add(Text(f"versions ({len(records)})", style="bold"))
    if not records:
        branch.add(Text("none registered yet: a Succeeded TrainingRun with modelRef naming this Model registers one",
                        style="dim"))
    for record in records:
        number = record["version"]
        line = Text.assemble((f"v{number}", "bold"), "  ")
        if status.get("productionVersion") == number:
            line.append_text(mark("production", fancy))
            line.append("  ")
        for dep_name, role, weight in where.get(number, []):
            line.append_text(mark("canary" if role == "canary" else "served", fancy))
            line.append(f" {dep_name} {role} {weight}%  ")
        for dep_name, state, percent in shadows.get(number, []):  # answers no user: copies of the stable's requests
            line.append_text(mark("shadow", fancy))
            line.append(f" {dep_name} shadow {percent}% copied" + ("" if state == "Running" else f" ({state.lower()})")
                        + "  ")
        if record.get("rolledBack"):
            line.append_text(mark("rolledback", fancy))
            line.append("  ")
        line.append(f"{_headline(record)}  ")
        line.append_text(_gate(record.get("gate"), fancy))
        line.append(f"  data {_digest(record.get('datasetDigest'), wide)}  run {record.get('trainingRun', '-')}  "
                    f"{ago(record.get('createdAt'), now)}")
        node = branch.add(line)
        if wide:
            if (record.get("gate") or {}).get("message"):
                node.add(Text(f"gate: {record['gate']['message']}", style="dim"))
            node.add(Text(f"artifact {(record.get('artifact') or {}).get('uri', '-')}", style="dim"))
    deps = tree.add(Text(f"deployments ({len(deployments)})", style="bold"))
    if not deployments:
        deps.add(Text("none: create a kultivar.io Deployment with modelRef.name: " + meta["name"], style="dim"))
    for dep in deployments:
        deps.add(deployment_line(dep, fancy, now))
    return tree


def models_table(models: list[dict[str, Any]], fancy: bool, now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD if fancy else None, show_edge=False, pad_edge=False)
    for col in ("NAME", "PRODUCTION", "LATEST", "VERSIONS", "READY", "AGE"):
        table.add_column(col)
    for m in models:
        st = m.get("status") or {}
        ready = condition(m, "Ready")
        table.add_row(m["metadata"]["name"], f"v{st['productionVersion']}" if st.get("productionVersion") else "-",
                      f"v{st['latestVersion']}" if st.get("latestVersion") else "-", str(len(st.get("versions") or [])),
                      (ready or {}).get("status", "Unknown"), ago(m["metadata"].get("creationTimestamp"), now))
    return table


def deployments_table(deps: list[dict[str, Any]], fancy: bool, now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD if fancy else None, show_edge=False, pad_edge=False)
    for col in ("NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "READY", "AGE"):
        table.add_column(col)
    for d in deps:
        st = d.get("status") or {}
        table.add_row(d["metadata"]["name"], ((d.get("spec") or {}).get("modelRef") or {}).get("name", "-"),
                      f"v{st['stableVersion']}" if st.get("stableVersion") else "-",
                      f"v{st['canaryVersion']}" if st.get("canaryVersion") else "-",
                      f"{st['canaryWeight']}%" if st.get("canaryWeight") else "-",
                      (condition(d, "Ready") or {}).get("status", "Unknown"),
                      ago(d["metadata"].get("creationTimestamp"), now))
    return table


# --- Deployment ------------------------------------------------------------------------------------------


def steps_table(dep: dict[str, Any], fancy: bool, now: datetime) -> Table:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    canary = (spec.get("strategy") or {}).get("canary") or {}
    steps = canary.get("steps") or [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}]
    rollout = status.get("rollout") or {}
    title = f"canary v{rollout['version']} ({rollout.get('state')})" if rollout else "canary steps (no canary running)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("STEP", "WEIGHT", "PAUSE", "PROGRESS"):
        table.add_column(col)
    current = int(rollout.get("step", -1)) if rollout else -1
    promoting = rollout.get("state") == "Promoting"
    for i, step in enumerate(steps):
        pause = step.get("pause", "1m")
        if rollout and (i < current or promoting):
            progress = mark("done", fancy)
        elif i == current and rollout.get("state") == "Stepping":
            started = parse_time(rollout.get("stepStartedAt"))
            total = parse_duration(pause).total_seconds()
            elapsed = (now - started).total_seconds() if started else 0.0
            share = min(1.0, elapsed / total) if total else 1.0
            filled = round(share * 20)
            bar = ("█" * filled + "░" * (20 - filled)) if fancy else ("#" * filled + "." * (20 - filled))
            progress = Text.assemble(mark("current", fancy), f" {bar} {int(elapsed)}s/{int(total)}s")
            if canary.get("paused"):
                progress.append(" ")
                progress.append_text(mark("paused", fancy))
        elif i == current:
            progress = Text.assemble(mark("current", fancy), " waiting for the canary's pods")
        else:
            progress = mark("pending", fancy)
        table.add_row(str(i + 1), f"{step['weight']}%", pause, progress)
    if promoting:
        table.add_row("-", "100%", "-", Text.assemble(mark("current", fancy), " promoting: scaling to full size"))
    return table


CHECKS = (  # status.lastAnalysis field, spec analysis field, label, how the value must compare
    ("requests", "minRequests", "requests", ">="),
    ("errorRate", "maxErrorRate", "error rate", "<="),
    ("latencyP95Seconds", "maxLatencyP95Seconds", "p95 latency (s)", "<="),
    ("predictionShift", "maxPredictionShift", "prediction shift (PSI)", "<="),
)
ANALYSIS_DEFAULTS = {"minRequests": 20, "maxErrorRate": 0.05, "maxLatencyP95Seconds": 0.5, "maxPredictionShift": 0.25}


def analysis_table(dep: dict[str, Any], fancy: bool, now: datetime) -> Table | Text:
    analysis = (dep.get("status") or {}).get("lastAnalysis")
    if not analysis:
        return Text("no canary analysis yet", style="dim")
    spec = ((((dep.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("analysis") or {})
    title = (f"last analysis: {analysis.get('verdict')} {ago(analysis.get('time'), now)} "
             f"({analysis.get('metricsSource') or 'pods'})")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("CHECK", "VALUE", "THRESHOLD", "RESULT"):
        table.add_column(col)
    for field, limit_field, label, op in CHECKS:
        value, limit = analysis.get(field), spec.get(limit_field, ANALYSIS_DEFAULTS[limit_field])
        if value is None:
            result = Text("not measured", style="dim")
        else:
            ok = value >= limit if op == ">=" else value <= limit
            result = mark("ok" if ok else "fail", fancy)
        table.add_row(label, fmt(value), f"{op} {fmt(limit)}", result)
    if analysis.get("failedCheck") == "ServerFailed":  # rolled back before any traffic: its server never started
        table.add_row("model server", "failed", "starts", mark("fail", fancy))
    if analysis.get("message"):
        table.caption = analysis["message"]
        table.caption_justify = "left"
    return table


def drift_table(dep: dict[str, Any], fancy: bool, now: datetime, top: int = 10) -> Table | Text:
    drift = (dep.get("status") or {}).get("drift")
    if not drift:
        return Text("no drift check yet", style="dim")
    monitoring = (dep.get("spec") or {}).get("monitoring") or {}
    threshold = monitoring.get("threshold", 0.2)
    state = "DRIFTED" if drift.get("drifted") else "no drift"
    title = (f"drift of v{fmt(drift.get('version'))}: {state}, {fmt(drift.get('driftedShare'), 3)} of features past "
             f"PSI {fmt(threshold)} ({drift.get('samples', 0)} requests, checked {ago(drift.get('checkedAt'), now)})")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("FEATURE", "PSI", "", "DRIFTED"):
        table.add_column(col)
    features = sorted(drift.get("topFeatures") or [], key=lambda f: -f.get("psi", 0.0))[:top]
    scale = max([threshold * 2] + [f.get("psi", 0.0) for f in features])
    for f in features:
        psi = f.get("psi", 0.0)
        width = round(20 * psi / scale) if scale else 0
        bar = ("█" if fancy else "#") * width
        table.add_row(f["feature"], f"{psi:.3f}", Text(bar, style="red" if psi > threshold else "green"),
                      mark("drifted", fancy) if psi > threshold else Text("-" if not fancy else "", style="dim"))
    return table


# --- drift over time (status.drift.history) ----------------------------------------------------------------

SPARK = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.:-=+*#"  # the same eight levels in characters every pipe, log and font carries
DRIFT_ROWS = 8  # judged windows listed by get deployment; -o wide and history deployment list all


def _percent(share: Any) -> str:
    return "-" if share is None else f"{share:.0%}"


def spark_level(share: float) -> int:
    """0 for no drifted feature, 7 for all of them; a window with any drifted feature never looks like none."""
    if share <= 0:
        return 0
    return max(1, math.ceil(min(share, 1.0) * 7))


def drift_sparkline(windows: list[dict[str, Any]], fancy: bool) -> Text:
    """One mark per judged window, oldest first: its share of features past the threshold. `|` where the version
    changed (a new version's drift starts from scratch), `?` for a window recorded without a share; on a
    terminal the windows judged drifted are red."""
    levels = SPARK if fancy else SPARK_ASCII
    text, previous = Text(), None
    for w in windows:
        if previous is not None and w.get("version") != previous:
            text.append("|", style="dim")
        previous = w.get("version")
        share = w.get("driftedShare")
        text.append("?" if share is None else levels[spark_level(float(share))],
                    style="red" if w.get("drifted") else "green")
    return text


def drift_history_summary(windows: list[dict[str, Any]], fancy: bool, now: datetime) -> Text:
    """The whole history in one line: the sparkline, how many windows of which versions over what span, and how
    many of them were judged drifted."""
    levels = SPARK if fancy else SPARK_ASCII
    served_versions = ", ".join(dict.fromkeys(f"v{fmt(w.get('version'))}" for w in windows))
    drifted = sum(bool(w.get("drifted")) for w in windows)
    first, last = ago(windows[0].get("time"), now), ago(windows[-1].get("time"), now)
    span = f"{len(windows)} judged windows of {served_versions} from {first} to {last}" if len(windows) > 1 else \
        f"1 judged window of {served_versions} {last}"
    return Text.assemble("drift over time  ", drift_sparkline(windows, fancy),
                         f"  {span}, {drifted} judged drifted ({levels[0]} no feature past the threshold .. "
                         f"{levels[-1]} all)")


def drift_window_row(w: dict[str, Any], fancy: bool) -> list[str | Text]:
    """TIME as stored (the summary line says how long ago the windows were), so that the row fits 80 columns."""
    worst = worst_feature(w) or {}
    drifted = Text(_percent(w.get("driftedShare")))
    if w.get("drifted"):
        drifted.append(" ")
        drifted.append_text(mark("drifted", fancy))
    return [w.get("time", "-"), f"v{fmt(w.get('version'))}", drifted, worst.get("feature", "-"),
            fmt(worst.get("psi"), 3), fmt(w.get("samples"))]


def drift_history_view(dep: dict[str, Any], fancy: bool, now: datetime, rows: int | None = DRIFT_ROWS
                       ) -> Group | Text | None:
    """status.drift.history: the sparkline of every kept window, then the newest ``rows`` judged windows (all with
    None), newest last, and how many older ones are not listed."""
    if not (dep.get("status") or {}).get("drift"):
        return None  # drift_table already says there was no check
    windows = drift_windows(dep)
    if not windows:
        return Text("drift over time: no judged window yet (a window with too few requests to judge is not "
                    "recorded)", style="dim")
    shown = windows[-rows:] if rows else windows
    table = Table(title="judged drift windows (newest last)", title_justify="left",
                  box=box.SIMPLE_HEAD if fancy else None, show_edge=False, pad_edge=False)
    for col in ("TIME", "VERSION", "DRIFTED", "WORST FEATURE", "PSI", "REQUESTS"):
        table.add_column(col, no_wrap=True)  # one line per window; a long feature name is cut with …
    for w in shown:
        table.add_row(*drift_window_row(w, fancy))
    parts: list[RenderableType] = [drift_history_summary(windows, fancy, now), table]
    if older := len(windows) - len(shown):
        name = dep["metadata"]["name"]
        parts.append(Text(f"{older} older window{'s' if older != 1 else ''} not listed: -o wide or kubectl kultivar "
                          f"history deployment {name} lists all {len(windows)}", style="dim"))
    return Group(*parts)


def variants_table(dep: dict[str, Any], fancy: bool) -> Table:
    """Per served version: weight, pods and the measured numbers; with an A/B decision also each variant's live
    metric and labels since the test began (ab_verdict says what they decided)."""
    status = dep.get("status") or {}
    ab = status.get("abTest")
    result = (ab or {}).get("result") or {}
    title = f"versions (A/B test since {ab.get('startedAt')})" if ab else "versions"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    columns = ["VERSION", "ROLE", "WEIGHT", "READY", "REQUESTS", "ERROR RATE", "P95 (s)"]
    if result:
        columns += [f"LIVE {str(result.get('metric', 'metric')).upper()}", "LABELS", ""]
    for col in columns:
        table.add_column(col)
    outcomes = {o.get("version"): o for o in result.get("variants") or []}
    for v in status.get("variants") or []:
        row: list[str | Text] = [f"v{v['version']}", v.get("role", "-"), f"{v.get('weight', 0)}%",
                                 f"{v.get('readyReplicas', 0)}/{v.get('replicas', 0)}", fmt(v.get("requests")),
                                 fmt(v.get("errorRate"), 3), fmt(v.get("latencyP95Seconds"), 3)]
        if result:
            outcome = outcomes.get(v["version"]) or {}
            won = result.get("winner") == v["version"]
            row += [fmt(outcome.get("value")), fmt(outcome.get("labels")),
                    Text("winner", style="bold green") if won else Text("")]
        table.add_row(*row)
    return table


def ab_verdict(result: dict[str, Any]) -> str:
    """The A/B decision in one line: verdict, p-value, effect and how (status.abTest.result)."""
    head = (f"A/B decision on live {result.get('metric', '-')} ({result.get('method', 'mSPRT')}, "
            f"confidence {fmt(result.get('confidence'))}): ")
    verdict = result.get("verdict")
    p = f"always-valid p={fmt(result.get('pValue'), 3)}"
    if verdict == "Concluded":
        return (f"{head}v{result.get('winner')} wins, effect {result.get('effectSize', 0.0):+.4f} "
                f"[{fmt(result.get('effectLow'))}, {fmt(result.get('effectHigh'))}], {p}, "
                f"after {result.get('looks', 0)} looks")
    if verdict == "NoWinnerYet":
        return f"no winner yet, {p} after {result.get('looks', 0)} looks"
    if verdict == "CollectingSamples":
        return f"collecting labels ({result.get('message', '')})"
    return f"{verdict}: {result.get('message', '')}"


def performance_table(dep: dict[str, Any], fancy: bool, now: datetime) -> Group | None:
    """Live performance per served version (status.performance), the judged one against its floor."""
    perf = (dep.get("status") or {}).get("performance")
    if not perf:
        return None
    metric = perf.get("metric", "-")
    errors = metric in ("mae", "rmse")
    title = (f"live {metric} (floor {fmt(perf.get('floor'))}, {'at most' if errors else 'at least'}; window "
             f"{perf.get('window', '-')}, checked {ago(perf.get('checkedAt'), now)})")
    table = Table(box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("VERSION", metric.upper(), "LABELS", ""):
        table.add_column(col)
    for v in perf.get("versions") or []:
        judged = v.get("version") == perf.get("version")
        verdict = Text("")
        if judged and v.get("value") is not None:
            verdict = mark("fail" if perf.get("belowFloor") else "ok", fancy)
        table.add_row(f"v{v.get('version')}", fmt(v.get("value")), fmt(v.get("labels")), verdict)
    if not perf.get("versions"):
        return Group(Text(title), Text("window open: no labels counted yet", style="dim"))
    return Group(Text(title), table)


def _share(value: Any) -> str:
    return "-" if value is None else f"{value:.2%}"


def _live(shadow: dict[str, Any]) -> str:
    """The shadow's live metric against the stable's in the same window, with the shadow's label count."""
    return (f"{fmt(shadow.get('liveValue'))} ({fmt(shadow.get('labels'))} labels) vs "
            f"v{fmt(shadow.get('stableVersion'))} {fmt(shadow.get('stableLiveValue'))}")


def shadow_summary(shadow: dict[str, Any]) -> str:
    """status.shadow's numbers in one line (the Model tree's Deployment line)."""
    parts = [f"{fmt(shadow.get('requests'))} req"]
    if shadow.get("agreement") is not None:
        parts.append(f"agreement {_share(shadow['agreement'])} of {fmt(shadow.get('compared'))} rows")
    if shadow.get("meanAbsDifference") is not None:
        parts.append(f"mean |diff| {fmt(shadow['meanAbsDifference'])} over {fmt(shadow.get('compared'))} rows")
    parts.append(f"errors {fmt(shadow.get('errorRate'), 3)}, p95 {fmt(shadow.get('latencyP95Seconds'), 3)}s")
    if shadow.get("predictionShift") is not None:
        parts.append(f"PSI {fmt(shadow['predictionShift'], 3)}")
    if shadow.get("liveValue") is not None:
        parts.append(f"live {shadow.get('liveMetric')} {_live(shadow)}")
    return ", ".join(parts)


def shadow_view(dep: dict[str, Any], fancy: bool, now: datetime) -> Group | None:
    """status.shadow: what the shadow version did with its copies since its window began. Nothing here is judged
    (a shadow never answers users, so nothing acts on these numbers): values only, no verdicts."""
    shadow = (dep.get("status") or {}).get("shadow")
    if not shadow:
        return None
    state = shadow.get("state", "-")
    source = f", {shadow['metricsSource']}" if shadow.get("metricsSource") else ""
    running = state == "Running"
    title = Text.assemble(mark("shadow", fancy),
                          f" shadow v{fmt(shadow.get('version'))} ({state}): {fmt(shadow.get('percent'))}% of "
                          f"v{fmt(shadow.get('stableVersion'))}'s requests {'copied' if running else 'to copy'}, "
                          f"router {shadow.get('router') or '-'}"
                          + (f"; window since {ago(shadow.get('startedAt'), now)}" if running else "")
                          + (f", measured {ago(shadow['measuredAt'], now)}{source}" if running and
                             shadow.get("measuredAt") else ""))
    if not running or not shadow.get("measuredAt"):  # nothing measured yet: the message says why
        return Group(title, Text(shadow.get("message") or "no numbers yet", style="dim"))
    table = Table(box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("MEASURE", "VALUE", ""):
        table.add_column(col)
    compared = f"over {fmt(shadow.get('compared'))} compared rows" if shadow.get("compared") is not None else ""
    rows: list[tuple[str, str, str]] = [
        ("requests", fmt(shadow.get("requests")), "copies it answered"),
        ("error rate", fmt(shadow.get("errorRate"), 3), ""),
        ("p95 latency (s)", fmt(shadow.get("latencyP95Seconds"), 3), ""),
    ]
    if shadow.get("agreement") is not None:
        rows.append(("agreement", _share(shadow["agreement"]), f"{compared}: same class as the stable"))
    if shadow.get("meanAbsDifference") is not None:
        rows.append(("mean |difference|", fmt(shadow["meanAbsDifference"]), f"{compared}: against the stable"))
    if shadow.get("agreement") is None and shadow.get("meanAbsDifference") is None:
        rows.append(("agreement", "-", "not compared per request (router gatewayAPI discards the shadow's answers)"
                     if shadow.get("router") == "gatewayAPI" else compared or "no rows compared yet"))
    if shadow.get("forwardErrors") is not None:
        rows.append(("forward errors", fmt(shadow["forwardErrors"]), "copies it did not answer"))
    if shadow.get("dropped") is not None:
        rows.append(("dropped", fmt(shadow["dropped"]), "copies dropped: forwarding queue full"))
    rows.append(("prediction shift (PSI)", fmt(shadow.get("predictionShift"), 3), "against the stable's predictions"))
    if shadow.get("liveMetric"):
        rows.append((f"live {shadow['liveMetric']}", fmt(shadow.get("liveValue")),
                     f"{fmt(shadow.get('labels'))} labels; v{fmt(shadow.get('stableVersion'))} "
                     f"{fmt(shadow.get('stableLiveValue'))} in the same window"
                     if shadow.get("liveValue") is not None else "no labels counted for it yet"))
    for row in rows:
        table.add_row(*row)
    return Group(title, table)


def deployment_view(dep: dict[str, Any], *, fancy: bool, now: datetime, wide: bool = False) -> Group:
    meta, spec, status = dep["metadata"], dep.get("spec") or {}, dep.get("status") or {}
    strategy = (spec.get("strategy") or {}).get("type", "Canary")
    ref = spec.get("modelRef") or {}
    follows = f"pinned to v{ref['version']}" if ref.get("version") else "follows production"
    header = Text.assemble(("Deployment ", "bold"), (meta["name"], "bold cyan"),
                           f"  (namespace {meta.get('namespace')})  Model {ref.get('name')} ({follows}), "
                           f"strategy {strategy}, router {(spec.get('traffic') or {}).get('router', 'replicas')}")
    parts: list[RenderableType] = [header]
    if status.get("url"):
        parts.append(Text(f"url {status['url']}", style="dim"))
    parts += [_cond(dep, t, fancy) for t in ("Ready", "Progressing", "Degraded")]
    if status.get("rolledBack"):
        parts.append(Text.assemble(mark("rolledback", fancy),
                                   f": {', '.join(f'v{v}' for v in status['rolledBack'])} (not rolled out again)"))
    parts.append(Text(""))
    if condition(dep, "ABTestConcluded") is not None:
        parts.append(_cond(dep, "ABTestConcluded", fancy))
    if condition(dep, "Underperforming") is not None:
        parts.append(_cond(dep, "Underperforming", fancy))
    parts.append(variants_table(dep, fancy))
    if result := (status.get("abTest") or {}).get("result"):
        parts.append(Text(ab_verdict(result)))
        if result.get("winner") is not None:  # the operator never applies it: say how to
            parts.append(Text(f"reported, not applied: kubectl kultivar promote model {ref.get('name')} "
                              f"{result['winner']} --print gives the Git change that makes v{result['winner']} "
                              "production; strategy.type Canary then ends the test", style="dim"))
    if (performance := performance_table(dep, fancy, now)) is not None:
        parts.append(performance)
    if (shadow := shadow_view(dep, fancy, now)) is not None:
        parts.append(shadow)
    if strategy == "Canary":
        parts += [steps_table(dep, fancy, now), analysis_table(dep, fancy, now)]
    parts.append(drift_table(dep, fancy, now, top=50 if wide else 10))
    if (history := drift_history_view(dep, fancy, now, rows=None if wide else DRIFT_ROWS)) is not None:
        parts.append(history)
    retrain = status.get("lastRetrain")
    if retrain:
        parts.append(Text(f"last drift retraining: TrainingRun {retrain.get('trainingRun')} "
                          f"{ago(retrain.get('time'), now)}: {retrain.get('reason', '')}"))
    wait = status.get("retrainWait")
    if wait and wait.get("skippedAt"):
        parts.append(Text(f"drift retraining skipped {ago(wait.get('skippedAt'), now)}: {wait.get('message', '')}"))
    elif wait:
        parts.append(Text(f"drift retraining waits for Dataset {wait.get('dataset')} to be validated again "
                          f"(requested {ago(wait.get('requestedAt'), now)})"))
    return Group(*parts)


# --- lineage, compare --------------------------------------------------------------------------------------


def lineage_tree(facts: dict[str, Any], *, fancy: bool, wide: bool = False) -> Tree:
    data, validation, run, reg = facts["data"], facts["validation"], facts["trainingRun"], facts["registered"]
    label = Text.assemble(("data ", "bold"), f"Dataset {data.get('dataset') or '-'}",
                          f"  source {data.get('source') or '(Dataset gone)'}",
                          f"  digest {_digest(data.get('digest'), wide)}")
    if data.get("rows") is not None:
        label.append(f"  {data['rows']} rows")
    tree = Tree(label)
    if validation["validated"]:
        node = tree.add(Text.assemble(mark("ok", fancy), f" validated {validation.get('validatedAt') or ''}"
                                      + (f"  snapshot {data['snapshotUri']}" if wide and data.get("snapshotUri")
                                         else "")))
    else:
        node = tree.add(Text("validation record no longer kept by the Dataset (retention) or Dataset deleted",
                             style="dim"))
    params = {**(run.get("params") or {}), **(run.get("bestParams") or {})}
    run_label = Text.assemble(("TrainingRun ", "bold"), run.get("name") or "-",
                              f"  {run.get('estimator') or '(run deleted)'}",
                              f"  params {params}" if params else "",
                              f"  image {run.get('image')}" if run.get("image") else "",
                              f"  trigger {run.get('trigger')}" if run.get("trigger") else "")
    node = node.add(run_label)
    if run.get("search"):
        node.add(Text(f"search {run['search']}", style="dim"))
    version = Text.assemble((f"v{facts['version']}", "bold"), "  ")
    if reg.get("production"):
        version.append_text(mark("production", fancy))
        version.append("  ")
    if reg.get("rolledBack"):
        version.append_text(mark("rolledback", fancy))
        version.append(f" ({reg.get('rollbackReason')})  ")
    metrics = ", ".join(f"{k}={fmt(v)}" for k, v in sorted((reg.get("metrics") or {}).items()))
    version.append(f"{metrics}  ")
    version.append_text(_gate(reg.get("gate"), fancy))
    version.append(f"  registered {reg.get('createdAt') or '-'}")
    node = node.add(version)
    if wide and reg.get("artifact"):
        node.add(Text(f"artifact {reg['artifact'].get('uri')} {reg['artifact'].get('digest')}", style="dim"))
    if not facts["servedBy"]:
        node.add(Text("not served by any Deployment", style="dim"))
    for s in facts["servedBy"]:
        node.add(Text.assemble(mark("canary" if s["role"] == "canary" else "served", fancy),
                               f" Deployment {s['deployment']} ({s['role']}, {s['weight']}%)"))
    for s in facts.get("shadowOf") or []:  # answers no user: a copy of the Deployment's requests
        node.add(Text.assemble(mark("shadow", fancy), f" Deployment {s['deployment']} (shadow, {s['percent']}% of "
                                                      f"requests copied, {s['state']})"))
    return tree


def compare_table(facts: dict[str, Any], *, fancy: bool, wide: bool = False) -> Group:
    a, b = facts["versions"]
    table = Table(box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("", f"v{a}", f"v{b}", "DIFFERENCE"):
        # fold, not truncate: a long parameter value on a narrow terminal is still all there
        table.add_column(col, justify="right" if col not in ("", "DIFFERENCE") else "left", overflow="fold")
    table.add_row(Text("metrics (held-out evaluation)", style="bold"), "", "", "")
    for m in facts["metrics"]:
        delta = "" if m["delta"] is None else f"{m['delta']:+.4g}"
        better = m["better"]
        verdict = Text(f"{delta}  v{(a, b)[better - 1]} better" if better else delta,
                       style="green" if better == 2 else ("red" if better == 1 else ""))
        table.add_row(m["name"] + (" (lower is better)" if m["lowerIsBetter"] else ""), fmt(m["a"]), fmt(m["b"]),
                      verdict)
    table.add_row(Text("parameters", style="bold"), "", "", "")
    for p in facts["params"]:
        a_value, b_value = fmt(p["a"]), fmt(p["b"])
        if p["name"] == "estimator" and not wide:  # the class name; the module path is in -o wide
            a_value, b_value = a_value.rsplit(".", 1)[-1], b_value.rsplit(".", 1)[-1]
        table.add_row(p["name"], a_value, b_value, "" if p["same"] else Text("differs", style="yellow"))
    table.add_row(Text("data", style="bold"), "", "", "")
    data = facts["data"]
    table.add_row("dataset digest", _digest(data["a"], wide), _digest(data["b"], wide),
                  "same" if data["same"] else Text("differs", style="yellow"))
    gates = facts["gate"]
    table.add_row("gate", (gates["a"] or {}).get("reason", "-"), (gates["b"] or {}).get("reason", "-"), "")
    note = ("both evaluated on the same held-out rows (same data version, test fraction and seed)"
            if facts["sameEvaluation"] else
            "evaluated on different held-out rows (other data version or split): compare the metrics with care")
    return Group(Text.assemble(("Model ", "bold"), (facts["model"], "bold cyan"), f": v{a} vs v{b}"), table,
                 Text(note, style="dim"))


# --- history ------------------------------------------------------------------------------------------------

HISTORY_MARKS = {"Registered": "info", "Promoted": "production", "Pinned": "production", "RolledBack": "rolledback",
                 "TrainingStarted": "current"}


def history_table(model: dict[str, Any], *, fancy: bool, now: datetime) -> Table | Text:
    entries = (model.get("status") or {}).get("history") or []
    if not entries:
        return Text(f"Model {model['metadata']['name']} has no recorded history yet", style="dim")
    table = Table(title=f"Model {model['metadata']['name']}: history (oldest first)", title_justify="left",
                  box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("TIME", "", "WHAT", "VERSION", "BY", "WHY"):
        table.add_column(col)
    for h in entries:
        symbol = mark(HISTORY_MARKS.get(h.get("type", ""), "info"), fancy) if fancy else Text("")
        table.add_row(f"{h.get('time', '-')} ({ago(h.get('time'), now)})", symbol, h.get("type", "-"),
                      f"v{h['version']}" if h.get("version") else (h.get("trainingRun") or "-"),
                      h.get("actor", "-"), h.get("reason", ""))
    return table


def _event_row(event: dict[str, Any], fancy: bool) -> tuple[Text, str, str]:
    """What a status record of a decision says, in the timeline's WHAT, VERSION and DETAIL columns."""
    record = event["record"]
    if event["field"] == "lastAnalysis":
        verdict = record.get("verdict")
        what = Text.assemble(mark({"Pass": "ok", "Fail": "fail"}.get(verdict or "", "wait"), fancy),
                             f" canary analysis {verdict}")
        failed = f"{record['failedCheck']} failed: " if record.get("failedCheck") else ""
        return what, "-", f"{failed}{record.get('message', '')}"
    if event["field"] == "lastRetrain":
        trigger = f" ({record['trigger']})" if record.get("trigger") else ""
        return (Text.assemble(mark("info", fancy), " retraining started"), "-",
                f"TrainingRun {record.get('trainingRun')}{trigger}: {record.get('reason', '')}")
    if record.get("skippedAt"):
        return (Text.assemble(mark("info", fancy), " retraining skipped"), f"v{fmt(record.get('version'))}",
                record.get("message", ""))
    return (Text.assemble(mark("wait", fancy), " retraining waits"), f"v{fmt(record.get('version'))}",
            f"for Dataset {record.get('dataset')} to be validated again")


def deployment_history_table(history: dict[str, Any], *, fancy: bool, now: datetime) -> Group:
    """facts.deployment_history as one timeline, oldest first: every kept judged drift window and the last
    record of each rollout and retraining decision."""
    name, windows, events = history["deployment"], history["driftWindows"], history["events"]
    title = Text.assemble(("Deployment ", "bold"), (str(name), "bold cyan"), ": drift and decisions over time "
                                                                            "(oldest first)")
    if not windows and not events and not history["rolledBack"]:
        return Group(title, Text("nothing recorded yet: no judged drift window, canary analysis or retraining",
                                 style="dim"))
    rows: list[tuple[datetime, str | None, list[str | Text]]] = []  # (when, its stamp as stored, the cells)
    for w in windows:
        worst = worst_feature(w) or {}
        what = (Text.assemble(mark("drifted", fancy), " window") if w.get("drifted")
                else Text.assemble(mark("ok", fancy), " drift window"))
        rows.append((parse_time(w.get("time")) or EPOCH, w.get("time"), [
            what, f"v{fmt(w.get('version'))}",
            f"{_percent(w.get('driftedShare'))} of features drifted, worst {worst.get('feature', '-')} PSI "
            f"{fmt(worst.get('psi'), 3)}, {fmt(w.get('samples'))} requests"]))
    for e in events:
        rows.append((parse_time(e.get("time")) or EPOCH, e.get("time"), list(_event_row(e, fancy))))
    table = Table(box=box.SIMPLE_HEAD if fancy else None, show_edge=False)
    for col in ("TIME", "WHAT", "VERSION", "DETAIL"):
        table.add_column(col)
    for _, stamp, cells in sorted(rows, key=lambda r: r[0]):  # stable: a window before a decision of its time
        table.add_row(f"{stamp or '-'} ({ago(stamp, now)})", *cells)
    parts: list[RenderableType] = [title]
    if windows:
        parts.append(drift_history_summary(windows, fancy, now))
    parts.append(table)
    if history["rolledBack"]:
        parts.append(Text.assemble(mark("rolledback", fancy), ": " + ", ".join(
            f"v{v}" for v in history["rolledBack"]) + " (not rolled out again)"))
    parts.append(Text(f"status keeps the newest {DRIFT_HISTORY_LIMIT} judged drift windows and only the last canary "
                      "analysis and retraining", style="dim"))
    return Group(*parts)
