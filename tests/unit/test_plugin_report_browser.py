"""The report opened in a real browser (Debian's headless Chromium): the page loads without a script error or a
blocked request (its Content-Security-Policy would log one for anything it tried to fetch), its script runs, and
its charts are drawn. Chromium runs bounded in time, without a network (every host name fails to resolve), with a
throwaway profile."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from helpers import require_tool
from kultivar.plugin import report
from plugin_objects import AB, CANARY, MODEL, NOW, evaluated

CHROMIUM = shutil.which("chromium")
BOUND_SECONDS = 120  # a bound on a hung browser, not a speed goal: a run takes seconds


def chromium(tmp_path: Path, page: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool(CHROMIUM, "chromium (Debian's chromium package)")
    profile = tmp_path / "profile"
    return subprocess.run(
        [binary, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,4200", *mode, page.as_uri()],
        capture_output=True, text=True, timeout=BOUND_SECONDS, check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    html = report.build(evaluated(MODEL), [CANARY, AB], now=NOW)
    path = tmp_path_factory.mktemp("report") / "iris.html"
    path.write_text(html, encoding="utf-8")
    return path, report.chart_count(html)


def console_problems(stderr: str) -> list[str]:
    """What Chromium logged from the page: uncaught errors and requests the page's policy refused."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line or "ERR_" in line]


def test_the_page_loads_runs_its_script_and_has_its_charts(page, tmp_path) -> None:
    path, charts = page
    run = chromium(tmp_path, path, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    status = re.search(r'<span id="report-status"([^>]*)>([^<]*)</span>', dom)
    assert status is not None, dom[-2000:]
    attributes, text = status.groups()
    assert 'data-loaded="true"' in attributes and f'data-charts="{charts}"' in attributes, attributes
    assert "data-errors" not in attributes
    assert text == f"Rendered {charts} charts in this browser."
    # evaluation, confusion matrix, metrics, drift, drift over time
    assert charts == 5 and dom.count("<svg") == charts
    for chart in ("confusion", "drift-history-0"):
        assert re.search(rf'<figure class="chart" data-chart="{chart}"><svg', dom), chart
    assert console_problems(run.stderr) == []


def test_the_screenshot_shows_the_charts(page, tmp_path) -> None:
    path, _ = page
    shot = tmp_path / "report.png"
    run = chromium(tmp_path, path, f"--screenshot={shot}")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert console_problems(run.stderr) == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 4200)
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20) or []}
    # the charts' own colours are on screen: the bars and lines (blue), the production version and its bars
    # (orange), the drifted feature (red) and the confusion matrix's darkest cells
    for name, rgb in (("blue", (0x00, 0x72, 0xB2)), ("orange", (0xE6, 0x9F, 0x00)), ("red", (0xD5, 0x5E, 0x00))):
        assert any(sum(abs(a - b) for a, b in zip(c, rgb, strict=True)) < 12 for c in colours), name
    assert sum(1 for c in colours if c[2] > 100 and c[0] < 40 and c[1] < 80) > 0  # Blues' darkest (confusion)


def test_a_script_error_or_a_fetch_would_be_caught(tmp_path) -> None:
    """The checks above can fail: the same page with a failing script and an image from the network is caught
    (the policy blocks the fetch and Chromium logs both)."""
    html = report.build(MODEL, [], now=NOW)
    # an image to fetch, and the marker gone so the page's own script fails (the script itself is unchanged:
    # a changed script would not match the policy's hash and would not run at all)
    broken = html.replace("<main>", '<main><img src="https://example.invalid/x.png">').replace(
        '<span id="report-status">', "<span>")
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    run = chromium(tmp_path, path, "--dump-dom")
    problems = " ".join(console_problems(run.stderr))
    assert "Content Security Policy" in problems and "Uncaught TypeError" in problems, run.stderr[-2000:]
    assert 'data-loaded="true"' not in run.stdout
