"""What must hold after chaos, as functions that return the violations found (an empty list: it holds).

Each message names the object and what is wrong, so a failing run explains itself.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from kapi import API, PLURALS

KINDS = ("Dataset", "TrainingRun", "Model")
# Ready=False reasons after which nothing more happens until the spec changes.
TERMINAL_REASONS = frozenset({
    "BackoffLimitExceeded", "DeadlineExceeded", "TrainingFailed", "InvalidSpec", "EstimatorNotAllowed",
    "EstimatorImportFailed", "DataValidationFailed", "UnreadableResult", "ChildRejected",
})
TEST_MANAGER = "kultivar-chaos-test"  # the field manager of everything the test itself writes


def objects(kube, namespace: str, kind: str) -> list[dict[str, Any]]:
    status, out = kube.raw("GET", f"{API}/namespaces/{namespace}/{PLURALS[kind]}")
    assert status == 200, out
    return [{**item, "kind": kind} for item in out["items"]]  # list items carry no kind of their own


def ready_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)


def unsettled(obj: dict[str, Any]) -> str | None:
    """Why the object is not settled: Ready True or a terminal reason, for its current generation."""
    meta, status = obj["metadata"], obj.get("status") or {}
    name = f"{obj.get('kind', '?')} {meta['name']}"
    generation = meta.get("generation")
    if status.get("observedGeneration") != generation:
        return f"{name}: status.observedGeneration {status.get('observedGeneration')} != generation {generation}"
    cond = ready_condition(obj)
    if cond is None:
        return f"{name}: no Ready condition"
    if cond.get("observedGeneration") not in (None, generation):
        return f"{name}: Ready.observedGeneration {cond.get('observedGeneration')} != generation {generation}"
    if cond.get("status") != "True" and cond.get("reason") not in TERMINAL_REASONS:
        return f"{name}: Ready={cond.get('status')} {cond.get('reason')}: {cond.get('message')}"
    return None


def duplicate_jobs(runs: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> list[str]:
    """More than one training Job for one generation of one TrainingRun."""
    names = {r["metadata"]["uid"]: r["metadata"]["name"] for r in runs}
    per_generation: Counter[tuple[str, str]] = Counter()
    for job in jobs:
        meta = job["metadata"]
        if (meta.get("labels") or {}).get("kultivar.io/workload") != "train":
            continue
        for ref in meta.get("ownerReferences") or []:
            if ref["kind"] == "TrainingRun":
                generation = (meta.get("annotations") or {}).get("kultivar.io/generation", "?")
                per_generation[(names.get(ref["uid"], ref["name"]), generation)] += 1
    return [f"TrainingRun {run} generation {gen}: {count} training Jobs"
            for (run, gen), count in sorted(per_generation.items()) if count > 1]


def version_problems(runs: list[dict[str, Any]], models: list[dict[str, Any]]) -> list[str]:
    """Each Registered run has exactly one version, the one it names; versions unique and contiguous from 1."""
    problems = []
    for model in models:
        name = model["metadata"]["name"]
        versions = (model.get("status") or {}).get("versions") or []
        numbers = [v["version"] for v in versions]
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            problems.append(f"Model {name}: versions {numbers} are not unique and contiguous from 1")
        owners = Counter(v.get("trainingRun") for v in versions)
        problems += [f"Model {name}: TrainingRun {run} has {count} versions"
                     for run, count in owners.items() if count > 1]
        mine = [r for r in runs if r["spec"]["modelRef"]["name"] == name]
        registered = {r["metadata"]["name"] for r in mine if (ready_condition(r) or {}).get("reason") == "Registered"}
        problems += [f"Model {name}: version {v['version']} records TrainingRun {v.get('trainingRun')}, "
                     "which is not Registered" for v in versions if v.get("trainingRun") not in registered]
        by_run = {v.get("trainingRun"): v["version"] for v in versions}
        for run in mine:
            run_name = run["metadata"]["name"]
            if run_name not in registered:
                continue
            named = (run.get("status") or {}).get("modelVersion")
            if run_name not in by_run:
                problems.append(f"TrainingRun {run_name} is Registered (as v{named}) but Model {name} lost its version")
            elif by_run[run_name] != named:
                problems.append(f"TrainingRun {run_name} names v{named}, Model {name} records v{by_run[run_name]}")
    return problems


def orphans(owners: list[dict[str, Any]], jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[str]:
    """Jobs and pods whose owner is gone (or that have none)."""
    live = {o["metadata"]["uid"] for o in [*owners, *jobs]}
    problems = []
    for kind, children in (("Job", jobs), ("Pod", pods)):
        for child in children:
            refs = child["metadata"].get("ownerReferences") or []
            if not refs:
                problems.append(f"{kind} {child['metadata']['name']} has no owner")
            elif not any(r["uid"] in live for r in refs):
                problems.append(f"{kind} {child['metadata']['name']}: owner {[r['name'] for r in refs]} is gone")
    return problems


def spec_writers(obj: dict[str, Any]) -> list[str]:
    """Field managers other than the test that own fields of the object's spec (the operator writes status only)."""
    problems = []
    entries = obj["metadata"].get("managedFields") or []
    if not any(e.get("manager") == TEST_MANAGER and "f:spec" in json.dumps(e.get("fieldsV1") or {}) for e in entries):
        # The test created the object with its spec: without that record the check below would prove nothing.
        problems.append(f"{obj.get('kind')} {obj['metadata']['name']}: no managedFields entry of {TEST_MANAGER} "
                        "owns the spec it wrote")
    for entry in entries:
        if entry.get("subresource") == "status" or entry.get("manager") == TEST_MANAGER:
            continue
        if "f:spec" in json.dumps(entry.get("fieldsV1") or {}):
            problems.append(f"{obj.get('kind')} {obj['metadata']['name']}: manager {entry.get('manager')!r} "
                            f"({entry.get('operation')}) owns spec fields")
    return problems
