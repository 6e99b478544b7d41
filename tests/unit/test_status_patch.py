"""Status writes remove what the plan removes, at every depth (k8s/apply.status_patch through RFC 7386)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from factories import obj
from statuscheck import NOW, merge_patch, stored_status

from kultivar.api.deployment import Monitoring
from kultivar.domain.drift import check_drift
from kultivar.domain.plan import Plan
from kultivar.domain.profile import bin_counts, expected_proportions, numeric_profile
from kultivar.k8s.apply import status_patch


def test_merge_patch_is_rfc_7386() -> None:
    # The RFC's own examples (appendix A), a few of them.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}


def test_nested_keys_the_new_value_lacks_are_removed_at_every_depth() -> None:
    old = {"rollout": {"version": 2, "baseline": "{}", "deep": {"x": 1, "y": {"z": 2, "gone": 3}}}, "keep": 1}
    new = {"rollout": {"version": 2, "deep": {"x": 1, "y": {"z": 2}}}, "keep": 1}
    patch = status_patch(old, new)
    assert patch == {"rollout": {"baseline": None, "deep": {"y": {"gone": None}}}}
    assert merge_patch(old, patch) == new


def test_lists_are_replaced_whole_and_unchanged_values_are_not_sent() -> None:
    old = {"variants": [{"version": 1, "requests": 5}], "url": "u"}
    new = {"variants": [{"version": 1}], "url": "u"}
    assert status_patch(old, new) == {"variants": [{"version": 1}]}
    assert status_patch(new, new) == {}


def test_a_planned_null_means_absent_and_is_sent_only_when_something_is_stored() -> None:
    assert status_patch({"a": {"b": 1}}, {"a": {"b": None}}) == {"a": {"b": None}}
    assert status_patch({"a": {}}, {"a": {"b": None}}) == {}


def test_drift_of_a_new_stable_version_forgets_the_previous_versions_judgement() -> None:
    """The defect of architecture-review 2.4: after v2 becomes stable, v1's driftedShare, since and
    topFeatures stayed in status.drift (and `kubectl get` showed v1's drift for v2)."""
    rng = np.random.default_rng(3)
    profile = numeric_profile(rng.normal(0, 1, 5000))
    reference = {"x": {str(i): float(p) for i, p in enumerate(expected_proportions(profile))}}

    def counts(values: np.ndarray) -> dict[str, dict[str, float]]:
        return {"x": {str(i): float(c) for i, c in enumerate(bin_counts(profile, values))}}

    monitoring = Monitoring(threshold=0.2, driftedShare=0.5, minSamples=100, window="10m")
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}}, status={})
    opened = check_drift(monitoring, None, 1, counts(np.array([])), reference, NOW)
    dep["status"] = stored_status(dep, Plan(status={"drift": opened.status}))
    judged = check_drift(monitoring, dep["status"]["drift"], 1, counts(rng.normal(3, 1, 2000)), reference,
                         NOW + timedelta(minutes=10))
    assert judged.drifted
    dep["status"] = stored_status(dep, Plan(status={"drift": judged.status}))
    assert {"driftedShare", "since", "topFeatures"} <= set(dep["status"]["drift"])

    v2 = check_drift(monitoring, dep["status"]["drift"], 2, counts(np.array([])), reference,
                     NOW + timedelta(minutes=11))
    stored = stored_status(dep, Plan(status={"drift": v2.status}))["drift"]
    assert stored["version"] == 2 and not stored["drifted"]
    assert not {"driftedShare", "since"} & set(stored) and not stored.get("topFeatures")


def test_switching_to_windowed_metrics_removes_the_scrape_baseline() -> None:
    monitoring = Monitoring(window="10m")
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}}, status={})
    scraped = check_drift(monitoring, None, 1, {"x": {"0": 1.0}}, {"x": {"0": 1.0}}, NOW)
    dep["status"] = stored_status(dep, Plan(status={"drift": scraped.status}))
    assert "baseline" in dep["status"]["drift"]
    windowed = check_drift(monitoring, None, 1, {}, {"x": {"0": 1.0}}, NOW, windowed=True)
    assert "baseline" not in stored_status(dep, Plan(status={"drift": windowed.status}))["drift"]
