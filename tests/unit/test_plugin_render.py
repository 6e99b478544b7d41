"""The plugin's trees and tables from recorded objects: what a terminal shows and what a pipe gets."""

from __future__ import annotations

import copy

import pytest

from kultivar.api.deployment import DeploymentSpec, DeploymentStatus
from kultivar.api.model import ModelSpec, ModelStatus
from kultivar.plugin import facts, render
from kultivar.plugin.render import to_text
from plugin_objects import AB, AB_DECIDED, CANARY, D2, DATASET, MODEL, NOW, SHADOWED, WATCHED, run, settled


@pytest.mark.parametrize("obj", [MODEL, CANARY, AB, AB_DECIDED, WATCHED, SHADOWED],
                         ids=["model", "canary", "abtest", "abtest-decided", "performance", "shadow"])
def test_recorded_objects_match_the_api(obj) -> None:
    spec, status = (ModelSpec, ModelStatus) if obj["kind"] == "Model" else (DeploymentSpec, DeploymentStatus)
    spec.model_validate(obj["spec"])
    status.model_validate(obj["status"])


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def line_with(text: str, needle: str) -> str:
    found = [line for line in lines(text) if needle in line]
    assert found, f"no line with {needle!r} in:\n{text}"
    return found[0]


def test_model_tree_piped_marks_production_served_canary_and_gate_in_words() -> None:
    text = to_text(render.model_tree(MODEL, [CANARY, AB], fancy=False, now=NOW), width=200)
    assert lines(text)[0].startswith("Model iris  (namespace ml)  ok Ready=True ProductionSet: v3 is production")
    assert "policy Automatic, gate on accuracy >= 0.8" in text
    v1, v2, v3 = line_with(text, "v1  "), line_with(text, "v2  "), line_with(text, "v3  ")
    assert "[served] iris stable 50%" in v1 and "[served] iris-ab variant 70%" in v1 and "gate ok Passed" in v1
    assert "gate FAIL BelowMinimum" in v2 and "[served]" not in v2 and "data 111111111111" in v2
    assert "[production]" in v3 and "[canary] iris canary 50%" in v3 and "accuracy=0.96" in v3
    assert "data 222222222222" in v3 and "run iris-run-3" in v3
    dep = line_with(text, "iris  stable v1")
    assert "[canary] canary v3 50% step 2/2" in dep and "analysis ok Pass 1m ago" in dep
    assert "drift ok max PSI 0.41 (400 requests)" in dep and "live: 120 req" in dep
    assert "iris-ab  A/B test  v1=70%  v3=30%" in text
    assert not any(ch in text for ch in "✔✖★●◐")  # no symbols when piped


def test_model_tree_on_a_terminal_uses_symbols() -> None:
    text = to_text(render.model_tree(MODEL, [CANARY], fancy=True, now=NOW), width=200)
    assert "★ production" in line_with(text, "v3  ") and "gate ✖ BelowMinimum" in text
    assert "◐ canary v3 50% step 2/2" in text


def test_model_tree_says_what_to_do_when_empty_and_wide_shows_full_digests() -> None:
    empty = {**MODEL, "status": {}}
    text = to_text(render.model_tree(empty, [], fancy=False, now=NOW), width=200)
    assert "none registered yet" in text and "create a kultivar.io Deployment with modelRef.name: iris" in text
    wide = to_text(render.model_tree(MODEL, [], fancy=False, now=NOW, wide=True), width=250)
    assert D2 in wide and "gate: accuracy=0.96 beats production v1 (0.9)" in wide
    assert "artifact file:///store/ml/iris/v3/model.skops" in wide


