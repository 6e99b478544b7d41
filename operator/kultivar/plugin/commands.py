"""The commands of `kubectl kultivar` (and of `kultivar`): arguments, printing, watching, exit codes.

Exit codes: 0 done; 1 an error, a refused change, or a watched rollout that ended rolled back/degraded or timed
out; 2 bad arguments (argparse); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console, RenderableType

from kultivar.api.common import parse_duration
from kultivar.k8s.client import ApiError
from kultivar.plugin import changes, facts, fetch, render, report
from kultivar.plugin.cluster import HOW_TO_POINT, ClusterUnavailable, Target, connect

EXAMPLES = """\
examples:
  kubectl kultivar get models                       # every Model in the namespace
  kubectl kultivar get model iris --watch           # versions and Deployments, live until the rollout ends
  kubectl kultivar get deployment iris -n ml        # canary steps, last analysis, drift (now and over time), A/B
  kubectl kultivar lineage model iris 3             # data -> validation -> TrainingRun -> v3 -> Deployments
  kubectl kultivar compare model iris 2 3           # metrics, parameters and data side by side
  kubectl kultivar history model iris               # registered, promoted, pinned, rolled back: when, why, by whom
  kubectl kultivar history deployment iris          # judged drift windows, last analysis and retraining: a timeline
  kubectl kultivar report model iris -o iris.html   # one HTML page: card, metrics, evaluation, drift, canary
  kubectl kultivar promote model iris 2             # pin v2 as production (spec.production)
  kubectl kultivar promote model iris 2 --print     # the same change as YAML to commit (GitOps)
  kubectl kultivar pause deployment iris            # hold the canary at its step; resume continues it
  kubectl kultivar abort deployment iris            # stop the canary, keep the stable version
  kubectl kultivar rollback model iris              # production back to the previous good version
  kubectl kultivar retrain model iris               # a new TrainingRun like production's, on the latest data
"""

KINDS = {"model": "Model", "models": "Model", "mdl": "Model",
         "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment", "kd": "Deployment"}


class Failed(Exception):
    """A command's outcome that is not an error message but still a non-zero exit (e.g. a rolled-back watch)."""


def _now() -> datetime:
    return datetime.now(UTC)


