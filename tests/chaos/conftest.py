"""The chaos tier: the integration tier's real control plane (see ../integration/cluster_fixtures.py), plus a seed.

Run by `make chaos` (and `make test`, after the integration tier) in its own pytest invocation: plain `pytest`
leaves it out (`-m 'not e2e and not chaos'` in pyproject.toml), as it takes minutes.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from cluster_fixtures import (  # noqa: F401  (pytest finds fixtures and hooks by name here)
    control_plane,
    kube,
    kubelet,
    namespace,
    new_namespace,
    operator,
    pytest_terminal_summary,
    store_dir,
)

# Every run prints its seed (report header and every failure); KULTIVAR_CHAOS_SEED=<seed> replays its choices.
SEED = int(os.environ.get("KULTIVAR_CHAOS_SEED") or random.SystemRandom().randrange(2**32))


def pytest_report_header() -> str:
    return f"chaos seed: {SEED} (replay with KULTIVAR_CHAOS_SEED={SEED})"


@pytest.fixture
def chaos_seed() -> int:
    print(f"chaos seed: {SEED}")
    return SEED
