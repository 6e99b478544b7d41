"""The reconcile loop: keys from watch events go through a work queue to observe -> plan -> apply."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from kultivar.api.deployment import DeploymentSpec
from kultivar.config import OperatorConfig
from kultivar.controllers import metrics
from kultivar.controllers.workqueue import WorkQueue
from kultivar.domain.conditions import Cond
from kultivar.domain.dataset import plan_dataset
from kultivar.domain.drift import DRIFTED, drift_due, drift_due_in, drift_since, plan_monitoring
from kultivar.domain.jobs import owner_reference
from kultivar.domain.metrics import Snapshot
from kultivar.domain.plan import Event, Plan
from kultivar.domain.registry import plan_model
from kultivar.domain.rollout import metrics_since, windowed
from kultivar.domain.serving import DEGRADED, DeploymentObserved, plan_serving, version_record
from kultivar.domain.trainingrun import plan_training_run
from kultivar.k8s import observe, prometheus, serving
from kultivar.k8s.apply import apply_plan
from kultivar.k8s.client import Api, ApiError

log = logging.getLogger("kultivar")


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class Operator:
    """Owns the queue, the workers and the reverse index of references between our objects."""

    def __init__(self, api: Api, config: OperatorConfig) -> None:
        self.api = api
        self.config = config
        self.queue = WorkQueue()
        self._workers: list[asyncio.Task[None]] = []
        # (namespace, kind, name) of a referenced object -> keys of the objects that reference it
        self._referrers: dict[tuple[str, str, str], set[Key]] = defaultdict(set)
        self._references: dict[Key, set[tuple[str, str, str]]] = {}
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

    async def stop(self) -> None:
        self.queue.close()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- events -------------------------------------------------------------------------------------

    def observe_event(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        """Called for every watch event of our kinds: enqueue it and whatever depends on it."""
        meta = body.get("metadata") or {}
        key = Key(kind, meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._set_references(key, set())
        else:
            self._set_references(key, self._references_of(kind, body))
        self.queue.add(key)
        for referrer in list(self._referrers.get((key.namespace, kind, key.name), ())):
            self.queue.add(referrer)
        if kind in ("TrainingRun", "Deployment"):  # the Model registers runs and records rollbacks
            model = ((body.get("spec") or {}).get("modelRef") or {}).get("name")
            if model:
                self.queue.add(Key("Model", key.namespace, model))

    def observe_child(self, body: dict[str, Any], deleted: bool = False) -> None:
        """A Job (or other child) changed: reconcile the object that owns it."""
        if body.get("kind") == "Job":
            metrics.observe_job(body, deleted)
        labels = (body.get("metadata") or {}).get("labels") or {}
        kind, name = labels.get("kultivar.io/owner-kind"), labels.get("kultivar.io/owner-name")
        if kind in self._reconcilers and name:
            self.queue.add(Key(kind, body["metadata"]["namespace"], name))

    @staticmethod
    def _references_of(kind: str, body: dict[str, Any]) -> set[tuple[str, str, str]]:
        spec = body.get("spec") or {}
        ns = body["metadata"]["namespace"]
        refs: set[tuple[str, str, str]] = set()
        if kind == "TrainingRun":
            refs.add((ns, "Dataset", (spec.get("datasetRef") or {}).get("name", "")))
            refs.add((ns, "Model", (spec.get("modelRef") or {}).get("name", "")))
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
                self.queue.add_after(key, min(requeue or self.config.resync_seconds, self.config.resync_seconds))
            finally:
                self.queue.done(key)
                elapsed = time.monotonic() - started
                metrics.RECONCILES.labels(key.kind, result).inc()
                metrics.RECONCILE_SECONDS.labels(key.kind).observe(elapsed)
                log.debug("%s reconciled in %.3fs", key, elapsed)

    # --- reconcilers (run in a thread: the Kubernetes client is synchronous) ------------------------

    def _reconcile_dataset(self, key: Key) -> float | None:
        observed = observe.dataset(self.api, self.config, key.namespace, key.name)
        if observed is None:
            return None
        plan = plan_dataset(observed, self.config, datetime.now(UTC))
        apply_plan(self.api, observed.obj, plan)
        metrics.observe_plan(observed.obj, plan)
        return plan.requeue_after

    def _reconcile_training_run(self, key: Key) -> float | None:
        observed = observe.training_run(self.api, self.config, key.namespace, key.name)
        if observed is None:
            return None
        plan = plan_training_run(observed, self.config, datetime.now(UTC))
        apply_plan(self.api, observed.obj, plan)
        metrics.observe_plan(observed.obj, plan)
        return plan.requeue_after

    def _reconcile_model(self, key: Key) -> float | None:
        observed = observe.model(self.api, key.namespace, key.name)
        if observed is None:
            return None
        plan, _dropped = plan_model(observed, datetime.now(UTC), self.config)
        # Version numbers must never be handed out twice: write only if nobody wrote since we read.
        apply_plan(self.api, observed.obj, plan, optimistic=True)
        metrics.observe_plan(observed.obj, plan)
        return plan.requeue_after

    def _reconcile_deployment(self, key: Key) -> float | None:
        observed = observe.deployment(self.api, self.config, key.namespace, key.name)
        if observed is None:
            return None
        now = datetime.now(UTC)
        planned = plan_serving(observed, self.config, now)
        stable = planned.plan.status.get("stableVersion")
        spec = DeploymentSpec.model_validate(observed.obj["spec"])
        status = observed.obj.get("status") or {}
        watch_drift = drift_due(spec.monitoring, status.get("drift"), stable, now) and bool(observed.pods)
        drift_metrics: Snapshot | None = None
        drift_error = None
        url = spec.strategy.canary.analysis.prometheusUrl
        if windowed(spec):  # ask Prometheus for the windows' counts
            if planned.needs_metrics:
                since = metrics_since(spec, status)
                planned = plan_serving(self._from_prometheus(observed, url, since, now), self.config, now)
            if watch_drift and stable is not None:
                since = drift_since(status.get("drift"), stable)
                try:
                    drift_metrics = prometheus.snapshots(url, key.namespace, key.name, [stable],
                                                         _seconds_since(since, now), features=True,
                                                         at=now.timestamp()).get(stable)
                except prometheus.PrometheusError as e:
                    drift_error = str(e)
        elif planned.needs_metrics or watch_drift:  # scrape the versions' pods and decide with numbers
            scraped = serving.scrape(self.api, key.namespace, key.name, sorted(observed.pods or {}))
            planned = plan_serving(replace(observed, metrics=scraped), self.config, now)
            drift_metrics = scraped.get(stable) if stable is not None else None
        if not watch_drift and (due_in := drift_due_in(spec.monitoring, status.get("drift"), stable, now)):
            planned.plan.requeue_after = min(planned.plan.requeue_after or due_in, due_in)
        if watch_drift and stable is not None:
            if drift_error is not None:
                planned.plan.conditions.append(Cond(DRIFTED, None, "MetricsUnavailable",
                                                    f"drift not measured: Prometheus failed: {drift_error}"))
                planned.plan.requeue_after = min(planned.plan.requeue_after or 60.0, 60.0)
            else:
                self._monitor(observed, spec, planned.plan, stable, drift_metrics, now)
        route_problem = serving.apply_serving(self.api, observed.obj, planned)
        if route_problem:  # pods serve, but the traffic split is not what the spec asks for
            planned.plan.conditions.append(Cond(DEGRADED, True, *route_problem))
        apply_plan(self.api, observed.obj, planned.plan)
        metrics.observe_plan(observed.obj, planned.plan)
        return planned.plan.requeue_after

    @staticmethod
    def _from_prometheus(observed: DeploymentObserved, url: str | None, since: datetime | None,
                         now: datetime) -> DeploymentObserved:
        """The observation with the serving window's counts from Prometheus (or why they are missing)."""
        meta = observed.obj["metadata"]
        try:
            counts = prometheus.snapshots(url, meta["namespace"], meta["name"], sorted(observed.pods or {}),
                                          _seconds_since(since, now), at=now.timestamp())
        except prometheus.PrometheusError as e:
            log.warning("Deployment %s/%s: %s", meta["namespace"], meta["name"], e)
            return replace(observed, metrics_error=str(e))
        return replace(observed, metrics=counts)

    def _monitor(self, observed: Any, spec: DeploymentSpec, plan: Plan, stable: int, snapshot: Any,
                 now: datetime) -> None:
        """Drift on the stable version; a persistent drift starts one retraining run."""
        obj = observed.obj
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        runs = self.api.list_objects("TrainingRun", ns)
        record = version_record(observed.model or {}, stable) or {}
        source = next((r for r in runs if r["metadata"]["name"] == record.get("trainingRun")), None)
        active = any(
            (r["metadata"].get("labels") or {}).get("kultivar.io/deployment") == name
            and not (r.get("status") or {}).get("completionTime") for r in runs
        )
        mon = plan_monitoring(obj, spec.monitoring, stable, snapshot, source, active, owner_reference(obj), now,
                              windowed=windowed(spec))
        if mon is None:
            return
        plan.status.update(mon.status)
        status, reason, message = mon.drifted
        plan.conditions.append(Cond(DRIFTED, status, reason, message))
        plan.events.extend(Event(t, r, m) for t, r, m in mon.events)
        if mon.requeue_after is not None:
            plan.requeue_after = min(plan.requeue_after or mon.requeue_after, mon.requeue_after)
        if mon.refresh_dataset:
            self.api.request_refresh("Dataset", ns, mon.refresh_dataset, now)
        if mon.create_run:
            self.api.create_if_missing("TrainingRun", ns, mon.create_run)


def _seconds_since(since: datetime | None, now: datetime) -> float | None:
    """The length of a metrics window that began at since (None: no window is open)."""
    return None if since is None else max(0.0, (now - since).total_seconds())
