"""``kultivar serve``: the inference server of the runtime image.

Settings come from ``KULTIVAR_*`` environment variables set by the operator (see :mod:`kultivar.serving.config`);
flags override them for local use. Exit codes: 2 when the model can never be served with these settings (digest
mismatch, untrusted types, bad settings), 1 when retrying may help (storage unreachable, port taken). SIGTERM
shuts down gracefully (in-flight requests are answered); uvicorn then re-raises the signal, so the process ends
the way SIGTERM ends a process (status 143 in Kubernetes).

Run standalone with ``python -m kultivar.serving.cli serve``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

EXIT_PERMANENT = 2


def configure_logging(level: str, worker: int | None = None) -> None:
    # One handler on the root logger for our lines and uvicorn's (it runs with log_config=None): the pod log.
    # With several worker processes, each line says which one wrote it.
    where = f" [worker {worker}]" if worker is not None else ""
    logging.basicConfig(stream=sys.stdout, level=getattr(logging, level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)s %(name)s{where}: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S", force=True)


def serve_command(args: argparse.Namespace) -> int:
    from kultivar.serving.config import ConfigError, ServingConfig

    configure_logging(args.log_level)
    log = logging.getLogger("kultivar.serving")
    try:
        config = ServingConfig.from_env(
            model_name=args.model_name, model_version=args.model_version, model_uri=args.model_uri,
            model_digest=args.model_digest, manifest_uri=args.manifest_uri, profile_uri=args.profile_uri,
            store=args.store, host=args.host, port=args.port,
        )
    except ConfigError as e:
        log.error("refusing to serve: %s", e)
        return EXIT_PERMANENT
    if config.workers > 1:
        from kultivar.serving.workers import run_workers

        return run_workers(config, log_level=args.log_level.lower())
    from kultivar.serving.server import run

    return run(config, log_level=args.log_level.lower())


def add_commands(subparsers: Any) -> None:
    """Add ``serve`` to the ``kultivar`` command's subparsers."""
    p = subparsers.add_parser(
        "serve", help="serve a registered model over the Open Inference Protocol V2 (runs in the serving pods)",
        description="Serve one sha256-verified skops model over V2 REST (and V1 :predict), with Prometheus metrics. "
                    "Settings come from KULTIVAR_* environment variables; flags override them.",
    )
    p.add_argument("--model-name", help="model name in the routes (KULTIVAR_MODEL_NAME)")
    p.add_argument("--model-version", help="model version (KULTIVAR_MODEL_VERSION, default 1)")
    p.add_argument("--model-uri", help="URI of model.skops (KULTIVAR_MODEL_URI)")
    p.add_argument("--model-digest", help="registered sha256:<hex> digest of the model (KULTIVAR_MODEL_DIGEST)")
    p.add_argument("--manifest-uri", help="training manifest (KULTIVAR_MANIFEST_URI, default beside the model)")
    p.add_argument("--profile-uri", help="reference profile (KULTIVAR_PROFILE_URI, default from the manifest)")
    p.add_argument("--store", help="artifact store base URL (KULTIVAR_STORE)")
    p.add_argument("--host", help="address to bind (KULTIVAR_HTTP_HOST, default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port to bind (KULTIVAR_HTTP_PORT, default 8080)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=serve_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kultivar.serving.cli",
                                     description="Kultivar inference server.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
