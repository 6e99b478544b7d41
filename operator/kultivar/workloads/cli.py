"""Entry points of the workload pods: ``kultivar validate-dataset`` and ``kultivar train``.

Inputs come from environment variables set by the operator on the Job (flags override them for local use).
Progress goes to stdout (the pod log); the result goes to the termination-message file. Exit codes tell the Job
controller and the operator whether a retry can help:

* 0: success;
* 2: a permanent problem in the user's spec or data (validation failed, unknown estimator, bad parameters);
  retrying cannot help, the user must change something;
* 1: anything else (storage unreachable, unexpected errors): possibly transient, worth a retry.

Run standalone with ``python -m kultivar.workloads.cli <command>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Any

from pydantic import ValidationError

EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_PERMANENT = 2
DEFAULT_TERMINATION_LOG = "/dev/termination-log"

log = logging.getLogger("kultivar.workloads")


class InputError(Exception):
    """The pod was started with missing or malformed inputs."""


class Terminated(Exception):
    """The kubelet asked the container to stop (deadline, eviction, node drain)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("the pod was asked to stop (SIGTERM: activeDeadlineSeconds reached, eviction or node drain) "
                     "before the work finished")


class _StdoutHandler(logging.Handler):
    # Looks sys.stdout up on every record so redirected or captured stdout (tests, wrappers) still gets the lines.
    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stdout, flush=True)
        except Exception:  # pragma: no cover - logging must never kill the workload
            self.handleError(record)


def _configure_logging() -> None:
    if not any(isinstance(h, _StdoutHandler) for h in log.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def _value(args: argparse.Namespace, attr: str, env: str, required: bool = True, default: str | None = None
           ) -> str | None:
    value = getattr(args, attr, None) or os.environ.get(env) or default
    if required and not value:
        flag = "--" + attr.replace("_", "-")
        raise InputError(f"missing input: set the {env} environment variable (or pass {flag})")
    return value


def _spec_json(args: argparse.Namespace) -> Any:
    if getattr(args, "spec_file", None):
        try:
            with open(args.spec_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise InputError(f"cannot read the spec file {args.spec_file}: {e}") from e
    else:
        text = os.environ.get("KULTIVAR_SPEC", "")
        if not text:
            raise InputError("missing input: set KULTIVAR_SPEC to the resource's spec as JSON (or pass --spec-file)")
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError(f"the spec is not valid JSON: {e}") from e


def _spec_error(kind: str, e: ValidationError) -> InputError:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
    return InputError(f"the {kind} spec is invalid: {problems}")


def _termination_path(args: argparse.Namespace) -> str:
    return (getattr(args, "termination_log", None) or os.environ.get("KULTIVAR_TERMINATION_LOG")
            or DEFAULT_TERMINATION_LOG)


def _unexpected(e: BaseException) -> dict[str, Any]:
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(e)).rstrip())
    if isinstance(e, OSError | ConnectionError | TimeoutError):
        return {"ok": False, "reason": "StorageUnavailable",
                "message": f"{type(e).__name__}: {e}; the artifact store or data source may be unreachable, "
                           "the Job will retry", "retryable": True}
    return {"ok": False, "reason": "InternalError",
            "message": f"{type(e).__name__}: {e}; see the pod log for the traceback", "retryable": True}


def _finish(result: dict[str, Any], path: str) -> int:
    from kultivar.workloads.termination import encode_result, write_termination

    try:
        write_termination(result, path)
    except OSError as e:
        log.error("could not write the termination message to %s: %s", path, e)
    if result.get("ok"):
        code = EXIT_OK
        log.info("done")
    else:
        code = EXIT_RETRYABLE if result.get("retryable") else EXIT_PERMANENT
        log.info("failed: %s: %s", result.get("reason"), result.get("message"))
    # Last line of the log is the result itself: the fallback when the termination file could not be written.
    print(encode_result(result), file=sys.stdout, flush=True)
    return code


