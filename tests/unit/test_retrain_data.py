"""A drift retraining starts a run only on data the served version was not trained on (#14 item 6).

The Deployment asks the Dataset to validate its source again, waits for that refresh, and then either starts the
run (new digest) or says RetrainSkipped and waits for new data: no run, and no refresh in a loop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from kultivar.api.deployment import Monitoring
from kultivar.domain.conditions import Cond, now_rfc3339
from kultivar.domain.drift import DRIFTED, MonitoringPlan, awaiting_refresh, plan_monitoring
from kultivar.domain.metrics import Snapshot
from kultivar.domain.profile import bin_counts, expected_proportions, numeric_profile
from kultivar.domain.reasons import Reason

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MON = Monitoring(threshold=0.2, driftedShare=0.5, minSamples=100, window="1m",
                 retrain={"enabled": True, "cooldown": "1h", "maxRunsPerDay": 3})
PROFILE = numeric_profile(np.random.default_rng(7).normal(0, 1, 20_000))
REFERENCE = {"x": {str(i): float(p) for i, p in enumerate(expected_proportions(PROFILE))}}
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
OWNER = {"apiVersion": "kultivar.io/v1alpha1", "kind": "Deployment", "name": "iris", "uid": "u", "controller": True}
SOURCE_RUN = {"metadata": {"name": "iris-1"}, "spec": {
    "datasetRef": {"name": "iris"}, "modelRef": {"name": "iris"},
    "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {}}}}


def snapshot(shift: float, rows: int, seed: int = 1) -> Snapshot:
    values = np.random.default_rng(seed).normal(shift, 1, rows)
    return Snapshot(features={"x": {str(i): float(c) for i, c in enumerate(bin_counts(PROFILE, values))}},
                    reference=REFERENCE)


def dataset(digest: str, attempt: int, started: datetime, done: bool = True, failed: bool = False) -> dict[str, Any]:
    ready = {"type": "Ready", "status": "False" if failed else "True",
             "reason": "DataValidationFailed" if failed else "Validated", "message": "missing values" if failed else ""}
    return {"metadata": {"name": "iris"}, "status": {
        "digest": digest, "conditions": [ready],
        "validation": {"attempt": attempt, "startedAt": now_rfc3339(started),
                       "completedAttempt": attempt if done else attempt - 1}}}


class Deployment:
    """A Deployment's status carried from one reconcile to the next, as the API server would keep it."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {"metadata": {"name": "iris", "namespace": "ns", "uid": "u"}, "status": {}}
        self.traffic = 0

    def reconcile(self, now: datetime, data: dict[str, Any] | None, drifted: bool | None = True,
                  digest: str | None = OLD) -> MonitoringPlan:
        """drifted: a window's counts (True drifted, False calm); None: between windows (no scrape)."""
        metrics = None
        if drifted is not None:
            self.traffic += 1000
            metrics = snapshot(3.0 if drifted else 0.0, self.traffic, seed=self.traffic)
            if drifted is False:  # a calm window: the counts since the baseline are undrifted
                base = (self.obj["status"].get("drift") or {}).get("baseline")
                if base:
                    counts = json.loads(base)
                    calm = snapshot(0.0, 1000, seed=self.traffic).features["x"]
                    metrics = Snapshot(features={"x": {k: counts["x"].get(k, 0.0) + v for k, v in calm.items()}},
                                       reference=REFERENCE)
        out = plan_monitoring(self.obj, MON, 1, metrics, SOURCE_RUN, False, OWNER, now, dataset=data,
                              production_digest=digest)
        assert out is not None
        for key, value in out.status.items():  # status is merge-patched: None removes
            if value is None:
                self.obj["status"].pop(key, None)
            else:
                self.obj["status"][key] = value
        return out


def drifted_deployment() -> tuple[Deployment, MonitoringPlan, datetime]:
    """A Deployment whose first window closed drifted: the retraining asked for a refresh."""
    deployment = Deployment()
    deployment.reconcile(T0, dataset(OLD, 1, T0 - timedelta(hours=1)))  # the window opens
    now = T0 + timedelta(minutes=1)
    return deployment, deployment.reconcile(now, dataset(OLD, 1, T0 - timedelta(hours=1))), now


def reasons(out: MonitoringPlan) -> list[str]:
    return [event.reason for event in out.events]


def test_a_drifted_window_validates_the_source_again_before_any_run() -> None:
    deployment, out, now = drifted_deployment()
    assert "DriftDetected" in reasons(out) and "RetrainRequested" in reasons(out)
    assert out.refresh_dataset == "iris" and out.create_run is None
    wait = deployment.obj["status"]["retrainWait"]
    assert wait == {"version": 1, "dataset": "iris", "productionDigest": OLD, "requestedAt": now_rfc3339(now),
                    "skippedAt": None, "message": wait["message"]}
    assert "lastRetrain" not in deployment.obj["status"]
    assert awaiting_refresh(deployment.obj["status"], 1) and not awaiting_refresh(deployment.obj["status"], 2)
    assert out.requeue_after is not None and out.requeue_after <= 5


def test_while_the_refresh_runs_the_deployment_waits_between_windows_too() -> None:
    deployment, _, now = drifted_deployment()
    # The validation the refresh started has not finished; the reconcile is between windows (no scrape).
    out = deployment.reconcile(now + timedelta(seconds=5), dataset(OLD, 2, now, done=False), drifted=None)
    assert out.create_run is None and out.refresh_dataset is None and out.events == []
    assert out.drifted is None and out.requeue_after == 5
    # An older validation (started before the request) does not count as the refresh.
    out = deployment.reconcile(now + timedelta(seconds=5), dataset(OLD, 1, now - timedelta(seconds=30)), drifted=None)
    assert out.create_run is None and awaiting_refresh(deployment.obj["status"], 1)


