"""The reconcile loop: keys from watch events go through a work queue to observe -> plan -> apply."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from kultivar.config import OperatorConfig
from kultivar.controllers import metrics
from kultivar.controllers.workqueue import WorkQueue
from kultivar.domain.conditions import get_condition
from kultivar.domain.dataset import plan_dataset
from kultivar.domain.deployment import metrics_needed, plan_deployment, route_refused
from kultivar.domain.labels import OWNER_KIND, OWNER_NAME
from kultivar.domain.plan import Plan
from kultivar.domain.refusal import refused, still_refused
from kultivar.domain.registry import ModelObserved, lasting_decisions, plan_model, registry_view
from kultivar.domain.trainingrun import SUCCEEDED, plan_training_run, reference_matters, started
from kultivar.k8s import observe, serving
from kultivar.k8s.apply import apply_plan
from kultivar.k8s.cache import ObjectCache, job_summary
from kultivar.k8s.client import Api, ApiError

log = logging.getLogger("kultivar")


RESYNC_JITTER = 0.25
# A Model is reconciled at most this long after an event of one of its runs (its own events: at once).
MODEL_BATCH_SECONDS = 1.0


def next_reconcile(requeue: float | None, resync: float, u: float) -> float:
    """When to reconcile an object again: when its plan asks, else at a resync spread over [0.75, 1] x resync.

    Without the spread, objects created together would resync together forever (1,000 objects: one burst of
    thousands of requests every resync); drawn below the resync, "at least this often" still holds. u in [0, 1).
    """
    jittered = resync * (1 - RESYNC_JITTER * u)
    return min(requeue, jittered) if requeue else jittered


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


# Kinds the reconciles read from the cache (see k8s/cache.py), so the ones it re-checks against fresh lists.
CACHED_KINDS = ("TrainingRun", "Model", "Dataset", "Job")


class Operator:
    """Owns the queue, the workers, the cache of watched objects and the reverse index of references."""

    def __init__(self, api: Api, config: OperatorConfig) -> None:
        self.api = api
        self.config = config
        self.queue = WorkQueue()
        self.cache = ObjectCache()
        self._workers: list[asyncio.Task[None]] = []
        # (namespace, kind, name) of a referenced object -> keys of the objects that reference it
        self._referrers: dict[tuple[str, str, str], set[Key]] = defaultdict(set)
        self._references: dict[Key, set[tuple[str, str, str]]] = {}
        # TrainingRun -> registry_view of its last event: the Model is reconciled only when that changes
        self._run_views: dict[Key, tuple[Any, ...]] = {}
        self._reconcilers: dict[str, Callable[[Key], float | None]] = {
            "Dataset": self._reconcile_dataset,
            "TrainingRun": self._reconcile_training_run,
            "Model": self._reconcile_model,
            "Deployment": self._reconcile_deployment,
        }

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.config.workers):
            self._workers.append(asyncio.create_task(self._work(), name=f"kultivar-worker-{i}"))
        self._workers.append(asyncio.create_task(self._recheck_cache(), name="kultivar-cache-recheck"))

    async def stop(self) -> None:
        self.queue.close()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- events -------------------------------------------------------------------------------------

    def observe_event(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        """Called for every watch event of our kinds: cache it, enqueue it and whatever depends on it."""
        meta = body.get("metadata") or {}
        key = Key(kind, meta.get("namespace", ""), meta.get("name", ""))
        deleted = event_type == "DELETED"
        self.cache.observe({**body, "kind": kind}, deleted=deleted)
        self._set_references(key, set() if deleted else self._references_of(kind, body))
        self.queue.add(key, low=kind == "TrainingRun" and not deleted and not self._may_start(body))
        for referrer in list(self._referrers.get((key.namespace, kind, key.name), ())):
            if self._waits_on(referrer, kind):
                self.queue.add(referrer)
        model = ((body.get("spec") or {}).get("modelRef") or {}).get("name")
        if kind == "TrainingRun" and model:  # the Model records runs that start and registers those that succeed
            view = None if deleted else registry_view(body)
            if deleted or self._run_views.get(key) != view:
                # Batched: 500 runs created at once would reconcile their Model 500 times, each a pass over all.
                self.queue.add_after(Key("Model", key.namespace, model), MODEL_BATCH_SECONDS)
            if view is None:
                self._run_views.pop(key, None)
            else:
                self._run_views[key] = view
        elif kind == "Deployment" and model:  # the Model records rollbacks and keeps served versions
            self.queue.add(Key("Model", key.namespace, model))

    def _job_unrecorded(self, run: dict[str, Any]) -> bool:
        """Whether the run's Job for its generation exists while its status does not record it yet."""
        return observe.unrecorded_generation_job(self.cache, run) is not None

    def _may_start(self, run: dict[str, Any]) -> bool:
        """Whether a reconcile of this run may create its Job (else it only follows up: the low lane)."""
        succeeded = get_condition((run.get("status") or {}).get("conditions"), SUCCEEDED)
        if started(run) or (succeeded and succeeded.get("status") == "True"):
            return False
        return not self._job_unrecorded(run)

    def _waits_on(self, referrer: Key, kind: str) -> bool:
        """Whether an event of a kind object can change the plan of referrer, which references it."""
        if referrer.kind != "TrainingRun":
            return True
        run = self.cache.peek(referrer.kind, referrer.namespace, referrer.name)
        # A run whose Job exists waits on nothing but recording it, which the Job's event queued.
        return run is None or (reference_matters(run, kind) and not self._job_unrecorded(run))

    def observe_child(self, body: dict[str, Any], deleted: bool = False) -> None:
        """A Job (or other child) changed: reconcile the object that owns it."""
        if body.get("kind") == "Job":
            metrics.observe_job(body, deleted)
            self.cache.observe(job_summary(body), deleted=deleted)
        labels = (body.get("metadata") or {}).get("labels") or {}
        kind, name = labels.get(OWNER_KIND), labels.get(OWNER_NAME)
        if kind in self._reconcilers and name:
            # A child changed: its owner follows up (status), in the low lane behind objects that start work.
            self.queue.add(Key(kind, body["metadata"]["namespace"], name), low=True)

    @staticmethod
    def _references_of(kind: str, body: dict[str, Any]) -> set[tuple[str, str, str]]:
        spec = body.get("spec") or {}
        ns = body["metadata"]["namespace"]
        refs: set[tuple[str, str, str]] = set()
        if kind == "TrainingRun":
            refs.add((ns, "Dataset", (spec.get("datasetRef") or {}).get("name", "")))
            refs.add((ns, "Model", (spec.get("modelRef") or {}).get("name", "")))
            holdout = ((spec.get("evaluation") or {}).get("holdout") or {}).get("name")
            if holdout:  # a run waiting for its holdout to be validated
                refs.add((ns, "Dataset", holdout))
        elif kind == "Deployment":
            refs.add((ns, "Model", (spec.get("modelRef") or {}).get("name", "")))
        elif kind == "Dataset" and (spec.get("source") or {}).get("secretRef"):
            refs.add((ns, "Secret", spec["source"]["secretRef"]["name"]))
        return refs

    def _set_references(self, key: Key, refs: set[tuple[str, str, str]]) -> None:
        for old in self._references.pop(key, set()) - refs:
            self._referrers[old].discard(key)
        for ref in refs:
            self._referrers[ref].add(key)
        if refs:
            self._references[key] = refs

    # --- workers ------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = cast(Key, await self.queue.get())
            started = time.monotonic()
            result = "success"
            try:
                requeue = await asyncio.to_thread(self._reconcilers[key.kind], key)
            except ApiError as e:
                result = "conflict" if e.status == 409 else "error"
                if e.status == 404:  # the object is gone (a write found nothing): stop serving it from the cache
                    self.cache.forget(key.kind, key.namespace, key.name)
                delay = self.queue.backoff(key)
                level = logging.INFO if e.status == 409 else logging.WARNING
                log.log(level, "%s: %s; retrying in %.1fs", key, e, delay)
                self.queue.add_after(key, 0.1 if e.status == 409 else delay)
            except Exception:
                result = "error"
                delay = self.queue.backoff(key)
                log.exception("%s: reconcile failed; retrying in %.1fs", key, delay)
                self.queue.add_after(key, delay)
            else:
                self.queue.forget(key)
                # A resync is a follow-up (low lane); a requeue the plan asked for is not.
                self.queue.add_after(key, next_reconcile(requeue, self.config.resync_seconds, random.random()),
                                     low=requeue is None)
            finally:
                self.queue.done(key)
                elapsed = time.monotonic() - started
                metrics.RECONCILES.labels(key.kind, result).inc()
                metrics.RECONCILE_SECONDS.labels(key.kind).observe(elapsed)
                log.debug("%s reconciled in %.3fs", key, elapsed)

    # --- the cache against fresh lists -------------------------------------------------------------

    async def _recheck_cache(self) -> None:
        """Now and then, drop from the cache what a fresh list no longer has (deleted while no watch ran)."""
        while True:
            await asyncio.sleep(next_reconcile(None, self.config.resync_seconds, random.random()))
            try:
                gone = await asyncio.to_thread(self._recheck_cache_once)
            except Exception:  # the next round tries again; reconciles go on meanwhile
                log.warning("re-checking the cache against fresh lists failed", exc_info=True)
                continue
            for obj in gone:  # as if their DELETED events had come (here, on the event loop)
                meta = obj["metadata"]
                log.info("%s %s/%s was deleted while no watch ran", obj["kind"], meta["namespace"], meta["name"])
                if obj["kind"] == "Job":
                    self.observe_child(obj, deleted=True)
                else:
                    self.observe_event(obj["kind"], "DELETED", obj)

    def _recheck_cache_once(self) -> list[dict[str, Any]]:
        gone: list[dict[str, Any]] = []
        for kind in CACHED_KINDS:
            for namespace in sorted(self.cache.namespaces(kind)):
                names, version = self.api.list_names(kind, namespace)
                gone += self.cache.replace(kind, namespace, names, version)
        return gone

    # --- reconcilers (run in a thread: the Kubernetes client is synchronous) ------------------------

    def _reconcile_dataset(self, key: Key) -> float | None:
        observed = observe.dataset(self.api, self.cache, self.config, key.namespace, key.name)
        if observed is None:
            return None
        plan = still_refused(observed.obj) or plan_dataset(observed, self.config, datetime.now(UTC))
        apply_plan(self.api, observed.obj, plan, cache=self.cache)
        metrics.observe_plan(observed.obj, plan)
        return plan.requeue_after

    def _reconcile_training_run(self, key: Key) -> float | None:
        observed = observe.training_run(self.api, self.cache, self.config, key.namespace, key.name)
        if observed is None:
            return None
        plan = still_refused(observed.obj) or plan_training_run(observed, self.config, datetime.now(UTC))
        apply_plan(self.api, observed.obj, plan, cache=self.cache, status_after_new_job=True)
        metrics.observe_plan(observed.obj, plan)
        return plan.requeue_after

    def _reconcile_model(self, key: Key) -> float | None:
        observed = observe.model(self.api, self.cache, key.namespace, key.name)
        if observed is None:
            return None
        plan = still_refused(observed.obj) or self._plan_model(observed)
        # Version numbers must never be handed out twice: write only if nobody wrote since we read.
        apply_plan(self.api, observed.obj, plan, optimistic=True, cache=self.cache)
        metrics.observe_plan(observed.obj, plan)
        return plan.requeue_after

    def _plan_model(self, observed: ModelObserved) -> Plan:
        now = datetime.now(UTC)
        plan, dropped = plan_model(observed, now, self.config)
        unsure = lasting_decisions(observed, dropped)
        if not unsure:
            return plan
        # The runs came from the cache: what cannot be undone (a version number, a dropped version) is decided
        # on fresh reads of the runs it rests on.
        return plan_model(observe.confirm_runs(self.api, observed, unsure), now, self.config)[0]

    def _reconcile_deployment(self, key: Key) -> float | None:
        observed = observe.deployment(self.api, self.config, key.namespace, key.name)
        if observed is None:
            return None
        held = still_refused(observed.obj)
        if held:  # the cluster refused a serving object of this generation: nothing changes until the spec does
            apply_plan(self.api, observed.obj, held)
            return None
        now = datetime.now(UTC)
        request = metrics_needed(observed, self.config, now)
        observed = observe.deployment_metrics(self.api, observed, request, now)
        planned = plan_deployment(observed, self.config, now, observe.retrain_dataset(self.api, key.namespace, request))
        outcome = serving.apply_serving(self.api, observed.obj, planned)
        if outcome.route_problem:
            route_refused(planned, *outcome.route_problem)
        if outcome.refused:
            refused(planned.plan, outcome.refused.kind, outcome.refused.name, outcome.refused.message)
        apply_plan(self.api, observed.obj, planned.plan)
        metrics.observe_plan(observed.obj, planned.plan)
        return planned.plan.requeue_after