def test_deployment_view_steps_analysis_drift_and_variants() -> None:
    text = to_text(render.deployment_view(CANARY, fancy=False, now=NOW), width=200)
    assert "Model iris (follows production), strategy Canary" in text
    assert "- Progressing=True CanaryStepping: step 2/2" in text
    assert "v3       canary  50%     2/2    118       0.01        0.02" in text
    assert "canary v3 (Stepping)" in text
    assert line_with(text, " 1     10%").split()[-1] == "done"
    # step 2 started 60 s before NOW and lasts 2m: half the bar
    assert "##########.......... 60s/120s" in line_with(text, " 2     50%")
    assert line_with(text, "error rate").split()[-4:] == ["0.01", "<=", "0.05", "ok"]
    assert line_with(text, "prediction shift").split()[-4:] == ["0.31", "<=", "0.25", "FAIL"]
    assert line_with(text, "requests ").split()[-4:] == ["118", ">=", "20", "ok"]
    assert "drift of v1: no drift, 0.25 of features past PSI 0.2" in text
    assert line_with(text, "petal_length").split()[-1] == "[drifted]"
    assert line_with(text, "sepal_width").split()[-1] == "-"


def test_deployment_view_says_when_a_drift_retraining_waits_or_was_skipped() -> None:
    waiting = {**CANARY, "status": {**CANARY["status"], "retrainWait": {
        "version": 1, "dataset": "iris", "productionDigest": "sha256:" + "a" * 64,
        "requestedAt": "2026-05-01T11:59:00Z", "skippedAt": None, "message": "drift"}}}
    text = to_text(render.deployment_view(waiting, fancy=False, now=NOW), width=200)
    assert "drift retraining waits for Dataset iris to be validated again" in text
    waiting["status"]["retrainWait"].update(skippedAt="2026-05-01T11:59:30Z",
                                            message="the source has no new data since v1 (sha256:aaaaaaaaaaaa…)")
    text = to_text(render.deployment_view(waiting, fancy=False, now=NOW), width=200)
    assert "drift retraining skipped" in text and "the source has no new data since v1" in text


def test_paused_canary_is_shown_paused() -> None:
    paused = {**CANARY, "spec": {**CANARY["spec"], "strategy": {
        "type": "Canary", "canary": {**CANARY["spec"]["strategy"]["canary"], "paused": True}}}}
    assert "[paused]" in line_with(to_text(render.deployment_view(paused, fancy=False, now=NOW), 200), " 2     50%")
    assert "[paused]" in to_text(render.deployment_line(paused, False, NOW), 200)


def test_ab_test_view_has_numbers_per_variant_and_no_canary_steps() -> None:
    text = to_text(render.deployment_view(AB, fancy=False, now=NOW), width=200)
    assert "versions (A/B test since 2026-05-01T12:00:00Z)" in text
    assert line_with(text, "v1 ").split() == ["v1", "variant", "70%", "1/1", "700", "0.002", "0.012"]
    assert "canary" not in text.lower().replace("strategy abtest", "")
    assert "no drift check yet" in text


def test_ab_test_view_shows_each_variants_live_metric_and_the_verdict() -> None:
    text = to_text(render.deployment_view(AB_DECIDED, fancy=False, now=NOW), width=220)
    assert line_with(text, "v1       variant").split() == ["v1", "variant", "70%", "1/1", "700", "0.002", "0.012",
                                                          "0.8612", "418"]
    assert line_with(text, "v3       variant").split()[-3:] == ["0.9305", "187", "winner"]
    assert "LIVE ACCURACY" in text and "LABELS" in text
    assert ("A/B decision on live accuracy (mSPRT (Johari et al. 2022), normal mixture, confidence 0.95): v3 wins, "
            "effect +0.0693 [0.0211, 0.1175], always-valid p=0.0031, after 17 looks") in text
    assert "ok ABTestConcluded=True WinnerSignificant: v3 wins over v1" in text
    assert "reported, not applied: kubectl kultivar promote model iris 3 --print" in text
    # Without a decision the table is as before (no empty metric columns).
    assert "LIVE" not in to_text(render.deployment_view(AB, fancy=False, now=NOW), width=220)


def test_ab_verdicts_before_a_winner() -> None:
    result = {**AB_DECIDED["status"]["abTest"]["result"], "verdict": "NoWinnerYet", "winner": None, "pValue": 0.31}
    assert render.ab_verdict(result).endswith("no winner yet, always-valid p=0.31 after 17 looks")
    collecting = {**result, "verdict": "CollectingSamples", "message": "collecting labels: v1 0.8 (40 labels)"}
    assert "collecting labels (collecting labels: v1 0.8 (40 labels))" in render.ab_verdict(collecting)
    dep = {**AB_DECIDED, "status": {**AB_DECIDED["status"], "abTest": {**AB_DECIDED["status"]["abTest"],
                                                                      "result": result}}}
    line = to_text(render.deployment_line(dep, False, NOW), 220)
    assert "A/B inconclusive no winner yet (p=0.31): v1 0.8612 (418 labels), v3 0.9305 (187 labels)" in line