def _run(args: argparse.Namespace, body: Any) -> int:
    _configure_logging()
    path = _termination_path(args)
    # Turn SIGTERM into an exception so the termination message still says what happened.
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        result = body(args)
    except InputError as e:
        result = {"ok": False, "reason": "InvalidSpec", "message": str(e), "retryable": False}
    except Terminated as e:
        result = {"ok": False, "reason": "Terminated", "message": str(e), "retryable": True}
    except Exception as e:
        result = _unexpected(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return _finish(result, path)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------------------------- commands


def _validate_dataset(args: argparse.Namespace) -> dict[str, Any]:
    from kultivar.api.dataset import DatasetSpec
    from kultivar.workloads.storage import ArtifactStore
    from kultivar.workloads.validation import run_validation

    raw = _spec_json(args)
    namespace = _value(args, "namespace", "KULTIVAR_NAMESPACE")
    name = _value(args, "name", "KULTIVAR_NAME")
    store_url = _value(args, "store", "KULTIVAR_STORE")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as e:
        raise _spec_error("Dataset", e) from e
    assert namespace and name and store_url
    log.info("validating Dataset %s/%s from %s into %s", namespace, name, spec.source.uri, store_url)
    return run_validation(spec, namespace, name, ArtifactStore(store_url))


def _features(text: str) -> list[dict[str, str]]:
    try:
        items = json.loads(text)
    except ValueError as e:
        raise InputError(f"KULTIVAR_FEATURES is not valid JSON: {e}") from e
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and i.get("type") in ("numeric", "categorical",
                                                                                      "boolean")
        for i in items
    ) or not items:
        raise InputError("KULTIVAR_FEATURES must be a non-empty JSON list of {name, type} with type numeric, "
                         "categorical or boolean")
    return [{"name": i["name"], "type": i["type"]} for i in items]


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from kultivar.api.trainingrun import TrainingRunSpec
    from kultivar.workloads.storage import ArtifactStore
    from kultivar.workloads.training import run_training

    raw = _spec_json(args)
    namespace = _value(args, "namespace", "KULTIVAR_NAMESPACE")
    name = _value(args, "name", "KULTIVAR_NAME")
    uid = _value(args, "uid", "KULTIVAR_UID")
    snapshot = _value(args, "dataset_snapshot", "KULTIVAR_DATASET_SNAPSHOT")
    digest = _value(args, "dataset_digest", "KULTIVAR_DATASET_DIGEST")
    profile = _value(args, "profile_uri", "KULTIVAR_PROFILE_URI", required=False)
    task = _value(args, "task", "KULTIVAR_TASK")
    target = _value(args, "target", "KULTIVAR_TARGET")
    features_text = _value(args, "features", "KULTIVAR_FEATURES")
    store_url = _value(args, "store", "KULTIVAR_STORE")
    if task not in ("classification", "regression"):
        raise InputError(f"KULTIVAR_TASK must be classification or regression, got {task!r}")
    assert namespace and name and uid and snapshot and digest and target and features_text and store_url
    features = _features(features_text)
    try:
        spec = TrainingRunSpec.model_validate(raw)
    except ValidationError as e:
        raise _spec_error("TrainingRun", e) from e
    log.info("training TrainingRun %s/%s (%s) with %s on %s", namespace, name, uid, spec.estimator.className,
             digest)
    return run_training(spec, snapshot, digest, profile, task, target, features, namespace, name, uid,
                        ArtifactStore(store_url))


def _delete_artifacts(args: argparse.Namespace) -> dict[str, Any]:
    """Retention: delete the directories holding retired versions' artifacts (model file and manifest)."""
    from kultivar.workloads.storage import ArtifactStore

    store_url = _value(args, "store", "KULTIVAR_STORE")
    uris = json.loads(os.environ.get("KULTIVAR_DELETE", "[]"))
    assert store_url
    store = ArtifactStore(store_url)
    base = store_url.rstrip("/") + "/"
    deleted = []
    for uri in uris:
        if not uri.startswith(base):
            raise InputError(f"refusing to delete {uri!r}: it is outside the artifact store {store_url}")
        prefix = uri[len(base):].rsplit("/", 1)[0]
        if store.delete_prefix(prefix):
            deleted.append(prefix)
        log.info("deleted %s", prefix)
    return {"ok": True, "deleted": len(deleted)}


def delete_artifacts_command(args: argparse.Namespace) -> int:
    return _run(args, _delete_artifacts)


def validate_dataset_command(args: argparse.Namespace) -> int:
    return _run(args, _validate_dataset)


def train_command(args: argparse.Namespace) -> int:
    return _run(args, _train)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec-file", help="read the spec (JSON) from this file instead of KULTIVAR_SPEC")
    p.add_argument("--namespace", help="namespace of the resource (KULTIVAR_NAMESPACE)")
    p.add_argument("--name", help="name of the resource (KULTIVAR_NAME)")
    p.add_argument("--store", help="artifact store base URL (KULTIVAR_STORE)")
    p.add_argument("--termination-log",
                   help=f"where to write the result (KULTIVAR_TERMINATION_LOG, default {DEFAULT_TERMINATION_LOG})")


def add_commands(subparsers: Any) -> None:
    """Add ``validate-dataset`` and ``train`` to the ``kultivar`` command's subparsers."""
    v = subparsers.add_parser(
        "validate-dataset", help="validate a Dataset's source and snapshot it (runs in the validation Job)",
        description="Validate a Dataset's source, compute its digest and profile, and write an immutable snapshot.",
    )
    _common(v)
    v.set_defaults(func=validate_dataset_command)

    t = subparsers.add_parser(
        "train", help="train a TrainingRun's model (runs in the training Job)",
        description="Train, evaluate and save the model of a TrainingRun on a validated dataset snapshot.",
    )
    _common(t)
    t.add_argument("--uid", help="UID of the TrainingRun (KULTIVAR_UID)")
    t.add_argument("--dataset-snapshot", help="snapshot URI of the dataset version (KULTIVAR_DATASET_SNAPSHOT)")
    t.add_argument("--dataset-digest", help="digest of the dataset version (KULTIVAR_DATASET_DIGEST)")
    t.add_argument("--profile-uri", help="reference profile of the dataset version (KULTIVAR_PROFILE_URI)")
    t.add_argument("--task", choices=["classification", "regression"], help="the dataset's task (KULTIVAR_TASK)")
    t.add_argument("--target", help="target column (KULTIVAR_TARGET)")
    t.add_argument("--features", help="JSON list of {name, type} (KULTIVAR_FEATURES)")
    t.set_defaults(func=train_command)

    d = subparsers.add_parser(
        "delete-artifacts", help="delete retired model versions' artifacts (runs in the retention Job)",
        description="Delete the artifact directories of the URIs in KULTIVAR_DELETE (a JSON list).",
    )
    _common(d)
    d.set_defaults(func=delete_artifacts_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kultivar.workloads.cli",
                                     description="Kultivar workload commands (run inside Jobs).")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
