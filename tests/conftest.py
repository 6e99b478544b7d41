"""Settings shared by every test tier.

Deliberately cheap: nothing here starts a cluster. The control-plane fixtures live in
tests/integration/conftest.py and are only loaded for tests under that directory.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
INTEGRATION_DIR = TESTS_DIR / "integration"
CHAOS_DIR = TESTS_DIR / "chaos"

# Let `import helpers` work from any test directory.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
# Fall back to the source tree only when kultivar is not installed, so an installed build is what gets tested.
if importlib.util.find_spec("kultivar") is None:
    sys.path.insert(0, str(REPO_ROOT / "operator"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the cluster: mark it, so `-m "not integration"` skips it
    even when a test module forgets its own `pytestmark`. Likewise tests/chaos is the chaos tier."""
    for item in items:
        parents = Path(str(item.path)).resolve().parents
        if INTEGRATION_DIR in parents:
            item.add_marker(pytest.mark.integration)
        if CHAOS_DIR in parents:
            item.add_marker(pytest.mark.chaos)