def test_model_and_deployment_show_live_performance_and_a_b_numbers() -> None:
    line = to_text(render.deployment_line(WATCHED, False, NOW), 220)
    assert "live accuracy FAIL v1 0.8012 (640 labels, floor 0.85)" in line
    line = to_text(render.deployment_line(AB_DECIDED, False, NOW), 220)
    assert "A/B ok v3 wins (p=0.0031): v1 0.8612 (418 labels), v3 0.9305 (187 labels)" in line
    tree = to_text(render.model_tree(MODEL, [WATCHED, AB_DECIDED], fancy=False, now=NOW), width=260)
    assert "live accuracy FAIL v1 0.8012" in tree and "A/B ok v3 wins" in tree
    text = to_text(render.deployment_view(WATCHED, fancy=False, now=NOW), width=200)
    assert "live accuracy (floor 0.85, at least; window 1h, checked 2m ago)" in text
    assert line_with(text, "v1       0.8012").split() == ["v1", "0.8012", "640", "FAIL"]
    assert line_with(text, "v3       0.9").split() == ["v3", "0.9", "40"]
    assert "FAIL Underperforming=True BelowFloor: live accuracy of v1 is 0.8012" in text
    assert "Underperforming" not in to_text(render.deployment_view(CANARY, fancy=False, now=NOW), width=200)


def shadow_of(**changes: object) -> dict:
    """SHADOWED with status.shadow changed (None: the field removed), checked against the API."""
    dep = copy.deepcopy(SHADOWED)
    for key, value in changes.items():
        if value is None:
            dep["status"]["shadow"].pop(key, None)
        else:
            dep["status"]["shadow"][key] = value
    DeploymentStatus.model_validate(dep["status"])
    return dep


def test_deployment_view_shows_the_shadows_numbers_since_its_window_began() -> None:
    text = to_text(render.deployment_view(SHADOWED, fancy=False, now=NOW), width=200)
    assert ("[shadow] shadow v3 (Running): 20% of v1's requests copied, router replicas; window since 10m ago, "
            "measured 30s ago, pods") in text
    assert line_with(text, "requests  ").split()[:2] == ["requests", "480"]
    assert line_with(text, "error rate").split() == ["error", "rate", "0.0021"]
    assert line_with(text, "p95 latency").split() == ["p95", "latency", "(s)", "0.013"]
    assert line_with(text, "agreement").split()[:5] == ["agreement", "96.50%", "over", "1200", "compared"]
    assert line_with(text, "forward errors").split()[:3] == ["forward", "errors", "2"]
    assert line_with(text, "dropped").split()[:2] == ["dropped", "5"]
    assert line_with(text, "prediction shift").split()[:4] == ["prediction", "shift", "(PSI)", "0.031"]
    assert line_with(text, "live accuracy").split() == ["live", "accuracy", "0.93", "85", "labels;", "v1", "0.91",
                                                        "in", "the", "same", "window"]
    assert "mean |difference|" not in text
    # a shadow is never judged: no verdicts in its block
    block = text[text.index("[shadow]"):text.index("canary steps")]
    assert not any(word in block.split() for word in ("ok", "FAIL", "inconclusive"))
    fancy = to_text(render.deployment_view(SHADOWED, fancy=True, now=NOW), width=200)
    assert "◌ shadow v3 (Running)" in fancy
    assert "shadow" not in to_text(render.deployment_view(CANARY, fancy=False, now=NOW), width=200)


