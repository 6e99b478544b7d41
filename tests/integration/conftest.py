"""The integration tier's fixtures: the real control plane (see cluster_fixtures.py, shared with tests/chaos)."""

from cluster_fixtures import (  # noqa: F401  (pytest finds fixtures and hooks by name here)
    Kube,
    control_plane,
    iris_v1,
    kube,
    kubelet,
    namespace,
    new_namespace,
    operator,
    pytest_terminal_summary,
    store_dir,
)
