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
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Any, TypeVar

from pydantic import ValidationError

from kultivar.api.contracts import (
    ContractError,
    EnvContract,
    FailureResult,
    RetentionInput,
    RetentionResult,
    TrainingInput,
    ValidationInput,
    encode_termination,
)

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


Input = TypeVar("Input", bound=EnvContract)
# Flags that override an input's environment variable (see add_commands).
_FLAGS = frozenset({"--spec-file", "--namespace", "--name", "--store", "--uid", "--dataset-snapshot",
                    "--dataset-digest", "--profile-uri", "--task", "--target", "--features"})


def _input(model: type[Input], args: argparse.Namespace) -> Input:
    """The pod's inputs from its environment, flags winning over it (a flag is named after its field)."""
    overrides = {field: getattr(args, field, None) for field in model.ENV}
    spec_file = getattr(args, "spec_file", None)
    if spec_file:
        try:
            with open(spec_file, encoding="utf-8") as f:
                overrides["spec"] = f.read()
        except OSError as e:
            raise InputError(f"cannot read the spec file {spec_file}: {e}") from e
    try:
        return model.from_env(os.environ, overrides)
    except ContractError as e:
        flag = "--spec-file" if e.field == "spec" else "--" + (e.field or "").replace("_", "-")
        hint = f" (or pass {flag})" if e.field in model.ENV and flag in _FLAGS else ""
        raise InputError(f"{e}{hint}") from e


def _spec_error(kind: str, e: ValidationError) -> InputError:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
    return InputError(f"the {kind} spec is invalid: {problems}")


def _termination_path(args: argparse.Namespace) -> str:
    return (getattr(args, "termination_log", None) or os.environ.get("KULTIVAR_TERMINATION_LOG")
            or DEFAULT_TERMINATION_LOG)


def _unexpected(e: BaseException) -> dict[str, Any]:
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(e)).rstrip())
    if isinstance(e, OSError | ConnectionError | TimeoutError):
        return FailureResult(reason="StorageUnavailable",
                             message=f"{type(e).__name__}: {e}; the artifact store or data source may be "
                                     "unreachable, the Job will retry", retryable=True).wire()
    return FailureResult(reason="InternalError", message=f"{type(e).__name__}: {e}; see the pod log for the traceback",
                         retryable=True).wire()


def _finish(result: dict[str, Any], path: str) -> int:
    from kultivar.workloads.termination import write_termination

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
    print(encode_termination(result), file=sys.stdout, flush=True)
    return code


def _run(args: argparse.Namespace, body: Any) -> int:
    _configure_logging()
    path = _termination_path(args)
    # Turn SIGTERM into an exception so the termination message still says what happened.
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        result = body(args)
    except InputError as e:
        result = FailureResult(reason="InvalidSpec", message=str(e)).wire()
    except Terminated as e:
        result = FailureResult(reason="Terminated", message=str(e), retryable=True).wire()
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

    given = _input(ValidationInput, args)
    try:
        spec = DatasetSpec.model_validate(given.spec)
    except ValidationError as e:
        raise _spec_error("Dataset", e) from e
    log.info("validating Dataset %s/%s from %s into %s", given.namespace, given.name, spec.source.uri, given.store)
    return run_validation(spec, given.namespace, given.name, ArtifactStore(given.store))


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from kultivar.api.trainingrun import TrainingRunSpec
    from kultivar.workloads.storage import ArtifactStore
    from kultivar.workloads.training import RegistryContext, run_training

    given = _input(TrainingInput, args)
    try:
        spec = TrainingRunSpec.model_validate(given.spec)
    except ValidationError as e:
        raise _spec_error("TrainingRun", e) from e
    log.info("training TrainingRun %s/%s (%s) with %s on %s", given.namespace, given.name, given.uid,
             spec.estimator.className, given.dataset_digest)
    return run_training(spec, given.dataset_snapshot, given.dataset_digest, given.profile_uri, given.task,
                        given.target, given.features, given.namespace, given.name, given.uid,
                        ArtifactStore(given.store), estimator_packages=given.estimator_packages,
                        registry=RegistryContext(production=given.production, promotion=given.promotion,
                                                 model=given.model, description=given.model_description,
                                                 holdout=given.holdout))


def _delete_artifacts(args: argparse.Namespace) -> dict[str, Any]:
    """Retention: delete the directories holding retired versions' artifacts (model file and manifest)."""
    from kultivar.workloads.storage import ArtifactStore

    given = _input(RetentionInput, args)
    store = ArtifactStore(given.store)
    base = given.store.rstrip("/") + "/"
    deleted = []
    for uri in given.delete:
        if not uri.startswith(base):
            raise InputError(f"refusing to delete {uri!r}: it is outside the artifact store {given.store}")
        prefix = uri[len(base):].rsplit("/", 1)[0]
        if store.delete_prefix(prefix):
            deleted.append(prefix)
        log.info("deleted %s", prefix)
    return RetentionResult(deleted=len(deleted)).wire()


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
