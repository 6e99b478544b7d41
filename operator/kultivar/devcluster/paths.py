"""Where the local control plane's binaries live.

The binaries are compiled by ``hack/build-k8s.sh`` into a cache under ``$HOME``; their versions are pinned
in ``hack/versions.env``. The versions are deliberately *not* repeated here: ``versions.env`` stays the one
place to bump them. An installed package (no repo around it) points at its binaries with the
``KULTIVAR_*_BIN`` environment variables instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VERSIONS_FILE = Path("hack") / "versions.env"
BUILD_HINT = "run `make cluster-binaries` (hack/build-k8s.sh)"


class BinaryNotFoundError(RuntimeError):
    """A control-plane binary (or the file pinning its version) is missing."""


@dataclass(frozen=True)
class Component:
    """One binary directory: an env var that overrides it, or a cache path derived from a pinned version."""

    cache_name: str  # directory under the cache root, as hack/build-k8s.sh lays it out
    version_key: str  # key in versions.env
    env_var: str  # directory override


K8S = Component("k8s", "K8S_VERSION", "KULTIVAR_K8S_BIN")
ETCD = Component("etcd", "ETCD_VERSION", "KULTIVAR_ETCD_BIN")
KWOK = Component("kwok", "KWOK_VERSION", "KULTIVAR_KWOK_BIN")

# Which component directory each binary is found in.
BINARIES: dict[str, Component] = {
    "etcd": ETCD,
    "kube-apiserver": K8S,
    "kube-controller-manager": K8S,
    "kube-scheduler": K8S,
    "kubectl": K8S,
    "kwok": KWOK,
    # A real node only (hack/build-k8s.sh node).
    "kubelet": K8S,
    "kube-proxy": K8S,
}


def cache_root() -> Path:
    """The build cache; honours KULTIVAR_CACHE exactly as hack/build-k8s.sh does."""
    return Path(os.environ.get("KULTIVAR_CACHE") or Path.home() / ".cache" / "kultivar")


def _candidate_versions_files(start: Path) -> list[Path]:
    """versions.env above the working directory first (a checkout being worked in), then this source tree."""
    start = start.resolve()
    candidates = [d / VERSIONS_FILE for d in (start, *start.parents)]
    # operator/kultivar/devcluster/paths.py -> the repository root is three directories above the package.
    candidates.append(Path(__file__).resolve().parents[3] / VERSIONS_FILE)
    return candidates


def find_versions_file(start: Path | None = None) -> Path | None:
    for candidate in _candidate_versions_files(start or Path.cwd()):
        if candidate.is_file():
            return candidate
    return None


def parse_versions_env(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; versions.env promises no shell expressions, so no shell is needed."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("\"'")
    return values


def component_dir(component: Component, versions: dict[str, str] | None = None) -> Path:
    """The directory holding a component's binaries: the env override, else the pinned cache directory."""
    override = os.environ.get(component.env_var)
    if override:
        return Path(override).expanduser()
    if versions is None:
        versions_file = find_versions_file()
        if versions_file is None:
            raise BinaryNotFoundError(
                f"cannot locate {VERSIONS_FILE} (searched upwards from {Path.cwd()} and next to the kultivar "
                f"sources) to learn which {component.cache_name} version to use; set {component.env_var} "
                f"to the directory holding the binaries, or {BUILD_HINT}"
            )
        versions = parse_versions_env(versions_file)
    version = versions.get(component.version_key)
    if not version:
        raise BinaryNotFoundError(f"{component.version_key} is not set in {VERSIONS_FILE}")
    return cache_root() / component.cache_name / version / "bin"


def binary(name: str, versions: dict[str, str] | None = None) -> Path:
    """The path of one control-plane binary; raises with a how-to-fix message when it is not there."""
    component = BINARIES[name]
    path = component_dir(component, versions) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BinaryNotFoundError(
            f"{name} not found at {path}; {BUILD_HINT} or point {component.env_var} at a directory containing it"
        )
    return path


def all_binaries() -> dict[str, Path]:
    """Resolve every binary the cluster needs at once, reporting all missing ones together."""
    versions_file = find_versions_file()
    versions = parse_versions_env(versions_file) if versions_file else None
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        try:
            found[name] = binary(name, versions)
        except BinaryNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        raise BinaryNotFoundError("\n".join(missing))
    return found
