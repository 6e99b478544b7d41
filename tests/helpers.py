"""Generic test helpers. Tests wait for conditions with :func:`wait_for`, never with fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Exceptions listed in ``ignore`` count as "not yet" (e.g. a 404 before an object exists). On timeout
    an AssertionError names ``message`` and the last value or exception seen, so a failing test says
    what it was waiting for rather than just "timed out".
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}; last: {last!r}")
        time.sleep(interval)
