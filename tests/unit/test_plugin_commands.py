"""The plugin's command line: kubectl's flags anywhere, help with examples, errors that say what to do next."""

from __future__ import annotations

import argparse
import copy
import io
import json

import pytest
from rich.console import Console

from kultivar.cli import build_parser as kultivar_parser
from kultivar.plugin import commands, facts
from kultivar.plugin.commands import Failed, build_parser, main
from plugin_objects import CANARY, settled


def test_connection_flags_work_before_and_after_the_command() -> None:
    before = build_parser().parse_args(["-n", "ml", "--context", "dev", "get", "model", "iris"])
    after = build_parser().parse_args(["get", "model", "iris", "-n", "ml", "--context", "dev"])
    for args in (before, after):
        assert (args.namespace, args.context, args.kind, args.name) == ("ml", "dev", "Model", "iris")
    assert build_parser().parse_args(["get", "deployments"]).namespace is None


def test_the_kultivar_command_has_the_same_subcommands() -> None:
    args = kultivar_parser().parse_args(["compare", "model", "iris", "v2", "3", "-o", "json"])
    assert (args.kind, args.first, args.second, args.output) == ("Model", 2, 3, "json")


@pytest.mark.parametrize("argv", [["promote", "deployment", "x", "1"], ["get", "dataset", "x"],
                                  ["lineage", "model", "x", "latest"], ["get", "model", "x", "-o", "xml"],
                                  ["get", "deployment", "x", "--watch", "--timeout", "soon"]])
def test_bad_arguments_exit_2_with_the_accepted_forms(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["get", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "kubectl kultivar get model iris --watch" in out


def test_no_kubeconfig_says_how_to_point_at_a_cluster(tmp_path, capsys) -> None:
    code = main(["--kubeconfig", str(tmp_path / "missing"), "get", "model", "iris"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: no usable kubeconfig at")
    assert "--kubeconfig" in err and "--context" in err and "make cluster-up" in err


def test_unknown_context_lists_the_contexts(tmp_path, capsys) -> None:
    config = tmp_path / "config"
    config.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: dev, context: {cluster: c, user: u}}, {name: prod, context: {cluster: c, user: u}}]
current-context: dev
""")
    assert main(["--kubeconfig", str(config), "--context", "stage", "get", "models"]) == 1
    assert "context 'stage' is not in" in (err := capsys.readouterr().err) and "dev, prod" in err
    # a server that is not there: one line naming it, not a traceback
    assert main(["--kubeconfig", str(config), "get", "models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach https://127.0.0.1:1 (context dev)") and "cluster-info" in err


def _watch_args(**kw):
    return argparse.Namespace(**{"timeout": None, "interval": 0.0, "output": None, **kw})


def _fake_watch(states, args):
    seen = iter(states)
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)

    def snapshot():
        return next(seen), []

    code = commands._watch(console, snapshot, lambda m, d: f"rv {m['metadata']['resourceVersion']}",
                           lambda m, d: facts.rollout_state(m), args)
    return code, console.file.getvalue()


def test_watch_prints_each_change_once_and_ends_with_the_rollout(capsys) -> None:
    same = copy.deepcopy(CANARY)
    done = settled(CANARY)
    done["metadata"]["resourceVersion"] = "201"
    code, out = _fake_watch([CANARY, same, done], _watch_args())
    assert code == 0 and out.count("rv 200") == 1 and "rv 201" in out
    assert "rollout complete: iris: v3 serves all traffic" in capsys.readouterr().err


def test_watch_of_a_rollback_or_past_its_timeout_fails() -> None:
    rolled = settled(CANARY, version=1)
    rolled["status"]["conditions"][2] = {"type": "Degraded", "status": "True", "reason": "RolledBack",
                                         "message": "v3 failed ErrorRate", "lastTransitionTime": "x"}
    with pytest.raises(Failed, match="rollout did not complete: iris: v3 failed ErrorRate"):
        _fake_watch([CANARY, rolled], _watch_args())
    with pytest.raises(Failed, match="timed out after 0s"):
        _fake_watch([CANARY] * 3, _watch_args(timeout="0s"))


def test_history_takes_a_deployment_and_views_take_no_color() -> None:
    args = build_parser().parse_args(["history", "deployment", "iris", "--no-color", "-o", "json"])
    assert (args.kind, args.no_color, args.output) == ("Deployment", True, "json")
    for argv in (["get", "deployment", "iris"], ["lineage", "model", "iris", "1"], ["compare", "model", "i", "1", "2"]):
        assert build_parser().parse_args([*argv, "--no-color"]).no_color is True
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert commands._fancy(terminal, argparse.Namespace(no_color=False)) is True
    assert commands._fancy(terminal, argparse.Namespace(no_color=True)) is False


def test_history_deployment_prints_the_timeline_or_its_facts(monkeypatch, capsys) -> None:
    monkeypatch.setattr(commands.fetch, "get", lambda target, kind, name: copy.deepcopy(CANARY))
    args = build_parser().parse_args(["history", "deployment", "iris", "-o", "json"])
    assert commands.cmd_history(args, None) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["deployment"] == "iris" and data["driftWindows"] == CANARY["status"]["drift"]["history"]
    assert [e["field"] for e in data["events"]] == ["lastAnalysis"] and data["rolledBack"] == []
    assert commands.cmd_history(build_parser().parse_args(["history", "deployment", "iris"]), None) == 0
    out = capsys.readouterr().out
    assert "Deployment iris: drift and decisions over time" in out and "drift over time  __:=::" in out
