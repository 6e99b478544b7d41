"""`kubectl kultivar` against real objects on the real control plane: every view, every mutating command making
exactly the change it says (and --print making none), and --watch ending with the rollout.

States are set up through the status subresource, as the operator would write them: the plugin only reads status
and writes the user's spec, so the operator is not needed (only the history test, last, runs it). The namespace
has no artifact store, so a running operator (the history test's, or another file's) leaves these objects' status
alone (it only reports ArtifactStoreUnavailable in Ready).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kapi import get, path

from helpers import wait_for
from plugin_objects import AB, CANARY, DATASET, MODEL, SHADOWED, evaluated, run, settled

pytestmark = pytest.mark.integration

PLUGIN = Path(sys.executable).parent / "kubectl-kultivar"  # installed by the package (project.scripts)
ANALYSIS_TIME = "2026-05-01T12:09:00Z"


def kk(kube, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the plugin as a user would, piped (plain text), with the test cluster's kubeconfig."""
    return subprocess.run([str(PLUGIN), "--kubeconfig", str(kube.kubeconfig), "-n", namespace, *args],
                          capture_output=True, text=True, timeout=60)


def _put(kube, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": obj["metadata"]["name"], "namespace": namespace}, "spec": obj["spec"]}
    status, out = kube.raw("POST", path(obj["kind"], namespace), body)
    assert status == 201, out
    set_status(kube, namespace, obj["kind"], obj["metadata"]["name"], obj.get("status") or {})
    return out


def set_status(kube, namespace: str, kind: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Replace the status (as observed at the current generation); a concurrent write (409) is retried."""
    def put() -> dict[str, Any] | None:
        current = get(kube, namespace, kind, name)
        wanted = copy.deepcopy(status)
        if "observedGeneration" in wanted:
            wanted["observedGeneration"] = current["metadata"]["generation"]
        code, out = kube.raw("PUT", path(kind, namespace, name) + "/status", {**current, "status": wanted})
        assert code in (200, 409), out
        return out if code == 200 else None

    return wait_for(put, timeout=30, message=f"{kind} {name} status written")


@pytest.fixture
def objects(kube) -> Iterator[str]:
    namespace = kube.new_namespace(prefix="kk")
    _put(kube, namespace, DATASET)
    for n, params in ((1, {"C": 0.5}), (2, {"C": 0.01}), (3, {"C": 1.0})):
        digest = MODEL["status"]["versions"][n - 1]["datasetDigest"]
        _put(kube, namespace, run(n, params, digest))
    _put(kube, namespace, MODEL)
    _put(kube, namespace, CANARY)
    _put(kube, namespace, AB)
    yield namespace
    kube.delete_namespace(namespace)


def merged(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what the spec must be after the command."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


def test_views(kube, objects) -> None:
    ns = objects
    out = kk(kube, ns, "get", "model", "iris")
    assert out.returncode == 0, out.stderr
    v3 = next(line for line in out.stdout.splitlines() if "v3  " in line)
    assert "[production]" in v3 and "[canary] iris canary 50%" in v3 and "accuracy=0.96" in v3
    assert "iris  stable v1  [canary] canary v3 50% step 2/2" in out.stdout
    assert "iris-ab  A/B test" in out.stdout

    assert json.loads(kk(kube, ns, "get", "model", "iris", "-o", "json").stdout)["status"]["productionVersion"] == 3
    listed = yaml.safe_load(kk(kube, ns, "get", "deployments", "-o", "yaml").stdout)
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["iris", "iris-ab"]

    out = kk(kube, ns, "get", "deployment", "iris")
    assert out.returncode == 0 and "canary v3 (Stepping)" in out.stdout and "petal_length" in out.stdout
    # the judged drift windows the API server stored (status.drift.history), one ASCII mark each when piped
    assert "drift over time  __:=::  6 judged windows of v1" in out.stdout
    assert "2026-05-01T11:45:00Z" in out.stdout and "[drifted]" in out.stdout
    stored = json.loads(kk(kube, ns, "get", "deployment", "iris", "-o", "json").stdout)["status"]["drift"]
    assert [w["time"] for w in stored["history"]][-1] == "2026-05-01T12:05:00Z"
    timeline = json.loads(kk(kube, ns, "history", "deployment", "iris", "-o", "json").stdout)
    assert len(timeline["driftWindows"]) == 6 and [e["field"] for e in timeline["events"]] == ["lastAnalysis"]
    out = kk(kube, ns, "get", "deployment", "iris-ab")
    assert "versions (A/B test since" in out.stdout and " 700 " in out.stdout

    lineage = json.loads(kk(kube, ns, "lineage", "model", "iris", "3", "-o", "json").stdout)
    assert lineage["trainingRun"]["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert lineage["data"]["rows"] == 180 and lineage["data"]["source"] == "s3://bucket/iris.csv"
    assert {(s["deployment"], s["role"]) for s in lineage["servedBy"]} == {("iris", "canary"), ("iris-ab", "variant")}
    text = kk(kube, ns, "lineage", "model", "iris", "v3").stdout
    assert "TrainingRun iris-run-3" in text and "validated 2026-05-01T11:05:00Z" in text

    compared = json.loads(kk(kube, ns, "compare", "model", "iris", "1", "3", "-o", "json").stdout)
    assert compared["metrics"][0] == {"name": "accuracy", "a": 0.9, "b": 0.96, "delta": pytest.approx(0.06),
                                      "better": 2, "lowerIsBetter": False}
    assert {p["name"]: (p["a"], p["b"]) for p in compared["params"]}["C"] == (0.5, 1.0)


def test_shadow_views(kube, objects) -> None:
    """status.shadow as the API server stores it: in the Deployment's view, the Model tree and -o json."""
    ns = objects
    _put(kube, ns, SHADOWED)
    out = kk(kube, ns, "get", "deployment", "iris-shadowed")
    assert out.returncode == 0, out.stderr
    assert "[shadow] shadow v3 (Running): 20% of v1's requests copied" in out.stdout
    assert "96.50%" in out.stdout and "85 labels; v1 0.91 in the same window" in out.stdout
    tree = kk(kube, ns, "get", "model", "iris").stdout
    v3 = next(line for line in tree.splitlines() if "v3  " in line)
    assert "[shadow] iris-shadowed shadow 20% copied" in v3
    assert "[shadow] shadow v3 20%: 480 req, agreement 96.50% of 1200 rows" in tree
    shadow = json.loads(kk(kube, ns, "get", "deployment", "iris-shadowed", "-o", "json").stdout)["status"]["shadow"]
    assert (shadow["agreement"], shadow["dropped"], shadow["predictionShift"]) == (0.965, 5, 0.031)
    assert yaml.safe_load(kk(kube, ns, "get", "deployment", "iris-shadowed", "-o", "yaml").stdout)[
        "status"]["shadow"]["liveValue"] == 0.93
    lineage = json.loads(kk(kube, ns, "lineage", "model", "iris", "3", "-o", "json").stdout)
    assert lineage["shadowOf"] == [{"deployment": "iris-shadowed", "state": "Running", "percent": 20}]


def test_report_writes_the_page_from_the_real_objects(kube, objects, tmp_path) -> None:
    page = tmp_path / "iris.html"
    out = kk(kube, objects, "report", "model", "iris", "-o", str(page))
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"wrote {page} (3 charts): open it in a browser\n"
    html = page.read_text()
    assert "<h1>Model iris v3</h1>" in html and 'data-chart="metrics"' in html and 'data-chart="drift-0"' in html
    # the drift history the API server stored (status.drift.history in the CRD's schema), drawn over time
    assert 'data-chart="drift-history-0"' in html and "over the last 6 judged windows of v1" in html
    assert "Deployment iris-ab" in html and "prediction shift (PSI)" in html

    # v3 records its held-out evaluation and confusion matrix, as the training Job reports them: the API server
    # takes them in Model status, and the page draws the matrix
    set_status(kube, objects, "Model", "iris", evaluated(MODEL)["status"])
    out = kk(kube, objects, "report", "model", "iris", "-o", str(page))
    assert out.returncode == 0 and out.stderr == f"wrote {page} (5 charts): open it in a browser\n", out.stderr
    html = page.read_text()
    assert 'data-chart="confusion"' in html and "virginica" in html
    out = kk(kube, objects, "report", "model", "iris", "9", "-o", str(page))
    assert out.returncode == 1 and "registered: v1, v2, v3" in out.stderr


def test_errors_say_what_to_do_next(kube, objects) -> None:
    out = kk(kube, objects, "get", "model", "irsi")
    assert out.returncode == 1 and "Model 'irsi' not found" in out.stderr and "models there: iris" in out.stderr
    out = kk(kube, objects, "lineage", "model", "iris", "7")
    assert out.returncode == 1 and "registered: v1, v2, v3" in out.stderr
    out = kk(kube, objects, "promote", "model", "iris", "2", "--context", "nowhere")
    assert out.returncode == 1 and "context 'nowhere' is not in" in out.stderr


@pytest.mark.parametrize(("kind", "argv", "patch"), [
    ("Deployment", ["pause", "deployment", "iris"], {"strategy": {"canary": {"paused": True}}}),
    ("Deployment", ["abort", "deployment", "iris"], {"modelRef": {"version": 1}}),
    ("Deployment", ["rollback", "deployment", "iris"], {"modelRef": {"version": 1}}),  # a canary runs: abort
    ("Deployment", ["pin", "deployment", "iris", "2"], {"modelRef": {"version": 2}}),
    ("Model", ["promote", "model", "iris", "1"], {"promotion": {"policy": "Manual"}, "production": 1}),
    ("Model", ["rollback", "model", "iris"], {"promotion": {"policy": "Manual"}, "production": 1}),
    ("Model", ["pin", "model", "iris", "v3"], {"promotion": {"policy": "Manual"}, "production": 3}),
])
def test_each_change_is_exactly_what_it_says(kube, objects, kind, argv, patch) -> None:
    ns = objects
    before = get(kube, ns, kind, "iris")
    printed = kk(kube, ns, *argv, "--print")
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["spec"] == patch
    unchanged = get(kube, ns, kind, "iris")  # --print changes nothing (status may: an operator may be running)
    assert unchanged["spec"] == before["spec"]
    assert unchanged["metadata"]["generation"] == before["metadata"]["generation"]

    out = kk(kube, ns, *argv)
    assert out.returncode == 0, out.stderr
    after = get(kube, ns, kind, "iris")
    assert after["spec"] == merged(before["spec"], patch)
    # written as the user's own change, and nothing but spec
    mine = [f for f in after["metadata"]["managedFields"] if f["manager"] == "kubectl-kultivar"]
    assert mine and all(set(f["fieldsV1"]) == {"f:spec"} and not f.get("subresource") for f in mine)


def test_undo_commands_remove_the_fields_they_set(kube, objects) -> None:
    ns = objects
    assert kk(kube, ns, "pause", "deployment", "iris").returncode == 0
    assert kk(kube, ns, "resume", "deployment", "iris").returncode == 0
    assert get(kube, ns, "Deployment", "iris")["spec"]["strategy"]["canary"]["paused"] is False
    again = kk(kube, ns, "resume", "deployment", "iris")
    assert again.returncode == 1 and "canary is not paused" in again.stderr
    assert kk(kube, ns, "pin", "deployment", "iris", "2").returncode == 0
    assert kk(kube, ns, "pin", "deployment", "iris", "--unpin").returncode == 0
    assert "version" not in get(kube, ns, "Deployment", "iris")["spec"]["modelRef"]
    assert kk(kube, ns, "promote", "model", "iris", "1").returncode == 0
    assert kk(kube, ns, "pin", "model", "iris", "--auto").returncode == 0
    spec = get(kube, ns, "Model", "iris")["spec"]
    assert spec["promotion"]["policy"] == "Automatic" and "production" not in spec
    refused = kk(kube, ns, "pause", "deployment", "iris-ab")
    assert refused.returncode == 1 and "runs no canary" in refused.stderr


def test_retrain_creates_a_run_like_productions(kube, objects) -> None:
    ns = objects
    printed = yaml.safe_load(kk(kube, ns, "retrain", "model", "iris", "--run-name", "again", "--print").stdout)
    out = kk(kube, ns, "retrain", "model", "iris", "--run-name", "again")
    assert out.returncode == 0, out.stderr
    created = get(kube, ns, "TrainingRun", "again")
    source = get(kube, ns, "TrainingRun", "iris-run-3")
    assert created["spec"]["estimator"] == source["spec"]["estimator"] == printed["spec"]["estimator"]
    assert created["spec"]["datasetRef"] == {"name": "iris-data"}  # the latest valid data, not v3's digest
    assert created["metadata"]["annotations"]["kultivar.io/retrained-from"] == "iris-run-3"


def _watch(kube, namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(PLUGIN), "--kubeconfig", str(kube.kubeconfig), "-n", namespace, "get", *args,
                             "--watch", "--interval", "0.2", "--timeout", "2m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def settle(kube, namespace: str, proc: subprocess.Popen[str], status: dict[str, Any]) -> None:
    """End the rollout as the operator would, until the watch has seen it (an operator of another test file, if
    one runs, writes this object's conditions too; it could put back ones it read just before ours)."""
    def watch_ended() -> bool:
        if proc.poll() is not None:
            return True
        set_status(kube, namespace, "Deployment", "iris", status)
        return False

    wait_for(watch_ended, timeout=60, interval=1.0, message="the watch ending after the rollout")


def _first_view(proc: subprocess.Popen[str]) -> str:
    """What the piped watch printed first: the view, closed by its "--- <state>" line (or all of it at exit)."""
    assert proc.stdout is not None
    seen = []
    while line := proc.stdout.readline():
        seen.append(line)
        if line.startswith("--- "):
            break
    return "".join(seen)


@pytest.mark.parametrize("what", [["deployment", "iris"], ["model", "iris"]])
def test_watch_ends_when_the_rollout_completes(kube, objects, what) -> None:
    ns = objects  # for the Model, its other Deployment (the A/B test) is settled already
    proc = _watch(kube, ns, *what)
    try:
        first = _first_view(proc)
        assert "canary v3" in first and "step 2/2" in first
        assert proc.poll() is None  # a canary is under way: the watch keeps going
        settle(kube, ns, proc, settled(CANARY)["status"])
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "rollout complete" in stderr and "v3 serves all traffic" in stderr
    assert "canary v3" not in stdout  # the last view shows the promoted version


def test_watch_of_a_rolled_back_canary_exits_1(kube, objects) -> None:
    ns = objects
    proc = _watch(kube, ns, "deployment", "iris")
    try:
        assert "canary v3" in _first_view(proc)
        rolled = settled(CANARY, version=1)
        rolled["status"]["rolledBack"] = [3]
        rolled["status"]["conditions"][2] = {"type": "Degraded", "status": "True", "reason": "RolledBack",
                                             "message": "v3 failed ErrorRate: 20% errors",
                                             "lastTransitionTime": ANALYSIS_TIME}
        settle(kube, ns, proc, rolled["status"])
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "rollout did not complete" in stderr and "v3 failed ErrorRate" in stderr


def test_history_names_who_pinned_production(kube, objects, operator) -> None:
    """Item 2 end to end: the operator records the user's pin with the plugin as its author (managedFields)."""
    ns = objects
    assert kk(kube, ns, "promote", "model", "iris", "1").returncode == 0
    pinned = wait_for(lambda: next((h for h in get(kube, ns, "Model", "iris")["status"].get("history") or []
                                    if h["type"] == "Pinned"), None),
                      timeout=60, message="the pin in the Model's history")
    assert pinned["version"] == 1 and pinned["actor"] == "kubectl-kultivar"
    assert pinned["reason"] == "spec.production pins v1 (was v3)"
    out = kk(kube, ns, "history", "model", "iris")
    assert out.returncode == 0 and "Pinned" in out.stdout and "kubectl-kultivar" in out.stdout
    as_json = json.loads(kk(kube, ns, "history", "model", "iris", "-o", "json").stdout)
    assert [h["type"] for h in as_json["history"]] == ["Pinned"]
