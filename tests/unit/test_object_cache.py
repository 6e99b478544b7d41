"""The watch cache (k8s/cache.py) and what is read through it (k8s/observe.py)."""

from __future__ import annotations

from typing import Any

from factories import model, run

from kultivar.domain.jobs import job_finished
from kultivar.domain.registry import ModelObserved
from kultivar.k8s import observe
from kultivar.k8s.cache import ObjectCache, job_summary, slim


def _at(obj: dict[str, Any], version: int, **status: Any) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(version)}, "status": status}


def test_an_older_event_never_replaces_a_newer_state() -> None:
    cache = ObjectCache()
    cache.observe(_at(run(), 5, phase="b"))
    cache.observe(_at(run(), 4, phase="a"))  # arrived late
    assert cache.get("TrainingRun", "team-a", "run-1")["status"] == {"phase": "b"}
    cache.observe(_at(run(), 6, phase="c"))
    assert cache.get("TrainingRun", "team-a", "run-1")["status"] == {"phase": "c"}


def test_an_own_write_is_served_at_once_but_never_brings_an_object_back() -> None:
    cache = ObjectCache()
    cache.written(_at(run(), 3))
    assert cache.get("TrainingRun", "team-a", "run-1") is None  # never seen: not inserted
    cache.observe(_at(run(), 3, phase="a"))
    cache.written(_at(run(), 7, phase="written"))
    assert cache.get("TrainingRun", "team-a", "run-1")["status"] == {"phase": "written"}
    cache.observe(_at(run(), 7, phase="written"), deleted=True)
    cache.written(_at(run(), 8, phase="late"))  # a write answered after the DELETED event
    assert cache.get("TrainingRun", "team-a", "run-1") is None


def test_readers_get_copies() -> None:
    cache = ObjectCache()
    cache.observe(_at(run(), 1, phase="a"))
    cache.get("TrainingRun", "team-a", "run-1")["status"]["phase"] = "changed"
    assert cache.get("TrainingRun", "team-a", "run-1")["status"] == {"phase": "a"}


def test_a_fresh_list_drops_what_was_deleted_while_no_watch_ran() -> None:
    cache = ObjectCache()
    for name, version in (("kept", 3), ("gone", 4), ("newer", 12)):
        cache.observe(_at(run(name), version))
    dropped = cache.replace("TrainingRun", "team-a", {"kept"}, "10")
    assert [d["metadata"]["name"] for d in dropped] == ["gone"]
    # "newer" came after the list (resourceVersion 12 > 10): not dropped
    assert {o["metadata"]["name"] for o in cache.objects("TrainingRun", "team-a")} == {"kept", "newer"}
    assert cache.replace("Model", "team-a", set(), "10") == []  # other kinds untouched


def test_slim_keeps_only_the_creating_manager() -> None:
    obj = run()
    obj["metadata"]["managedFields"] = [{"manager": "kultivar", "time": "2026-01-02T00:00:00Z", "fieldsV1": {}},
                                        {"manager": "kubectl", "time": "2026-01-01T00:00:00Z", "fieldsV1": {}}]
    assert [m["manager"] for m in slim(obj)["metadata"]["managedFields"]] == ["kubectl"]
    assert len(obj["metadata"]["managedFields"]) == 2  # the original is not changed


def test_a_job_is_cached_without_its_pod_template() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "n", "managedFields": []},
           "spec": {"template": {"spec": {"containers": [{"env": ["big"]}]}}}, "status": {"active": 1}}
    assert job_summary(job) == {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "n"},
                                "status": {"active": 1}}


def test_job_finished() -> None:
    assert not job_finished({"status": {"active": 1}})
    assert not job_finished({"status": {"conditions": [{"type": "Complete", "status": "False"}]}})
    assert job_finished({"status": {"conditions": [{"type": "Failed", "status": "True"}]}})


class FakeApi:
    """Counts what a reconcile asks the API server for."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.asked: list[str] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked.append(f"GET {kind} {name}")
        return self.objects.get((kind, name))

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked.append(f"GET Job {name}")
        return self.objects.get(("Job", name))

    def list_job_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        self.asked.append(f"LIST pods {name}")
        return []


def _job(name: str, **status: Any) -> dict[str, Any]:
    return {"kind": "Job", "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
            "status": status}


def test_a_job_comes_from_the_cache_and_its_pods_are_listed_only_once_it_finished() -> None:
    running, done = _job("a", active=1), _job("b", conditions=[{"type": "Complete", "status": "True"}])
    api, cache = FakeApi({("Job", "c"): _job("c", active=1)}), ObjectCache()
    cache.observe(running)
    cache.observe(done)
    assert observe.job(api, "team-a", "a", cache).state == "Pending"  # type: ignore[arg-type, union-attr]
    assert api.asked == []
    assert observe.job(api, "team-a", "b", cache).state == "Succeeded"  # type: ignore[arg-type, union-attr]
    assert api.asked == ["LIST pods b"]
    assert observe.job(api, "team-a", "c", cache) is not None  # type: ignore[arg-type]
    assert api.asked[1:] == ["GET Job c"]  # not seen by the watch yet: asked


def test_lasting_decisions_are_taken_on_fresh_runs() -> None:
    stale = run("r")  # the cache has not seen its modelVersion yet
    fresh = {**stale, "status": {"modelVersion": 1}}
    newcomer = run("new")
    api = FakeApi({("TrainingRun", "r"): fresh, ("TrainingRun", "new"): newcomer})
    observed = ModelObserved(model(), [stale, run("other")], frozenset())
    confirmed = observe.confirm_runs(api, observed, {"r", "new", "deleted"})  # type: ignore[arg-type]
    by_name = {r["metadata"]["name"]: r for r in confirmed.runs}
    assert set(by_name) == {"r", "other", "new"} and by_name["r"]["status"] == {"modelVersion": 1}