def test_shadow_of_a_regressor_through_a_gateway_and_before_its_numbers() -> None:
    regressor = shadow_of(agreement=None, meanAbsDifference=0.125, liveMetric="mae", liveValue=0.31,
                          stableLiveValue=0.29)
    text = to_text(render.deployment_view(regressor, fancy=False, now=NOW), width=200)
    assert line_with(text, "mean |difference|").split()[:5] == ["mean", "|difference|", "0.125", "over", "1200"]
    assert "agreement" not in text and line_with(text, "live mae").split()[:3] == ["live", "mae", "0.31"]
    assert "mean |diff| 0.125 over 1200 rows" in to_text(render.deployment_line(regressor, False, NOW), 260)

    mirrored = shadow_of(router="gatewayAPI", compared=None, agreement=None, forwardErrors=None, dropped=None)
    text = to_text(render.deployment_view(mirrored, fancy=False, now=NOW), width=200)
    assert "not compared per request (router gatewayAPI discards the shadow's answers)" in line_with(text,
                                                                                                     "agreement")
    assert "forward errors" not in text and "dropped" not in text
    assert line_with(text, "prediction shift").split()[:4] == ["prediction", "shift", "(PSI)", "0.031"]

    unlabelled = shadow_of(liveValue=None, labels=None, stableLiveValue=None)
    assert "no labels counted for it yet" in line_with(
        to_text(render.deployment_view(unlabelled, fancy=False, now=NOW), width=200), "live accuracy")

    waiting = shadow_of(state="Waiting", measuredAt=None, requests=None,
                        message="v3 answers users now (it is the canary): nothing is copied to it")
    text = to_text(render.deployment_view(waiting, fancy=False, now=NOW), width=200)
    assert "[shadow] shadow v3 (Waiting): 20% of v1's requests to copy, router replicas" in text
    assert "v3 answers users now (it is the canary): nothing is copied to it" in text and "MEASURE" not in text
    assert "[shadow] shadow v3 20% waiting" in to_text(render.deployment_line(waiting, False, NOW), 260)

    starting = shadow_of(state="Running", measuredAt=None, message="copies flowing; first numbers after one interval")
    text = to_text(render.deployment_view(starting, fancy=False, now=NOW), width=200)
    assert "copies flowing; first numbers after one interval" in text and "MEASURE" not in text


def test_model_tree_marks_the_shadow_version_and_its_numbers() -> None:
    text = to_text(render.model_tree(MODEL, [CANARY, SHADOWED], fancy=False, now=NOW), width=300)
    v1, v3 = line_with(text, "v1  "), line_with(text, "v3  ")
    assert "[canary] iris canary 50%  [shadow] iris-shadowed shadow 20% copied" in v3
    assert "[shadow]" not in v1 and "[served] iris-shadowed stable 100%" in v1
    assert ("iris-shadowed  stable v1  [shadow] shadow v3 20%: 480 req, agreement 96.50% of 1200 rows, errors "
            "0.0021, p95 0.013s, PSI 0.031, live accuracy 0.93 (85 labels) vs v1 0.91") in text
    fancy = to_text(render.model_tree(MODEL, [SHADOWED], fancy=True, now=NOW), width=300)
    assert "◌ iris-shadowed shadow 20% copied" in line_with(fancy, "v3  ")
    starting = to_text(render.model_tree(MODEL, [shadow_of(state="Starting")], fancy=False, now=NOW), width=300)
    assert "[shadow] iris-shadowed shadow 20% copied (starting)" in line_with(starting, "v3  ")


def test_lineage_names_the_deployment_a_version_is_the_shadow_of() -> None:
    data = facts.lineage(MODEL, 3, run(3, {"C": 1.0}, D2), DATASET, [CANARY, SHADOWED])
    assert data["shadowOf"] == [{"deployment": "iris-shadowed", "state": "Running", "percent": 20}]
    assert data["servedBy"] == [{"deployment": "iris", "role": "canary", "weight": 50}]
    text = to_text(render.lineage_tree(data, fancy=False), width=200)
    assert "[shadow] Deployment iris-shadowed (shadow, 20% of requests copied, Running)" in text
    assert facts.lineage(MODEL, 1, None, None, [SHADOWED])["shadowOf"] == []


