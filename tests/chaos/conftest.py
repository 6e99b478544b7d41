"""The chaos tier: the integration tier's real control plane (see ../integration/cluster_fixtures.py), plus a seed.

Run by `make chaos` (and `make test`, after the integration tier) in its own pytest invocation: plain `pytest`
leaves it out (`-m 'not e2e and not chaos'` in pyproject.toml), as it takes minutes.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import cluster_fixtures
from cluster_fixtures import (  # noqa: F401  (pytest finds fixtures and hooks by name here)
    control_plane,
    kube,
    kubelet,
    namespace,
    new_namespace,
    operator,
    store_dir,
)

# Every run prints its seed (report header and every failure); KULTIVAR_CHAOS_SEED=<seed> replays its choices.
SEED = int(os.environ.get("KULTIVAR_CHAOS_SEED") or random.SystemRandom().randrange(2**32))


def pytest_report_header() -> str:
    return f"chaos seed: {SEED} (replay with KULTIVAR_CHAOS_SEED={SEED})"


SUMMARY: list[str] = []  # what each chaos test did (kills, restarts, outcome), for the terminal summary


@pytest.fixture
def chaos_seed() -> int:
    print(f"chaos seed: {SEED}")
    return SEED


@pytest.fixture
def chaos_summary() -> list[str]:
    return SUMMARY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    cluster_fixtures.pytest_terminal_summary(terminalreporter)
    terminalreporter.write_sep("-", "chaos")
    terminalreporter.write_line(f"seed {SEED} (replay with KULTIVAR_CHAOS_SEED={SEED})")
    for line in SUMMARY:
        terminalreporter.write_line(line)
