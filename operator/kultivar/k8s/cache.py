"""The latest state of every object the operator watches, kept from watch events and from its own writes.

Reconciles read the objects they reference (and a TrainingRun itself, the one kind there are thousands of) from
here instead of asking the API server each time: at 500 TrainingRuns that is most of the operator's requests.
A read may be stale by the latency of a watch event. That never creates anything twice (children have
deterministic names and a create that finds the object answers 409, see client.create_job), and it is never
final: every change of an object is an event that enqueues whatever depends on it again, which then reads the
newer state. What a cache can get wrong for good is an object deleted while no watch ran (kopf lists again after
a watch breaks, but reports no deletion for what vanished meanwhile): `replace` drops those from a fresh list.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

CacheKey = tuple[str, str, str]  # kind, namespace, name


def resource_version(obj: dict[str, Any]) -> int | None:
    """The resourceVersion as a number, or None when it is not one.

    Kubernetes calls resource versions opaque; the API server hands out etcd revisions, which only grow. When
    both are numbers, the larger is the newer; otherwise the later arrival wins (what a watch alone would do).
    """
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def is_older(candidate: dict[str, Any], stored: dict[str, Any]) -> bool:
    new, old = resource_version(candidate), resource_version(stored)
    return new is not None and old is not None and new < old


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with only the first of its metadata.managedFields (often half of the object otherwise).

    The first manager is who created the object (domain/history.creator); the others are never read from here."""
    meta = obj.get("metadata") or {}
    managers = meta.get("managedFields")
    if not managers or len(managers) == 1:
        return obj
    first = min(managers, key=lambda m: m.get("time") or "")
    return {**obj, "metadata": {**meta, "managedFields": [first]}}


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """A Job as the reconciles read it: metadata and status (the pod template is most of a Job, never read)."""
    meta = {k: v for k, v in (job.get("metadata") or {}).items() if k != "managedFields"}
    return {"apiVersion": job.get("apiVersion", "batch/v1"), "kind": "Job", "metadata": meta,
            "status": job.get("status") or {}}


class ObjectCache:
    """Objects by (kind, namespace, name). Thread-safe: events arrive on the event loop, reads come from the
    reconcile threads. Readers get copies, so a planner can never change what another reconcile reads."""

    def __init__(self) -> None:
        self._objects: dict[CacheKey, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._objects)

    @staticmethod
    def key(obj: dict[str, Any]) -> CacheKey:
        meta = obj.get("metadata") or {}
        return str(obj.get("kind") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """A watch event: the object as it now is (or was, when deleted)."""
        key = self.key(obj)
        with self._lock:
            stored = self._objects.get(key)
            if deleted:
                if stored is None or not is_older(obj, stored):
                    self._objects.pop(key, None)
                return
            if stored is None or not is_older(obj, stored):
                self._objects[key] = slim(obj)

    def written(self, obj: dict[str, Any]) -> None:
        """What the API server answered to one of our writes: newer than what the watch has shown so far.

        Only objects already known are updated. Inserting one could bring back an object whose DELETED event
        came first, and nothing would ever remove it again."""
        key = self.key(obj)
        with self._lock:
            stored = self._objects.get(key)
            if stored is not None and not is_older(obj, stored):
                self._objects[key] = slim(obj)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The API server says the object is gone (a 404): stop serving it."""
        with self._lock:
            self._objects.pop((kind, namespace, name), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the object, or None when no event has shown it (yet)."""
        with self._lock:
            found = self._objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def peek(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself, for a caller that only reads it (never changes it)."""
        with self._lock:
            return self._objects.get((kind, namespace, name))

    def objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """The stored objects of kind in namespace, not copied: the caller only reads them.

        Stored objects are replaced whole, never changed in place, so a list stays what it was when taken.
        (Copying 500 TrainingRuns for each Model reconcile would cost more than the request it saves.)"""
        with self._lock:
            return [o for (k, ns, _), o in self._objects.items() if k == kind and ns == namespace]

    def namespaces(self, kind: str) -> set[str]:
        with self._lock:
            return {ns for (k, ns, _) in self._objects if k == kind}

    def replace(self, kind: str, namespace: str, names: set[str], list_version: str | None
                ) -> list[dict[str, Any]]:
        """Drop the objects of kind in namespace that a fresh list (names, taken at list_version) no longer has,
        unless they are newer than the list (created after it). Returns what was dropped.

        Listed objects are not added or updated here: their own events do that, and an object added from a list
        could be one whose DELETED event has already been handled, which nothing would remove again."""
        at = resource_version({"metadata": {"resourceVersion": list_version}})
        dropped = []
        with self._lock:
            for key in [k for k in self._objects if k[0] == kind and k[1] == namespace and k[2] not in names]:
                version = resource_version(self._objects[key])
                if at is None or version is None or version <= at:
                    dropped.append(self._objects.pop(key))
        return dropped