def test_lineage_tree_goes_from_data_to_deployments() -> None:
    data = facts.lineage(MODEL, 3, run(3, {"C": 1.0}, D2, best={"max_iter": 300}), DATASET, [CANARY])
    text = to_text(render.lineage_tree(data, fancy=False), width=200)
    order = ["data Dataset iris-data  source s3://bucket/iris.csv  digest 222222222222  180 rows",
             "ok validated 2026-05-01T11:05:00Z",
             "TrainingRun iris-run-3  sklearn.linear_model.LogisticRegression  params {'C': 1.0, 'max_iter': 300}",
             "v3  [production]  accuracy=0.96, f1=0.95  gate ok Improved",
             "[canary] Deployment iris (canary, 50%)"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)


def test_lineage_of_a_version_whose_run_and_data_are_gone_says_so() -> None:
    data = facts.lineage(MODEL, 2, None, None, [])
    text = to_text(render.lineage_tree(data, fancy=False), width=200)
    assert "(Dataset gone)" in text and "(run deleted)" in text and "not served by any Deployment" in text


def test_compare_table() -> None:
    data = facts.comparison(MODEL, 1, 3, run(1, {"C": 0.5}, MODEL["status"]["versions"][0]["datasetDigest"]),
                            run(3, {"C": 1.0}, D2, best={"max_iter": 300}))
    text = to_text(render.compare_table(data, fancy=False), width=200)
    assert line_with(text, "accuracy").split() == ["accuracy", "0.9", "0.96", "+0.06", "v3", "better"]
    assert line_with(text, "estimator").split() == ["estimator", "LogisticRegression", "LogisticRegression"]
    assert line_with(text, " C ").split() == ["C", "0.5", "1", "differs"]
    assert line_with(text, "max_iter").split() == ["max_iter", "-", "300", "differs"]
    assert line_with(text, "dataset digest").split() == ["dataset", "digest", "111111111111", "222222222222",
                                                         "differs"]
    assert "evaluated on different held-out rows" in text


def test_lists() -> None:
    text = to_text(render.models_table([MODEL], False, NOW), width=200)
    assert line_with(text, "iris").split() == ["iris", "v3", "v3", "3", "True", "2h", "ago"]
    text = to_text(render.deployments_table([CANARY, settled(CANARY)], False, NOW), width=200)
    assert line_with(text, "v1").split()[:5] == ["iris", "iris", "v1", "v3", "50%"]


def test_history_table() -> None:
    model = {**MODEL, "status": {**MODEL["status"], "history": [
        {"time": "2026-05-01T11:00:00Z", "type": "Registered", "version": 3, "actor": "operator",
         "reason": "from TrainingRun iris-run-3: accuracy=0.96 beats production v1 (0.9)"},
        {"time": "2026-05-01T12:05:00Z", "type": "Pinned", "version": 1, "actor": "kubectl-kultivar",
         "reason": "spec.production pins v1 (was v3)"},
        {"time": "2026-05-01T12:06:00Z", "type": "TrainingStarted", "trainingRun": "iris-retrain-1",
         "actor": "kubectl-kultivar", "reason": "TrainingRun iris-retrain-1 (manual)"}]}}
    ModelStatus.model_validate(model["status"])
    text = to_text(render.history_table(model, fancy=False, now=NOW), width=200)
    assert line_with(text, "Pinned").split()[-8:] == ["Pinned", "v1", "kubectl-kultivar", "spec.production", "pins",
                                                      "v1", "(was", "v3)"]
    assert "5m ago" in line_with(text, "Pinned") and "iris-retrain-1" in line_with(text, "TrainingStarted")
    assert "no recorded history yet" in to_text(render.history_table(MODEL, fancy=False, now=NOW))


def test_a_canary_rolled_back_for_its_model_server_shows_why_in_the_analysis_table() -> None:
    failed = {**CANARY, "status": {**CANARY["status"], "lastAnalysis": {
        "time": "2026-05-01T11:59:00Z", "verdict": "Fail", "failedCheck": "ServerFailed",
        "message": "ModelDigestMismatch: model.skops has another digest"}}}
    DeploymentStatus.model_validate(failed["status"])
    text = to_text(render.deployment_view(failed, fancy=False, now=NOW), width=200)
    assert line_with(text, "model server").split()[-3:] == ["failed", "starts", "FAIL"]
    assert "ModelDigestMismatch: model.skops has another digest" in text
    assert line_with(text, "error rate").split()[-1] == "measured"  # "not measured": no traffic reached it


