"""Dataset validation, the workload of ``kultivar validate-dataset``: load the source, check it, digest and profile
its canonical form, and write the immutable snapshot that training reads.

The steps live in their own modules: :mod:`.checks` (the data checks), :mod:`.canonical` (the canonical form and
its digest), :mod:`.profiling` (the reference profile) and :mod:`.snapshot` (writing and reading snapshots).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kultivar.api.contracts import FailureResult, FeatureSummary, ValidationResult
from kultivar.api.dataset import DatasetSpec
from kultivar.workloads.canonical import canonical_frame_digest
from kultivar.workloads.checks import MAX_REPORTED_FAILURES, validate
from kultivar.workloads.data import SourceUnreadable, load_source
from kultivar.workloads.profiling import build_profile
from kultivar.workloads.snapshot import SNAPSHOT_NAME, commit_snapshot, discard_staging, stage_snapshot
from kultivar.workloads.storage import ArtifactExists, ArtifactStore, dataset_directory, dataset_prefix

log = logging.getLogger("kultivar.workloads")

PROFILE_NAME = "profile.json"


def run_validation(spec: DatasetSpec, namespace: str, name: str, store: ArtifactStore) -> dict[str, Any]:
    """Load, validate, digest, profile and snapshot the source; the result goes to the termination message."""
    schema = spec.schema_
    timings: dict[str, float] = {}
    t = time.perf_counter()
    log.info("reading %s", spec.source.uri)
    try:
        df = load_source(spec.source, schema)
    except SourceUnreadable as e:
        return FailureResult(reason="SourceUnreadable", message=str(e), retryable=e.transient).wire()
    timings["load"] = time.perf_counter() - t
    log.info("read %d rows x %d columns in %.2fs", len(df), df.shape[1], timings["load"])

    t = time.perf_counter()
    report = validate(df, schema, spec.checks)
    timings["validate"] = time.perf_counter() - t
    if not report.ok:
        log.info("validation failed: %s", report.message())
        return FailureResult(reason="DataValidationFailed", check=report.failures[0].check, message=report.message(),
                             failures=[f.to_dict() for f in report.failures[:MAX_REPORTED_FAILURES]]).wire()
    assert report.frame is not None
    frame = report.frame
    del df  # the canonical frame is all we need from here; free the raw copy for big data
    features = [f for f in report.features if f.name != schema.target]
    log.info("all checks passed in %.2fs", timings["validate"])

    # The snapshot's path contains the digest, but writing it (I/O and compression in pyarrow) need not wait for
    # the digest and profile (hashing and sorting in C): stage it under a hidden name in the dataset's directory
    # while they are computed, then move it into place. All three release the GIL, so they use both cores.
    # The profile, likewise, is computed beside the digest rather than after it.
    t = time.perf_counter()
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="snapshot")
    staging = writer.submit(stage_snapshot, store, dataset_directory(namespace, name), frame)
    profiling = writer.submit(build_profile, frame, features, schema.target, schema.task)
    try:
        t0 = time.perf_counter()
        digest = canonical_frame_digest(frame, features, schema.target)
        timings["digest"] = time.perf_counter() - t0
        log.info("content digest %s (%.2fs)", digest, timings["digest"])
        t0 = time.perf_counter()
        profile = profiling.result()
        timings["profile"] = time.perf_counter() - t0  # only what was left of it once the digest was done
        staged = staging.result()
    except BaseException:
        profiling.cancel()
        discard_staging(store, staging)
        raise
    finally:
        writer.shutdown(wait=False)

    prefix = dataset_prefix(namespace, name, digest)
    snapshot_uri = commit_snapshot(store, staged, prefix + SNAPSHOT_NAME)
    profile_bytes = profile.model_dump_json(exclude_none=True).encode()
    try:
        profile_ref = dict(store.write_once(prefix + PROFILE_NAME, profile_bytes))
    except ArtifactExists as e:
        # Same data, profile written by another Kultivar version: the first profile stays the baseline.
        log.info("profile %s already exists; keeping it", e.uri)
        profile_ref = {"uri": e.uri}
    # Only the part of the write that did not overlap the digest and profile.
    timings["write"] = time.perf_counter() - t - timings["digest"] - timings["profile"]
    log.info("wrote snapshot %s and profile %s", snapshot_uri, profile_ref["uri"])

    return ValidationResult(
        digest=digest,
        rows=len(frame),
        columns=frame.shape[1],
        snapshotUri=snapshot_uri,
        profileUri=profile_ref["uri"],
        features=[FeatureSummary(name=f.name, type=f.type, missingFraction=round(report.missing.get(f.name, 0.0), 6))
                  for f in features],
        timings={k: round(v, 3) for k, v in timings.items()},
    ).wire()

