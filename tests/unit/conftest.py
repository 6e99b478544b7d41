import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Let unit tests import their local factories module.
sys.path.insert(0, str(Path(__file__).parent))

from statuscheck import plan_of, stored_status

# The planners of the four kinds: every status they plan in any unit test is checked against the kind's
# *Status model and written through an RFC 7386 merge (statuscheck), so a mistyped key fails a test.
PLANNERS = ("plan_dataset", "plan_training_run", "plan_model", "plan_serving", "plan_deployment")


def _checked(planner: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(planner)
    def run(observed: Any, *args: Any, **kwargs: Any) -> Any:
        result = planner(observed, *args, **kwargs)
        stored_status(observed.obj, plan_of(result))
        return result

    return run


@pytest.fixture(autouse=True)
def _status_contract(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    module = request.module
    for name in PLANNERS:
        planner = getattr(module, name, None)
        if callable(planner):
            monkeypatch.setattr(module, name, _checked(planner))