# --- drift over time (status.drift.history) ------------------------------------------------------------------


def _with_history(history: list[dict], **status) -> dict:
    dep = copy.deepcopy(CANARY)
    dep["status"]["drift"]["history"] = history
    dep["status"].update(status)
    DeploymentStatus.model_validate(dep["status"])  # the fixture is what the API server would store
    return dep


def _windows(count: int, new_version_at: int | None = None) -> list[dict]:
    """``count`` judged windows five minutes apart ending 12:05, their drifted share rising and falling; from
    index ``new_version_at`` on they are v3's."""
    out = []
    for i in range(count):
        minute = 12 * 60 + 5 - 5 * (count - 1 - i)
        share = [0.0, 0.25, 0.5, 0.75, 1.0, 0.5][i % 6]
        out.append({"time": f"2026-05-01T{minute // 60:02d}:{minute % 60:02d}:00Z",
                    "version": 3 if new_version_at is not None and i >= new_version_at else 1,
                    "samples": 100 + i, "drifted": share >= 0.5, "driftedShare": share, "unseenShare": 0.0,
                    "features": [{"feature": "sepal_width", "psi": 0.01},
                                 {"feature": f"f{i}", "psi": round(0.1 + share / 2, 3)}]})
    return out


def test_drift_history_of_a_deployment_without_a_judged_window_says_so() -> None:
    empty = _with_history([])
    assert "no judged window yet" in to_text(render.drift_history_view(empty, fancy=False, now=NOW))
    assert "no judged window yet" in to_text(render.deployment_view(empty, fancy=False, now=NOW), width=200)
    never_checked = {**CANARY, "status": {k: v for k, v in CANARY["status"].items() if k != "drift"}}
    assert render.drift_history_view(never_checked, fancy=False, now=NOW) is None  # "no drift check yet" says it
    text = to_text(render.deployment_view(never_checked, fancy=False, now=NOW), width=200)
    assert "no drift check yet" in text and "drift over time" not in text


def test_one_judged_window_is_one_row_and_one_mark() -> None:
    dep = _with_history(_windows(1)[-1:])
    text = to_text(render.deployment_view(dep, fancy=False, now=NOW), width=200)
    summary = line_with(text, "drift over time")
    assert summary.split()[3] == "_" and "1 judged window of v1 5m ago, 0 judged drifted" in summary
    row = line_with(text, "2026-05-01T12:05:00Z")
    # the worst feature, not the first listed
    assert row.split() == ["2026-05-01T12:05:00Z", "v1", "0%", "f0", "0.1", "100"]
    assert "older window" not in text


def test_24_windows_list_the_newest_and_count_the_older_ones() -> None:
    dep = _with_history(_windows(24, new_version_at=20))
    text = to_text(render.deployment_view(dep, fancy=False, now=NOW), width=200)
    rows = [line for line in lines(text) if line.startswith("2026-05-01T")]
    assert len(rows) == render.DRIFT_ROWS == 8
    assert rows[0].split()[0] == "2026-05-01T11:30:00Z" and rows[-1].split()[0] == "2026-05-01T12:05:00Z"
    assert rows[-1].split()[1:] == ["v3", "50%", "[drifted]", "f23", "0.35", "123"]  # newest last
    assert line_with(text, "11:55:00Z").split()[1:4] == ["v3", "75%", "[drifted]"]
    assert "16 older windows not listed: -o wide or kubectl kultivar history deployment iris lists all 24" in text
    # the sparkline still covers every kept window: 24 marks, | where v3 took over
    spark = line_with(text, "drift over time").split()[3]
    assert spark == "_:=*#=" * 3 + "_:|=*#=" and "24 judged windows of v1, v3" in text
    assert "16 judged drifted" in text  # shares 0.5, 0.75, 1, 0.5 of every six
    wide = to_text(render.deployment_view(dep, fancy=False, now=NOW, wide=True), width=200)
    assert len([line for line in lines(wide) if line.startswith("2026-05-01T")]) == 24
    assert "older window" not in wide


