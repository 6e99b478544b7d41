"""The immutable snapshot of a dataset version in canonical form, which training reads back."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kultivar.workloads.canonical import STRING
from kultivar.workloads.storage import ArtifactStore, Staged

log = logging.getLogger("kultivar.workloads")


SNAPSHOT_NAME = "snapshot.arrow"  # Arrow IPC file (Feather v2): pyarrow.ipc.open_file or pandas.read_feather

LEGACY_SNAPSHOT_SUFFIX = ".parquet"  # snapshots written before the switch to Arrow IPC; training still reads them

SNAPSHOT_FORMAT_KEY = b"kultivar.io/snapshot"

SNAPSHOT_FORMAT = b"canonical-v1"


def read_snapshot(store: ArtifactStore, uri: str) -> pd.DataFrame:
    """A snapshot as written by :func:`write_snapshot`, text columns Arrow-backed as in the canonical form.

    Arrow IPC snapshots load without decoding: the numeric columns are read-only views of the file's buffers
    (copy the frame to modify it). Snapshots written as Parquet by earlier versions (``snapshot.parquet``) are
    still read.
    """
    mapping = {pa.string(): STRING, pa.large_string(): STRING}
    if uri.split("?", 1)[0].endswith(LEGACY_SNAPSHOT_SUFFIX):
        with store.open(uri) as f:
            table = pq.read_table(f)
    else:
        local = store.local_path(uri)
        if local is not None:
            # Read into memory rather than memory-mapped: training verifies the digest of exactly the bytes it
            # then uses, which a mapping of a file that someone rewrites in place would not guarantee. Reading
            # costs about as much as the page faults of a mapping, since every byte is hashed anyway.
            with pa.OSFile(local) as f:
                table = pa.ipc.open_file(f).read_all()
        else:
            table = pa.ipc.open_file(pa.py_buffer(store.read_bytes(uri))).read_all()
    # One block per column: numeric columns are used as Arrow holds them instead of being copied into a 2-D
    # block first (a copy of the whole snapshot).
    return table.to_pandas(types_mapper=mapping.get, split_blocks=True)


def snapshot_table(frame: pd.DataFrame) -> pa.Table:
    """The canonical frame as an Arrow table: one chunk per column, missing numbers as NaN, not as nulls."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name].array
        if isinstance(values, pd.arrays.NumpyExtensionArray):
            # NaN stays a value (from_pandas=False): no validity bitmap, so the reader gets a float column back
            # without converting nulls to NaN, which would copy it.
            columns[str(name)] = pa.array(values.to_numpy(), from_pandas=False)
        else:
            columns[str(name)] = pa.array(values, type=pa.large_string(), from_pandas=True)
    # One record batch: a column in several chunks would be concatenated (copied) again when it is read.
    table = pa.table(columns).combine_chunks()
    return table.replace_schema_metadata({SNAPSHOT_FORMAT_KEY: SNAPSHOT_FORMAT})


def _snapshot_writer(frame: pd.DataFrame) -> Callable[[Any], None]:
    def produce(f: Any) -> None:
        # Converted here rather than up front, so that it runs on the writer's thread too (it is cheap: the
        # columns are shared with the frame, not copied).
        table = snapshot_table(frame)
        # Arrow IPC (the Feather v2 file format), uncompressed: writing is a copy of the buffers and reading needs
        # no decoding, where Parquet cost about 0.5 CPU-s to encode and 0.25 CPU-s to decode per million rows of
        # twenty features. The price is size: random floats shrink little either way, but text, booleans and
        # integer labels are stored plainly (1.3x the Parquet file for bench/bench_training.py's data).
        with pa.ipc.new_file(pa.PythonFile(f, mode="w"), table.schema) as writer:
            writer.write_table(table)

    return produce


def stage_snapshot(store: ArtifactStore, directory: str, frame: pd.DataFrame) -> Staged:
    # Not hashed: the snapshot's name is the digest of its data (see commit_snapshot), and hashing its bytes as
    # well would cost as much as a second content digest.
    return store.stage_stream(directory, _snapshot_writer(frame), hashed=False)


def commit_snapshot(store: ArtifactStore, staged: Staged, relpath: str) -> str:
    """Move the staged snapshot to its content address; returns its URI."""
    if not store.commit_addressed(staged, relpath):
        # The path is keyed by the canonical digest, so the existing file holds the same data; its bytes can
        # differ only when another pyarrow/pandas version wrote it. Keep the first one.
        log.info("snapshot %s already exists (written by an earlier run); reusing it", store.uri_for(relpath))
    return store.uri_for(relpath)


def discard_staging(store: ArtifactStore, staging: Future[Staged]) -> None:
    # When the write itself failed, it already removed its temporary file.
    with contextlib.suppress(Exception):
        store.discard_staged(staging.result())
