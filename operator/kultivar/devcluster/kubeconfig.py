"""Kubeconfig files for the local cluster's users: the admin, the components, and further users for RBAC tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import pki
from .state import ClusterState

CONTEXT_NAME = "kultivar"


def kubeconfig_dict(server: str, ca_pem: bytes, cert: pki.CertPair, user: str) -> dict[str, Any]:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert.cert_pem), "client-key-data": b64(cert.key_pem)},
            }
        ],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
    }


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, cert: pki.CertPair, user: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # it holds a private key
    path.write_text(yaml.safe_dump(kubeconfig_dict(server, ca_pem, cert, user), sort_keys=False))
    return path


def user_kubeconfig(state_dir: Path, user: str, groups: Sequence[str] = (), path: Path | None = None) -> Path:
    """A kubeconfig for a further (e.g. non-admin) user of a running cluster, for RBAC tests."""
    state = ClusterState.load(state_dir)
    ca = pki.load_ca(state_dir / "pki")
    cert = ca.issue_client_cert(user, groups)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
    target = path or state_dir / "users" / f"{safe}.kubeconfig"
    return write_kubeconfig(target, state.server, ca.cert_pem, cert, user)
