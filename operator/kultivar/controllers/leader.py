"""Leader election: keep (or wait for) the Lease, and start or stop reconciling accordingly.

The decisions are domain/leadership.py's; this loop only reads and writes the Lease. Every replica keeps
kopf's watches (so a new leader starts with every key already queued), but only the leader runs workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from kultivar.controllers import metrics
from kultivar.domain import leadership
from kultivar.domain.leadership import Action, Sighting, Timing
from kultivar.k8s import lease
from kultivar.k8s.client import Api, ApiError

log = logging.getLogger("kultivar.leader")

T = TypeVar("T")


class LeaderElector:
    def __init__(self, api: Api, namespace: str, name: str, identity: str, *, timing: Timing | None = None,
                 on_started_leading: Callable[[], None], on_stopped_leading: Callable[[], None]) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.timing = timing or Timing()
        self._started, self._stopped = on_started_leading, on_stopped_leading
        self.leading = False
        self._sighting: Sighting | None = None
        self._last_renewed = datetime.now(UTC)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # A hung request must not hold the loop past the renew deadline; the abandoned thread ends on its own.
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=self.timing.renew_deadline / 2)

    async def run(self) -> None:
        log.info("%s: waiting for Lease %s/%s", self.identity, self.namespace, self.name)
        while True:
            await self.try_once()
            await asyncio.sleep(self.timing.renew_period if self.leading else self.timing.retry_period)

    async def try_once(self) -> None:
        now = datetime.now(UTC)
        try:
            self._sighting = leadership.observe(
                self._sighting, await self._call(lease.get, self.api, self.namespace, self.name), now)
            decision = leadership.decide(self._sighting, self.identity, now, self.timing)
            if decision.action is Action.WAIT:
                if self.leading:  # someone else holds it: we were too slow to renew
                    self._step_down(f"the Lease is held by {self._sighting and self._sighting.record.holder}")
                return
            assert decision.record is not None
            write = lease.create if decision.action is Action.CREATE else lease.replace
            written = await self._call(write, self.api, self.namespace, self.name, decision.record)
        except (ApiError, TimeoutError, OSError) as e:
            # 409: another replica wrote first (it won the race or renewed); anything else: try again soon.
            log.log(logging.DEBUG if getattr(e, "status", 0) == 409 else logging.WARNING,
                    "%s: Lease %s/%s not %s: %s", self.identity, self.namespace, self.name,
                    "renewed" if self.leading else "acquired", e or type(e).__name__)
            if self.leading and leadership.must_step_down(self._last_renewed, datetime.now(UTC), self.timing):
                self._step_down(f"could not renew for {self.timing.renew_deadline:.0f}s")
            return
        self._sighting = Sighting(written, now)
        self._last_renewed = now
        if not self.leading:
            self.leading = True
            metrics.LEADER.set(1)
            log.info("%s: acquired Lease %s/%s (%s); reconciling", self.identity, self.namespace, self.name,
                     decision.action.value)
            self._started()

    def _step_down(self, why: str) -> None:
        self.leading = False
        metrics.LEADER.set(0)
        log.error("%s: lost Lease %s/%s: %s; stopping reconciles", self.identity, self.namespace, self.name, why)
        self._stopped()

    async def release(self) -> None:
        """On a clean shutdown (after the workers stopped), hand the Lease back so a standby need not wait."""
        if not self.leading or self._sighting is None:
            return
        released = leadership.release(self._sighting.record, self.identity, datetime.now(UTC))
        if released is None:
            return
        try:
            await self._call(lease.replace, self.api, self.namespace, self.name, released)
            log.info("%s: released Lease %s/%s", self.identity, self.namespace, self.name)
        except (ApiError, TimeoutError, OSError) as e:  # it then simply expires
            log.warning("%s: could not release Lease %s/%s: %s", self.identity, self.namespace, self.name, e)
        self.leading = False
