"""Status writes the local kubelet must not lose: retried with bounded backoff until they land.

A real kubelet keeps a pod's status in memory and syncs it to the API server until the server has it, so
a workload that exits while the API server restarts is still reported. The local kubelet does the same
for the terminal status of the pods it ran: the write is queued here and retried on every sweep that is
due, instead of being dropped on the first connection refused (the TrainingRun would then wait for its
deadline). Each write re-reads the pod and writes only if its status still differs, so retrying a write
that did land (the response was lost) changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3.exceptions

from kultivar.k8s.client import ApiError

log = logging.getLogger(__name__)


def transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed later as is: the server was unreachable, overloaded or failing.

    A conflict too: the next attempt reads the pod again. Anything else (404: the pod is gone; 403, 422: the
    write can never land) is given up at once.
    """
    if isinstance(exc, ApiError):
        return exc.status in (0, 408, 409, 429) or exc.status >= 500
    return isinstance(exc, OSError | urllib3.exceptions.HTTPError)


@dataclass(frozen=True)
class Backoff:
    """Exponential delays between attempts, capped so a write lands soon after the server is back."""

    base: float = 0.2
    cap: float = 5.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, failures - 1))


@dataclass
class _Pending:
    write: Callable[[], None]
    failures: int = 0
    due: float = 0.0


class PendingWrites:
    """Writes keyed by object; :meth:`flush` attempts those due and keeps the ones that failed transiently."""

    def __init__(self, backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self.failed_attempts = 0  # transient failures so far, all writes together (what a test can check)

    def add(self, key: str, write: Callable[[], None]) -> None:
        """Queue ``write`` (idempotent: it compares the current status first); it replaces one queued for key."""
        self._pending[key] = _Pending(write, due=self.clock())

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def flush(self) -> list[str]:
        """Attempt every write that is due; return the keys that landed (or need no write any more)."""
        landed = []
        for key, pending in list(self._pending.items()):
            if pending.due > self.clock():
                continue
            try:
                pending.write()
            except Exception as exc:
                if not transient(exc):
                    log.error("giving up the status write for %s: %s", key, exc)
                    del self._pending[key]
                    continue
                pending.failures += 1
                self.failed_attempts += 1
                pending.due = self.clock() + self.backoff.delay(pending.failures)
                if pending.failures == 1:
                    log.warning("status write for %s failed (%s); retrying until it lands", key, exc)
                continue
            if pending.failures:
                log.info("status write for %s landed after %d failed attempts", key, pending.failures)
            del self._pending[key]
            landed.append(key)
        return landed