def test_the_same_data_after_the_refresh_skips_the_run_and_says_why() -> None:
    deployment, _, now = drifted_deployment()
    out = deployment.reconcile(now + timedelta(seconds=10), dataset(OLD, 2, now), drifted=None)
    assert out.create_run is None
    (event,) = out.events
    message = event.message
    assert (event.type, event.reason) == ("Normal", "RetrainSkipped")
    assert message.startswith(f"the source has no new data since v1 ({OLD[:19]}…)")
    assert out.drifted == Cond(DRIFTED, True, Reason.RETRAIN_SKIPPED, message)
    wait = deployment.obj["status"]["retrainWait"]
    assert wait["skippedAt"] == now_rfc3339(now + timedelta(seconds=10)) and wait["message"] == message
    assert "lastRetrain" not in deployment.obj["status"]  # nothing ran: the budget and cooldown are untouched


def test_after_a_skip_drift_that_persists_neither_trains_nor_refreshes_again() -> None:
    deployment, _, now = drifted_deployment()
    deployment.reconcile(now + timedelta(seconds=10), dataset(OLD, 2, now), drifted=None)
    for minutes in (1, 2, 30):  # drifted windows keep closing on the same data
        out = deployment.reconcile(now + timedelta(minutes=minutes), dataset(OLD, 2, now))
        assert out.create_run is None and out.refresh_dataset is None
        assert out.drifted is not None and out.drifted.reason == Reason.RETRAIN_SKIPPED
        assert "RetrainRequested" not in reasons(out) and "RetrainSkipped" not in reasons(out)


def test_a_new_version_of_the_data_later_starts_the_run() -> None:
    deployment, _, now = drifted_deployment()
    deployment.reconcile(now + timedelta(seconds=10), dataset(OLD, 2, now), drifted=None)
    # The Dataset's own refresh (or a user's) finds new data; the next drifted window retrains on it.
    later = now + timedelta(minutes=5)
    out = deployment.reconcile(later, dataset(NEW, 3, later - timedelta(minutes=1)))
    assert out.refresh_dataset == "iris" and "RetrainRequested" in reasons(out) and out.create_run is None
    out = deployment.reconcile(later + timedelta(seconds=10), dataset(NEW, 4, later), drifted=None)
    assert out.create_run is not None and out.create_run["metadata"]["name"] == "iris-drift-1"
    assert "RetrainingStarted" in reasons(out) and "retrainWait" not in deployment.obj["status"]
    assert deployment.obj["status"]["lastRetrain"]["trainingRun"] == "iris-drift-1"
    assert out.refresh_dataset is None  # the refresh it waited for is the newest data: the run trains on it


def test_after_the_cooldown_the_source_is_checked_once_more() -> None:
    deployment, _, now = drifted_deployment()
    deployment.reconcile(now + timedelta(seconds=10), dataset(OLD, 2, now), drifted=None)
    out = deployment.reconcile(now + timedelta(hours=1, minutes=1), dataset(OLD, 2, now))
    assert out.refresh_dataset == "iris" and "RetrainRequested" in reasons(out)


def test_new_data_at_the_refresh_starts_the_run_at_once() -> None:
    deployment, _, now = drifted_deployment()
    out = deployment.reconcile(now + timedelta(seconds=10), dataset(NEW, 2, now), drifted=None)
    assert out.create_run is not None and out.create_run["spec"]["datasetRef"] == {"name": "iris"}
    (event,) = out.events
    assert event.reason == "RetrainingStarted" and f"Dataset iris has new data ({NEW[:19]}…)" in event.message


def test_a_failed_refresh_is_a_warning_and_no_run() -> None:
    deployment, _, now = drifted_deployment()
    out = deployment.reconcile(now + timedelta(seconds=10), dataset(OLD, 2, now, failed=True), drifted=None)
    assert out.create_run is None
    (event,) = out.events
    assert (event.type, event.reason) == ("Warning", "RetrainSkipped")
    assert "the refresh of Dataset iris failed" in event.message
    assert not awaiting_refresh(deployment.obj["status"], 1)  # skipped: between windows nothing more happens
    assert plan_monitoring(deployment.obj, MON, 1, None, SOURCE_RUN, False, OWNER, now, dataset=None,
                           production_digest=OLD) is None


def test_drift_that_goes_away_clears_the_wait() -> None:
    deployment, _, now = drifted_deployment()
    deployment.reconcile(now + timedelta(seconds=10), dataset(OLD, 2, now), drifted=None)
    out = deployment.reconcile(now + timedelta(minutes=2), dataset(OLD, 2, now), drifted=False)
    assert out.drifted is not None and out.drifted.status is False
    assert "retrainWait" not in deployment.obj["status"]


def test_without_the_production_digest_or_the_dataset_the_run_starts_as_before() -> None:
    """Nothing to compare with (a version record without a digest), or no Dataset to refresh (the run then says
    DatasetNotFound): the run is created at once, with a refresh requested, as before."""
    for data, digest in ((dataset(OLD, 1, T0 - timedelta(hours=1)), None), (None, OLD)):
        deployment = Deployment()
        deployment.reconcile(T0, data, digest=digest)
        out = deployment.reconcile(T0 + timedelta(minutes=1), data, digest=digest)
        assert out.create_run is not None and out.refresh_dataset == "iris"
        assert "retrainWait" not in deployment.obj["status"]
