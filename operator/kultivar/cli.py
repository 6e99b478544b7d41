"""The `kultivar` command: the operator, the workloads that run in pods, and generators."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Sequence


def _peering_identity() -> str:
    """Who this operator is among its peers: the pod's name (its hostname) and PID.

    kopf's own default asks for the login name, which a container running as an arbitrary numeric UID with
    no passwd entry (our images: 65532) does not have -- getpass raises and the operator crash-loops.
    """
    import os
    import socket

    return f"{socket.gethostname()}@{os.getpid()}"


def _run_operator(args: argparse.Namespace) -> int:
    import asyncio

    import kopf
    from kopf._core.engines.peering import Identity  # kopf's NewType for it; not re-exported at the top

    import kultivar.controllers.handlers  # registers the handlers; configured below

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf logs every handled event at INFO; our reconciles say what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = args.namespace or []
    # With Roles only (namespaced mode) kopf's cluster-wide scans would be refused: watch the listed namespaces.
    kultivar.controllers.handlers.SCAN_CLUSTER = not namespaces
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=not args.peering,
            peering_name=args.peering or None,
            priority=args.priority if args.priority is not None else random.randint(1, 10_000),
            liveness_endpoint=args.liveness or None,
            identity=Identity(_peering_identity()),
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from kultivar.api import crdgen

    return crdgen.main(["--root", args.root] + (["--check"] if args.check else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kultivar", description="The ML lifecycle as Kubernetes resources.")
    sub = parser.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="run the operator against the current kubeconfig or in-cluster")
    op.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    op.add_argument("--peering", default="",
                    help="kopf peering object (optional; HA is the leader-election Lease, see KULTIVAR_LEASE_NAME)")
    op.add_argument("--priority", type=int, default=None,
                    help="peering priority; replicas with equal priorities would all pause (default: random)")
    op.add_argument("--liveness", default="", help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    op.add_argument("--log-level", default="info")
    op.set_defaults(func=_run_operator)

    crds = sub.add_parser("crds", help="write the CRDs generated from the models")
    crds.add_argument("--root", default=".")
    crds.add_argument("--check", action="store_true", help="fail if the committed files are stale")
    crds.set_defaults(func=_crds)

    from kultivar.plugin.commands import add_commands as add_plugin
    from kultivar.serving.cli import add_commands as add_serving
    from kultivar.workloads.cli import add_commands as add_workloads

    add_workloads(sub)
    add_serving(sub)
    add_plugin(sub)  # the kubectl plugin's commands: kultivar get model NAME, kultivar promote ..., ...
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args.func, "__module__", "") == "kultivar.plugin.commands":
        from kultivar.plugin.commands import run

        return run(args)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
