"""Thin kopf handlers: kopf watches; every event only enqueues a key for the reconcile loop.

Only event handlers are used, so kopf keeps no per-object progress and adds no finalizers: nothing of
Kultivar needs cleanup beyond what ownerReferences and garbage collection already do.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from kultivar.api.common import GROUP, VERSION
from kultivar.api.resources import KINDS
from kultivar.config import OperatorConfig
from kultivar.controllers import metrics
from kultivar.controllers.leader import LeaderElector
from kultivar.controllers.runtime import Operator
from kultivar.domain.labels import MANAGED_BY, MANAGER
from kultivar.k8s import lease
from kultivar.k8s.client import Api

PREFIX = "kultivar.io"
SCAN_CLUSTER = True  # False when only listed namespaces are watched (Roles, no cluster-wide list rights)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's last-handled state, for change handlers: there are none here, so nothing is built or stored.

    kopf builds the "essence" of every object on every watch event (a deep copy of the whole body) to detect
    changes for on.create/on.update handlers. With only event handlers nothing reads it, yet at 500 runs at once
    it was about a tenth of the operator's CPU."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    # If kopf ever stores anything on our objects, it goes under our own prefix, never into spec or status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.scanning.disabled = not SCAN_CLUSTER
    # We post our own Events with CamelCase reasons; kopf's log-derived events would be noise.
    settings.posting.level = logging.ERROR
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **_: Any) -> None:
    configure(settings)
    config = OperatorConfig.from_env()
    api = Api.connect()
    api.post_events_in_background()
    operator = Operator(api, config)
    # Every replica watches and queues keys; only the Lease holder starts the workers that reconcile.
    identity = config.identity or lease.default_identity()
    elector = LeaderElector(api, config.lease_namespace or lease.default_namespace(), config.lease_name, identity,
                            on_started_leading=operator.start, on_stopped_leading=_exit_on_lost_lease)
    metrics.count_api_calls(api)
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
    memo["operator"], memo["elector"] = operator, elector
    memo["election"] = asyncio.create_task(elector.run(), name="kultivar-leader-election")
    logger.info("Kultivar started as %s: store %s, runtime image %s", identity, config.store_url,
                config.runtime_image)


def _exit_on_lost_lease() -> None:
    """Losing the Lease ends the process at once, as client-go's leader election does by default.

    A reconcile already running in a thread cannot be cancelled in Python; only ending the process guarantees
    that nothing more is written once another replica may lead. Kubernetes restarts the container, which comes
    back as a standby (or takes its own Lease back when it still names this pod).
    """
    logging.getLogger("kultivar").critical("leadership lost: exiting so that only the new leader reconciles")
    logging.shutdown()
    os._exit(1)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    election: asyncio.Task[None] | None = memo.get("election")
    if election:
        election.cancel()
    operator: Operator | None = memo.get("operator")
    if operator:
        await operator.stop()
    if operator and operator.api.events:
        await asyncio.to_thread(operator.api.events.close)  # post what is queued before the Lease goes
    elector: LeaderElector | None = memo.get("elector")
    if elector:
        await elector.release()


# The event handlers are async so that kopf runs them on the event loop, one at a time: kopf runs a sync
# handler in a thread pool, where the work queue's timers cannot be set (no running loop) and the reference
# index and cache would be changed by several threads at once.
EVENT_HANDLERS: list[Any] = []


def _register_kind(kind: str, plural: str) -> None:
    @kopf.on.event(GROUP, VERSION, plural, id=f"enqueue-{plural}")
    async def enqueue(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
        operator: Operator | None = memo.get("operator")
        if operator:
            operator.observe_event(kind, event.get("type"), dict(body))

    EVENT_HANDLERS.append(enqueue)


for _kind in KINDS:
    _register_kind(_kind.kind, _kind.plural)


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: MANAGER}, id="enqueue-job-owner")
@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY: MANAGER}, id="enqueue-deployment-owner")
async def child_changed(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    operator: Operator | None = memo.get("operator")
    if operator:
        operator.observe_child(dict(body), deleted=event.get("type") == "DELETED")


EVENT_HANDLERS.append(child_changed)
