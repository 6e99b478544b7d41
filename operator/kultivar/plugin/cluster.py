"""Reach the cluster the way kubectl does: the user's kubeconfig, its current (or --context) context and namespace."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from kultivar.k8s.client import Api

HOW_TO_POINT = ("point KUBECONFIG (or --kubeconfig) at a cluster's kubeconfig and choose a context with --context; "
                "for a local control plane, `make cluster-up` prints the KUBECONFIG to use")


class ClusterUnavailable(Exception):
    """No cluster to talk to; the message says how to point at one."""


@dataclass
class Target:
    api: Api
    namespace: str
    context: str
    server: str


def kubeconfig_path(explicit: str | None) -> str:
    """Like kubectl: --kubeconfig, else $KUBECONFIG (a list of files is merged), else ~/.kube/config."""
    return explicit or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _context(path: str, wanted: str | None) -> dict[str, Any]:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except (config.ConfigException, OSError) as e:
        raise ClusterUnavailable(f"no usable kubeconfig at {path} ({e}); {HOW_TO_POINT}") from None
    if wanted is None:
        if not active:
            raise ClusterUnavailable(f"the kubeconfig {path} has no current context; {HOW_TO_POINT}")
        return dict(active)
    for ctx in contexts or []:
        if ctx.get("name") == wanted:
            return dict(ctx)
    names = ", ".join(sorted(c.get("name", "") for c in contexts or [])) or "none"
    raise ClusterUnavailable(f"context {wanted!r} is not in {path} (contexts there: {names})")


def connect(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
            request_timeout: float = 15.0) -> Target:
    path = kubeconfig_path(kubeconfig)
    ctx = _context(path, context)
    try:
        api_client = config.new_client_from_config(config_file=path, context=ctx["name"])
    except (config.ConfigException, OSError, ValueError) as e:
        raise ClusterUnavailable(f"context {ctx['name']!r} in {path} cannot be used ({e}); {HOW_TO_POINT}") from None
    configuration: client.Configuration = api_client.configuration
    configuration.retries = 1  # an unreachable server should say so in seconds, not after urllib3's retries
    ns = namespace or (ctx.get("context") or {}).get("namespace") or "default"
    return Target(Api(api_client, request_timeout=request_timeout), ns, ctx["name"], configuration.host)