def version_arg(text: str) -> int:
    try:
        number = int(text.lower().removeprefix("v"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version: use a number such as 3 or v3") from None
    if number < 1:
        raise argparse.ArgumentTypeError("versions start at 1")
    return number


def duration_arg(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _kind(allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        kind = KINDS.get(text.lower())
        if kind is None or kind not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: this command takes {' or '.join(a.lower() for a in allowed)}")
        return kind
    return parse


def connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """kubectl's flags. On subcommands their default is SUPPRESS so a value given before the command stands."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's, or default)")
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")


def _output(parser: argparse.ArgumentParser, wide: bool = True) -> None:
    parser.add_argument("-o", "--output", choices=["json", "yaml", "wide"] if wide else ["json", "yaml"],
                        help="json or yaml for scripts" + (", wide for full digests and URIs" if wide else ""))


def _no_color(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-color", action="store_true",
                        help="plain words and characters without colour, as when piped, also on a terminal")


def _print_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the change as YAML to commit (GitOps) instead of applying it")


def add_commands(subparsers: Any) -> None:
    """Add the plugin's commands to a parser's subparsers (kubectl-kultivar's, or the kultivar command's)."""
    common = argparse.ArgumentParser(add_help=False)
    connection_options(common, suppress=True)

    def sub(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, help=help_, description=description, parents=[common], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)

    p = sub("get", "show a Model (tree of versions and Deployments) or a Deployment (rollout, analysis, drift)",
            "Show a Model as a tree (versions with metric, gate, production/served markers, data digest; its "
            "Deployments) or a Deployment (canary steps, last analysis per check, drift per feature and over the last "
            "judged windows, numbers per version). Without NAME: a table of all of them.")
    p.add_argument("kind", type=_kind(["Model", "Deployment"]), help="model or deployment (plural for a list)")
    p.add_argument("name", nargs="?", help="object name (omit for a list)")
    _output(p)
    p.add_argument("-w", "--watch", action="store_true",
                   help="refresh until the rollout ends: exit 0 when it completed, 1 when it rolled back")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    p.add_argument("--timeout", type=duration_arg, default=None,
                   help="give up watching after this long (e.g. 10m); exit 1")
    _no_color(p)
    p.set_defaults(func=cmd_get)

    p = sub("lineage", "where a model version came from and where it is served",
            "Data source and digest -> validation -> TrainingRun (estimator, parameters, image) -> version -> "
            "the Deployments serving it.")
    p.add_argument("kind", type=_kind(["Model"]), help="model")
    p.add_argument("name")
    p.add_argument("version", type=version_arg)
    _output(p)
    _no_color(p)
    p.set_defaults(func=cmd_lineage)

    p = sub("compare", "two versions side by side", "Metrics (noting whether both were evaluated on the same "
            "held-out rows), parameters and data digests of two versions of a Model.")
    p.add_argument("kind", type=_kind(["Model"]), help="model")
    p.add_argument("name")
    p.add_argument("first", type=version_arg)
    p.add_argument("second", type=version_arg)
    _output(p)
    _no_color(p)
    p.set_defaults(func=cmd_compare)

    p = sub("history", "what happened to a Model or a Deployment over time",
            "model: the Model's recorded history (status.history): versions registered, promoted, pinned, rolled "
            "back, training started; with time, reason and who caused it (operator, or the field manager of your "
            "change). deployment: one timeline of the judged drift windows the Deployment keeps "
            "(status.drift.history) and its last canary analysis and retraining, with the versions rolled back.")
    p.add_argument("kind", type=_kind(["Model", "Deployment"]), help="model or deployment")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="json or yaml for scripts")
    _no_color(p)
    p.set_defaults(func=cmd_history)

    p = sub("report", "write one self-contained HTML page about a Model",
            "One HTML page that opens offline in any browser: the model card of VERSION (default: production, "
            "else the newest), metrics per version over time, the held-out evaluation, and per Deployment the "
            "canary analysis, rollbacks and drift per feature. Charts are inline SVG (needs "
            f"{report.INSTALL_HINT}).")
    p.add_argument("kind", type=_kind(["Model"]), help="model")
    p.add_argument("name")
    p.add_argument("version", type=version_arg, nargs="?", help="the version of the model card")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="the file to write (default: NAME-report.html; - for standard output)")
    p.set_defaults(func=cmd_report)

    p = sub("promote", "make a version production (pins spec.production)",
            "Set the Model's spec.production to VERSION (with promotion.policy Manual, which a pin requires).")
    p.add_argument("kind", type=_kind(["Model"]), help="model")
    p.add_argument("name")
    p.add_argument("version", type=version_arg)
    _print_flag(p)
    p.set_defaults(func=cmd_promote)

    p = sub("pin", "pin a Model's production or a Deployment's served version",
            "model NAME VERSION: as promote. model NAME --auto: back to the Automatic gate. deployment NAME VERSION: "
            "serve exactly VERSION (spec.modelRef.version). deployment NAME --unpin: follow production again.")
    p.add_argument("kind", type=_kind(["Model", "Deployment"]), help="model or deployment")
    p.add_argument("name")
    p.add_argument("version", type=version_arg, nargs="?")
    p.add_argument("--unpin", "--auto", dest="unpin", action="store_true",
                   help="remove the pin (a Model returns to the Automatic policy)")
    _print_flag(p)
    p.set_defaults(func=cmd_pin)

    p = sub("rollback", "go back to an earlier version",
            "model: production becomes the newest earlier version that passed its gate (or --to). deployment: a "
            "running canary is aborted; otherwise the Deployment is pinned to the earlier version (or --to).")
    p.add_argument("kind", type=_kind(["Model", "Deployment"]), help="model or deployment")
    p.add_argument("name")
    p.add_argument("--to", type=version_arg, help="the version to go back to")
    _print_flag(p)
    p.set_defaults(func=cmd_rollback)

    for name, help_, description in (
        ("pause", "hold a Deployment's canary at its step", "Set spec.strategy.canary.paused: no analysis, no next "
         "step until resume."),
        ("resume", "continue a paused canary", "Set spec.strategy.canary.paused back to false."),
        ("abort", "stop a Deployment's canary and keep its stable version",
         "Pin spec.modelRef.version to the stable version; pin --unpin later retries the canary."),
    ):
        p = sub(name, help_, description)
        p.add_argument("kind", type=_kind(["Deployment"]), help="deployment")
        p.add_argument("name")
        _print_flag(p)
        p.set_defaults(func=cmd_canary, action=name)

    p = sub("retrain", "train a new version like production's, on the latest data",
            "Create a TrainingRun with the spec of the run behind the production version (or the newest one), "
            "on the Dataset's latest valid version (--same-data keeps the pinned digest).")
    p.add_argument("kind", type=_kind(["Model"]), help="model")
    p.add_argument("name")
    p.add_argument("--same-data", action="store_true", help="train on the same Dataset version")
    p.add_argument("--run-name", help="name of the new TrainingRun (default: <model>-retrain-<time>)")
    _print_flag(p)
    p.set_defaults(func=cmd_retrain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl kultivar", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Kultivar's Models and Deployments from the terminal, with your kubeconfig like kubectl.")
    connection_options(parser, suppress=False)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


# --- running ------------------------------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> Target:
    return connect(getattr(args, "kubeconfig", None), getattr(args, "context", None), getattr(args, "namespace", None))


def _console(args: argparse.Namespace | None = None) -> Console:
    no_color = bool(getattr(args, "no_color", False))
    console = Console(soft_wrap=False, highlight=False, no_color=no_color)
    if not console.is_terminal:  # piped: one line per item as kubectl prints, not wrapped at 80 columns
        console = Console(soft_wrap=False, highlight=False, width=max(console.width, 200))
    return console


def _fancy(console: Console, args: argparse.Namespace) -> bool:
    """Symbols, block characters and colour on a terminal; the piped words and ASCII with --no-color too."""
    return console.is_terminal and not getattr(args, "no_color", False)


def _dump(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(obj, sort_keys=False)


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; every failure becomes one line on stderr that says what to do next."""
    target: Target | None = None
    try:
        target = _target(args)
        return int(args.func(args, target) or 0)
    except (ClusterUnavailable, fetch.NotFound, facts.Refused) as e:
        return _error(str(e))
    except Failed as e:
        print(str(e), file=sys.stderr)
        return 1
    except ApiError as e:
        if e.status in (401, 403):
            return _error(f"{e.message}; the cluster refused your credentials for this: ask for access "
                          f"(check with kubectl auth can-i) or use another --context")
        return _error(e.message)
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # urllib3's connection errors are OSErrors; the server is down or elsewhere
        where = f"{target.server} (context {target.context})" if target else "the API server"
        return _error(f"cannot reach {where}: {e}; check that it runs (kubectl cluster-info) or {HOW_TO_POINT}")
    except Exception as e:
        from urllib3.exceptions import HTTPError

        if isinstance(e, HTTPError):
            where = f"{target.server} (context {target.context})" if target else "the API server"
            return _error(f"cannot reach {where}: {e}; check that it runs (kubectl cluster-info) or {HOW_TO_POINT}")
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-kultivar`: kubectl finds it on PATH and runs it for `kubectl kultivar ...`."""
    return run(build_parser().parse_args(argv))


# --- get ----------------------------------------------------------------------------------------------------


def _model_snapshot(target: Target, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return fetch.get(target, "Model", name), fetch.deployments_of(target, name)


def _combined_state(deployments: list[dict[str, Any]]) -> facts.RolloutState:
    states = [facts.rollout_state(d) for d in deployments]
    if not states:
        return facts.RolloutState(True, True, "no Deployment serves this Model")
    return facts.RolloutState(all(s.done for s in states), all(s.ok for s in states),
                              "; ".join(s.message for s in states))


def cmd_get(args: argparse.Namespace, target: Target) -> int:
    console = _console(args)
    fancy = _fancy(console, args)
    wide = args.output == "wide"
    if not args.name:
        if args.watch:
            raise facts.Refused("--watch needs a NAME")
        items = fetch.list_objects(target, args.kind)
        if args.output in ("json", "yaml"):
            sys.stdout.write(_dump(_as_list(items), args.output))
            return 0
        if not items:
            print(f"No {fetch.PLURAL[args.kind]} in namespace {target.namespace}.", file=sys.stderr)
            return 0
        table = render.models_table if args.kind == "Model" else render.deployments_table
        console.print(table(sorted(items, key=lambda o: o["metadata"]["name"]), fancy, _now()))
        return 0

    snapshot: Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]]
    if args.kind == "Model":
        def snapshot() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            return _model_snapshot(target, args.name)

        def view(main: dict[str, Any], deps: list[dict[str, Any]]) -> RenderableType:
            return render.model_tree(main, deps, fancy=fancy, now=_now(), wide=wide)

        def state(main: dict[str, Any], deps: list[dict[str, Any]]) -> facts.RolloutState:
            return _combined_state(deps)
    else:
        def snapshot() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            return fetch.get(target, "Deployment", args.name), []

        def view(main: dict[str, Any], deps: list[dict[str, Any]]) -> RenderableType:
            return render.deployment_view(main, fancy=fancy, now=_now(), wide=wide)

        def state(main: dict[str, Any], deps: list[dict[str, Any]]) -> facts.RolloutState:
            return facts.rollout_state(main)

    if not args.watch:
        main_obj, deps = snapshot()
        if args.output in ("json", "yaml"):
            sys.stdout.write(_dump(main_obj, args.output))
        else:
            console.print(view(main_obj, deps))
        return 0
    return _watch(console, snapshot, view, state, args)


def _versions_of(main: dict[str, Any], deps: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(o["metadata"].get("resourceVersion", "") for o in [main, *deps])


def _watch(console: Console, snapshot: Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]],
           view: Callable[[dict[str, Any], list[dict[str, Any]]], RenderableType],
           state: Callable[[dict[str, Any], list[dict[str, Any]]], facts.RolloutState],
           args: argparse.Namespace) -> int:
    """Refresh until the rollout is over. On a terminal the view is redrawn in place; piped, it is printed again
    whenever an object changed, so a log shows every step."""
    from rich.live import Live

    deadline = time.monotonic() + parse_duration(args.timeout).total_seconds() if args.timeout else None
    seen: tuple[str, ...] = ()
    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
    try:
        if live:
            live.start()
        while True:
            main_obj, deps = snapshot()
            current = state(main_obj, deps)
            versions = _versions_of(main_obj, deps)
            if live:
                live.update(view(main_obj, deps), refresh=True)
            elif versions != seen:
                if args.output in ("json", "yaml"):
                    sys.stdout.write(_dump(main_obj, args.output) + ("---\n" if args.output == "yaml" else ""))
                else:
                    console.print(view(main_obj, deps))
                    console.print(f"--- {current.message}")
                sys.stdout.flush()
            seen = versions
            if current.done:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise Failed(f"timed out after {args.timeout}: {current.message}")
            time.sleep(args.interval)
    finally:
        if live:
            live.stop()
    if not current.ok:
        raise Failed(f"rollout did not complete: {current.message}")
    print(f"rollout complete: {current.message}", file=sys.stderr)
    return 0


# --- lineage, compare ---------------------------------------------------------------------------------------


def _structured(args: argparse.Namespace, data: dict[str, Any], renderable: Callable[[bool, bool], Any]) -> int:
    if args.output in ("json", "yaml"):
        sys.stdout.write(_dump(data, args.output))
        return 0
    console = _console(args)
    console.print(renderable(_fancy(console, args), args.output == "wide"))
    return 0


def cmd_lineage(args: argparse.Namespace, target: Target) -> int:
    model = fetch.get(target, "Model", args.name)
    record = facts.version_record(model, args.version)
    run = fetch.get_or_none(target, "TrainingRun", record.get("trainingRun"))
    dataset = fetch.get_or_none(target, "Dataset", record.get("dataset"))
    data = facts.lineage(model, args.version, run, dataset, fetch.deployments_of(target, args.name))
    return _structured(args, data, lambda fancy, wide: render.lineage_tree(data, fancy=fancy, wide=wide))


def cmd_compare(args: argparse.Namespace, target: Target) -> int:
    model = fetch.get(target, "Model", args.name)
    a, b = facts.version_record(model, args.first), facts.version_record(model, args.second)
    data = facts.comparison(model, args.first, args.second,
                            fetch.get_or_none(target, "TrainingRun", a.get("trainingRun")),
                            fetch.get_or_none(target, "TrainingRun", b.get("trainingRun")))
    return _structured(args, data, lambda fancy, wide: render.compare_table(data, fancy=fancy, wide=wide))


def cmd_history(args: argparse.Namespace, target: Target) -> int:
    if args.kind == "Deployment":
        data = facts.deployment_history(fetch.get(target, "Deployment", args.name))
        return _structured(args, data,
                           lambda fancy, wide: render.deployment_history_table(data, fancy=fancy, now=_now()))
    model = fetch.get(target, "Model", args.name)
    entries = (model.get("status") or {}).get("history") or []
    return _structured(args, {"model": args.name, "history": entries},
                       lambda fancy, wide: render.history_table(model, fancy=fancy, now=_now()))


def cmd_report(args: argparse.Namespace, target: Target) -> int:
    report.require_charts()  # before any request: a missing extra is the first thing to fix
    model = fetch.get(target, "Model", args.name)
    if args.version is not None:
        facts.version_record(model, args.version)  # an unknown version names the registered ones
    page = report.build(model, fetch.deployments_of(target, args.name), now=_now(), version=args.version)
    path = args.output or f"{args.name}-report.html"
    if path == "-":
        sys.stdout.write(page)
        return 0
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:  # not a connection error: say which file, not which server
        raise facts.Refused(f"cannot write {path}: {e.strerror or e}; choose another file with -o") from None
    print(f"wrote {path} ({report.chart_count(page)} charts): open it in a browser", file=sys.stderr)
    return 0


# --- changes ------------------------------------------------------------------------------------------------


def _apply(args: argparse.Namespace, target: Target, change: changes.Change) -> int:
    if args.print_only:
        sys.stdout.write(changes.as_yaml(change))
        return 0
    fetch.patch_spec(target, change.kind, change.name, change.patch)
    print(f"{change.summary}")
    if change.note:
        print(f"note: {change.note}", file=sys.stderr)
    return 0


def cmd_promote(args: argparse.Namespace, target: Target) -> int:
    return _apply(args, target, changes.promote(fetch.get(target, "Model", args.name), args.version))


def cmd_pin(args: argparse.Namespace, target: Target) -> int:
    if (args.version is None) == (not args.unpin):
        raise facts.Refused("give either a VERSION to pin or --unpin (--auto), not both or neither")
    if args.kind == "Model":
        model = fetch.get(target, "Model", args.name)
        change = changes.automatic(model) if args.unpin else changes.promote(model, args.version)
    else:
        dep = fetch.get(target, "Deployment", args.name)
        model_name = ((dep.get("spec") or {}).get("modelRef") or {}).get("name")
        change = changes.pin_deployment(dep, fetch.get_or_none(target, "Model", model_name), args.version)
    return _apply(args, target, change)


def cmd_rollback(args: argparse.Namespace, target: Target) -> int:
    if args.kind == "Model":
        change = changes.rollback_model(fetch.get(target, "Model", args.name), args.to)
    else:
        dep = fetch.get(target, "Deployment", args.name)
        model_name = ((dep.get("spec") or {}).get("modelRef") or {}).get("name")
        change = changes.rollback_deployment(dep, fetch.get_or_none(target, "Model", model_name), args.to)
    return _apply(args, target, change)


def cmd_canary(args: argparse.Namespace, target: Target) -> int:
    dep = fetch.get(target, "Deployment", args.name)
    change = changes.abort(dep) if args.action == "abort" else changes.pause(dep, args.action == "pause")
    return _apply(args, target, change)


def cmd_retrain(args: argparse.Namespace, target: Target) -> int:
    model = fetch.get(target, "Model", args.name)
    run_name = changes.run_to_repeat(model)
    run = fetch.get_or_none(target, "TrainingRun", run_name)
    body = changes.retrain(model, run, _now(), same_data=args.same_data, name=args.run_name)
    if args.print_only:
        sys.stdout.write(f"# a new TrainingRun like {run_name}; commit it next to the Model's manifests\n")
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return 0
    fetch.create(target, "TrainingRun", body)
    print(f"TrainingRun {body['metadata']['name']} created (like {run_name}); follow it with "
          f"kubectl get trainingruns.kultivar.io {body['metadata']['name']} -n {target.namespace} -w")
    return 0


if __name__ == "__main__":
    sys.exit(main())