def test_drift_history_piped_is_ascii_and_on_a_terminal_block_characters() -> None:
    dep = _with_history(_windows(6))
    piped = to_text(render.drift_history_view(dep, fancy=False, now=NOW), width=200)
    assert piped.isascii() and "_:=*#=" in piped and "[drifted]" in piped
    fancy = to_text(render.drift_history_view(dep, fancy=True, now=NOW), width=80)
    # one line per window on an 80-column terminal
    assert line_with(fancy, "12:05:00Z").split() == ["2026-05-01T12:05:00Z", "v1", "50%", "⚠", "drifted", "f5",
                                                     "0.35", "105"]
    assert "▁▃▅▇█▅" in fancy and "⚠ drifted" in fancy and "▁ no feature past the threshold .. █ all" in fancy


@pytest.mark.parametrize(("share", "level"), [(0.0, 0), (0.01, 1), (1 / 7, 1), (0.25, 2), (0.5, 4), (0.99, 7),
                                              (1.0, 7), (1.5, 7)])
def test_spark_levels_never_show_a_drifted_feature_as_none(share, level) -> None:
    assert render.spark_level(share) == level


def test_a_window_recorded_without_a_share_is_a_question_mark() -> None:
    window = {k: v for k, v in _windows(1)[0].items() if k != "driftedShare"}
    assert render.drift_sparkline([window], fancy=True).plain == "?"


def test_deployment_history_is_one_timeline_of_drift_and_decisions() -> None:
    dep = _with_history(_windows(3), rolledBack=[2], lastRetrain={
        "trainingRun": "iris-drift-1", "time": "2026-05-01T11:57:00Z", "reason": "v1 drifted", "trigger": "drift",
        "recent": ["2026-05-01T11:57:00Z"], "count": 1})
    history = facts.deployment_history(dep)
    assert [e["field"] for e in history["events"]] == ["lastRetrain", "lastAnalysis"]
    assert history["driftWindows"] == dep["status"]["drift"]["history"] and history["rolledBack"] == [2]
    text = to_text(render.deployment_history_table(history, fancy=False, now=NOW), width=200)
    whats = [line.split("ago)")[1].split("  ")[1].strip() for line in lines(text) if line.startswith(" 2026-")]
    assert whats == ["ok drift window", "- retraining started", "ok drift window", "[drifted] window",
                     "ok canary analysis Pass"]
    assert "TrainingRun iris-drift-1 (drift): v1 drifted" in text and "[rolled back]: v2" in text
    assert "50% of features drifted, worst f2 PSI 0.35, 102 requests" in text


def test_deployment_history_names_a_failed_check_and_a_waiting_or_skipped_retraining() -> None:
    dep = _with_history([], lastAnalysis={"time": "2026-05-01T12:01:00Z", "verdict": "Fail",
                                          "failedCheck": "ServerFailed", "message": "CrashLoopBackOff"},
                        retrainWait={"version": 1, "dataset": "iris", "productionDigest": "sha256:" + "a" * 64,
                                     "requestedAt": "2026-05-01T11:59:00Z", "message": ""})
    text = to_text(render.deployment_history_table(facts.deployment_history(dep), fancy=False, now=NOW), width=200)
    assert "ServerFailed failed: CrashLoopBackOff" in text and "drift over time" not in text
    assert line_with(text, "11:59:00Z").split()[3:6] == ["inconclusive", "retraining", "waits"]
    dep["status"]["retrainWait"].update(skippedAt="2026-05-01T12:03:00Z", message="the source has no new data")
    text = to_text(render.deployment_history_table(facts.deployment_history(dep), fancy=False, now=NOW), width=200)
    assert "retraining skipped" in line_with(text, "12:03:00Z") and "the source has no new data" in text
    bare = {"metadata": {"name": "new"}, "status": {}}
    assert "nothing recorded yet" in to_text(render.deployment_history_table(facts.deployment_history(bare),
                                                                             fancy=False, now=NOW))
