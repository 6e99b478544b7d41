"""Artifact store: layout, write-once semantics, copies, retention."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from kultivar.workloads.storage import (
    ArtifactExists,
    ArtifactStore,
    dataset_prefix,
    run_prefix,
)

HEX = "ab" * 32


@pytest.fixture(params=["memory", "file-url", "plain-path"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "memory":
        return ArtifactStore(f"memory://kultivar-test-{uuid.uuid4().hex[:8]}")
    if request.param == "file-url":
        return ArtifactStore(f"file://{tmp_path}/store")
    return ArtifactStore(str(tmp_path / "store"))


def _listing(store: ArtifactStore) -> list[str]:
    try:
        return sorted(store.fs.find(store._path(""), withdirs=False))
    except FileNotFoundError:
        return []


def test_layout_helpers() -> None:
    assert dataset_prefix("ns", "iris", f"sha256:{HEX}") == f"ns/datasets/iris/{HEX}/"
    assert run_prefix("ns", "train-1", "0123456789abcdef") == "ns/runs/train-1-01234567/"


def test_uri_for(tmp_path: Path) -> None:
    assert ArtifactStore("s3://bucket/kultivar/").uri_for("ns/a.json") == "s3://bucket/kultivar/ns/a.json"
    assert ArtifactStore(str(tmp_path)).uri_for("/ns//a.json") == f"{tmp_path}/ns/a.json"
    with pytest.raises(ValueError, match=r"'\.\.'"):
        ArtifactStore(str(tmp_path)).uri_for("ns/../../etc/passwd")


def test_write_once_is_idempotent_and_never_overwrites(store: ArtifactStore) -> None:
    ref = store.write_once("ns/runs/r/model.bin", b"model-v1")
    assert ref == {
        "uri": store.uri_for("ns/runs/r/model.bin"),
        "digest": "sha256:" + hashlib.sha256(b"model-v1").hexdigest(),
        "sizeBytes": 8,
    }
    assert store.exists(ref["uri"])
    assert store.read_bytes(ref["uri"]) == b"model-v1"
    # A retried pod writing the same bytes succeeds with the same reference.
    assert store.write_once("ns/runs/r/model.bin", b"model-v1") == ref
    with pytest.raises(ArtifactExists) as info:
        store.write_once("ns/runs/r/model.bin", b"model-v2")
    assert "refusing to overwrite" in str(info.value)
    assert info.value.existing == ref["digest"]
    assert store.read_bytes(ref["uri"]) == b"model-v1"
    assert [p for p in _listing(store) if ".tmp-" in p] == []


def test_temp_file_is_never_visible_at_the_final_name(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    seen: list[tuple[bool, bytes]] = []
    original = store._commit

    def spying_commit(tmp: str, relpath: str, digest: str) -> None:
        # Just before the move: the data is complete under the temporary name, nothing is at the final name.
        seen.append((store.exists(store.uri_for(relpath)), store.fs.cat_file(tmp)))
        assert posix_dir(tmp) == posix_dir(store._path(relpath))
        original(tmp, relpath, digest)

    monkeypatch.setattr(store, "_commit", spying_commit)
    store.write_once("ns/a/file.json", b"{}")
    assert seen == [(False, b"{}")]


def posix_dir(path: str) -> str:
    return path.rsplit("/", 1)[0]


def test_failed_write_leaves_nothing_behind(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(1024))

    def broken_put(lpath: str, rpath: str, **kwargs: object) -> None:
        store.fs.pipe_file(rpath, b"partial")
        raise OSError("connection reset while uploading")

    monkeypatch.setattr(store.fs, "put_file", broken_put)
    with pytest.raises(OSError, match="connection reset"):
        store.write_file_once("ns/a/big.bin", local)
    assert not store.exists(store.uri_for("ns/a/big.bin"))
    assert [p for p in _listing(store) if ".tmp-" in p] == []


def test_concurrent_writer_with_other_content_is_refused(store: ArtifactStore) -> None:
    # The destination appears between our existence check and the move: the move must not clobber it.
    store.fs.makedirs(store._path("ns/a"), exist_ok=True)
    tmp = store._temp_path("ns/a/x")
    store.fs.pipe_file(tmp, b"ours")
    store.write_once("ns/a/x", b"theirs")
    with pytest.raises(ArtifactExists):
        store._commit(tmp, "ns/a/x", "sha256:" + hashlib.sha256(b"ours").hexdigest())
    assert store.read_bytes(store.uri_for("ns/a/x")) == b"theirs"


def test_write_file_once_streams_and_hashes(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "model.skops"
    local.write_bytes(data)
    ref = store.write_file_once("ns/runs/r/model.skops", local)
    assert ref["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert ref["sizeBytes"] == len(data)
    assert store.read_bytes(ref["uri"]) == data
    assert store.digest(ref["uri"]) == (ref["digest"], len(data))
    assert store.write_file_once("ns/runs/r/model.skops", local) == ref
    local.write_bytes(b"different")
    with pytest.raises(ArtifactExists):
        store.write_file_once("ns/runs/r/model.skops", local)


def test_delete_prefix_for_retention(store: ArtifactStore) -> None:
    store.write_once("ns/models/m/v1/model.skops", b"1")
    store.write_once("ns/models/m/v1/manifest.json", b"{}")
    store.write_once("ns/models/m/v2/model.skops", b"2")
    assert store.delete_prefix("ns/models/m/v1/") is True
    assert not store.exists(store.uri_for("ns/models/m/v1/model.skops"))
    assert store.exists(store.uri_for("ns/models/m/v2/model.skops"))
    assert store.delete_prefix("ns/models/m/v1/") is False
    for dangerous in ("", "/", "ns", "ns/"):
        with pytest.raises(ValueError, match="refusing"):
            store.delete_prefix(dangerous)
    assert store.exists(store.uri_for("ns/models/m/v2/model.skops"))


def test_reads_of_missing_artifacts_raise(store: ArtifactStore) -> None:
    uri = store.uri_for("ns/none.bin")
    assert not store.exists(uri)
    with pytest.raises(FileNotFoundError):
        store.read_bytes(uri)


def test_streamed_and_staged_writes(store: ArtifactStore) -> None:
    def produce(f: object) -> None:
        for chunk in (b"abc", b"def"):
            f.write(chunk)  # type: ignore[attr-defined]

    ref = store.commit_staged(store.stage_stream("ns/a", produce), "ns/a/stream.bin")
    assert ref["digest"] == "sha256:" + hashlib.sha256(b"abcdef").hexdigest() and ref["sizeBytes"] == 6
    assert store.commit_staged(store.stage_stream("ns/a", produce), "ns/a/stream.bin") == ref
    with pytest.raises(ArtifactExists):
        store.commit_staged(store.stage_stream("ns/a", lambda f: f.write(b"other")), "ns/a/stream.bin")
    # Staged: written before its (content-addressed) name is known, then committed or discarded.
    staged = store.stage_stream("ns/datasets/d", lambda f: f.write(b"snapshot"))
    assert not store.exists(store.uri_for("ns/datasets/d/abc/snapshot.arrow"))
    committed = store.commit_staged(staged, "ns/datasets/d/abc/snapshot.arrow")
    assert store.read_bytes(committed["uri"]) == b"snapshot"
    dropped = store.stage_stream("ns/datasets/d", lambda f: f.write(b"unused"))
    store.discard_staged(dropped)
    assert [p for p in _listing(store) if ".tmp-" in p] == []


def test_content_addressed_commit_keeps_the_first_file_and_never_hashes(store: ArtifactStore) -> None:
    # A name that identifies the content (a snapshot under the digest of its data) needs no digest of the bytes.
    staged = store.stage_stream("ns/datasets/d", lambda f: f.write(b"first bytes"), hashed=False)
    assert staged.digest is None and staged.size == 11
    assert store.commit_addressed(staged, "ns/datasets/d/abc/snapshot.arrow") is True
    uri = store.uri_for("ns/datasets/d/abc/snapshot.arrow")
    assert store.read_bytes(uri) == b"first bytes"
    # Same data written again, in other bytes (another library version): the first file stays.
    again = store.stage_stream("ns/datasets/d", lambda f: f.write(b"other bytes"), hashed=False)
    assert store.commit_addressed(again, "ns/datasets/d/abc/snapshot.arrow") is False
    assert store.read_bytes(uri) == b"first bytes"
    # Without a digest the write-once comparison of commit_staged is impossible: refused, and nothing is left.
    unhashed = store.stage_stream("ns/datasets/d", lambda f: f.write(b"x"), hashed=False)
    with pytest.raises(ValueError, match="commit_addressed"):
        store.commit_staged(unhashed, "ns/datasets/d/other.bin")
    assert [p for p in _listing(store) if ".tmp-" in p] == []


def test_failing_producer_leaves_nothing(store: ArtifactStore) -> None:
    def produce(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise RuntimeError("serialiser crashed")

    with pytest.raises(RuntimeError):
        store.stage_stream("ns/a", produce)
    assert _listing(store) == []
