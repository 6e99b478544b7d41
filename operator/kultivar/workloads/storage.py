"""The artifact store: write-once, content-digested files on any fsspec filesystem.

Every artifact Kultivar writes (dataset snapshots, profiles, models, manifests) is immutable once written:
status fields and model versions point at these files by URI and digest, so silently replacing one would
break lineage. Writes therefore go to a temporary name in the destination directory and are moved into place;
an existing file with the same digest makes the write a no-op (so a retried pod succeeds), and an existing file
with different content is refused with :class:`ArtifactExists`. A dataset snapshot's path already names its content
(the digest of its data), so it is committed with :meth:`ArtifactStore.commit_addressed`: a file already there is
kept as it is, and the snapshot's bytes need no digest of their own.

Layout under the base URL::

    <namespace>/datasets/<dataset>/<digest-hex>/snapshot.arrow, profile.json   (older versions: snapshot.parquet)
    <namespace>/runs/<run>-<uid[:8]>/model.skops, manifest.json

Works with plain absolute paths, ``file://``, ``memory://`` (tests) and ``s3://`` (via s3fs; credentials from the
usual AWS_* environment variables).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, TypedDict, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHUNK = 8 * 1024 * 1024


class ArtifactRefDict(TypedDict):
    uri: str
    digest: str
    sizeBytes: int


class _HashingWriter(io.RawIOBase):
    """A write-only file object that hashes (unless told not to) and counts everything it passes to the wrapped
    file."""

    def __init__(self, target: IO[bytes], hashed: bool = True) -> None:
        super().__init__()
        self.target = target
        self.hash = hashlib.sha256() if hashed else None
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.hash is not None:
            self.hash.update(view)
        self.target.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()


@dataclass(frozen=True)
class Staged:
    """A fully written artifact under a hidden temporary name, waiting for its final one."""

    path: str
    digest: str | None  # None when staged without hashing, for commit_addressed
    size: int


class ArtifactExists(Exception):
    """The destination already holds different content; artifacts are never overwritten."""

    def __init__(self, uri: str, existing: str, new: str) -> None:
        super().__init__(
            f"artifact {uri} already exists with digest {existing}, refusing to overwrite it with {new}; "
            "artifacts are immutable: write to a new path (new run or version) or delete the old one first"
        )
        self.uri, self.existing, self.new = uri, existing, new


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + sha256_hex(data)


def hash_stream(f: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def hash_local_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    with open(path, "rb") as f:
        return hash_stream(f)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest


def dataset_directory(namespace: str, name: str) -> str:
    """Where a Dataset's versions live (each in a directory named by its digest)."""
    return f"{namespace}/datasets/{name}"


def dataset_prefix(namespace: str, name: str, digest: str) -> str:
    return f"{dataset_directory(namespace, name)}/{_hex(digest)}/"


def run_prefix(namespace: str, run: str, uid: str) -> str:
    return f"{namespace}/runs/{run}-{uid[:8]}/"


def _clean_relpath(relpath: str) -> str:
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"artifact path {relpath!r} must stay inside the store: '..' is not allowed")
    return "/".join(parts)


class ArtifactStore:
    """Write-once artifact storage rooted at ``base_url``."""

    def __init__(self, base_url: str, storage_options: dict[str, Any] | None = None) -> None:
        if not base_url:
            raise ValueError("the artifact store needs a base URL, e.g. s3://bucket/kultivar or /var/lib/kultivar")
        self.base_url = base_url.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self.fs, root = fsspec.core.url_to_fs(self.base_url, **self.storage_options)
        self.root = root.rstrip("/") if root != "/" else ""
        self._local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.base_url!r})"

    # ------------------------------------------------------------------------------------------ addressing

    def uri_for(self, relpath: str) -> str:
        rel = _clean_relpath(relpath)
        return f"{self.base_url.rstrip('/')}/{rel}" if rel else self.base_url

    def _path(self, relpath: str) -> str:
        rel = _clean_relpath(relpath)
        return f"{self.root}/{rel}" if rel else (self.root or "/")

    def _resolve(self, uri: str) -> tuple[Any, str]:
        """Filesystem and path for a URI; URIs under this store reuse its filesystem and options."""
        base = self.base_url.rstrip("/")
        if uri == base or uri.startswith(base + "/"):
            return self.fs, self._path(uri[len(base):])
        fs, path = fsspec.core.url_to_fs(uri, **self.storage_options)
        return fs, path

    # -------------------------------------------------------------------------------------------- reading

    def exists(self, uri: str) -> bool:
        fs, path = self._resolve(uri)
        return bool(fs.exists(path))

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self._resolve(uri)
        return bytes(fs.cat_file(path))

    def local_path(self, uri: str) -> str | None:
        """The path of ``uri`` on this machine's filesystem, None when it is elsewhere (an object store, memory)."""
        fs, path = self._resolve(uri)
        return str(path) if isinstance(fs, LocalFileSystem) else None

    @contextmanager
    def open(self, uri: str) -> Iterator[IO[bytes]]:
        fs, path = self._resolve(uri)
        with fs.open(path, "rb") as f:
            yield f

    def digest(self, uri: str) -> tuple[str, int]:
        with self.open(uri) as f:
            return hash_stream(f)

    # -------------------------------------------------------------------------------------------- writing

    def _ref(self, relpath: str, digest: str, size: int) -> ArtifactRefDict:
        return {"uri": self.uri_for(relpath), "digest": digest, "sizeBytes": size}

    def _existing(self, relpath: str, digest: str) -> ArtifactRefDict | None:
        """The ref of an identical existing file, None when absent; raises when it differs."""
        path = self._path(relpath)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as f:
            existing, size = hash_stream(f)
        if existing != digest:
            raise ArtifactExists(self.uri_for(relpath), existing, digest)
        return self._ref(relpath, existing, size)

    def _temp_path(self, relpath: str) -> str:
        # Same directory as the destination so the final move is a rename, not a copy, where the fs allows it;
        # the dot prefix keeps half-written files out of the way of readers that list the directory.
        path = self._path(relpath)
        directory, name = posixpath.split(path)
        return f"{directory}/.{name}.tmp-{uuid.uuid4().hex[:12]}"

    def _place(self, tmp: str, relpath: str) -> bool:
        """Move a fully written temporary file to its final name unless a file is there already (it is never
        overwritten); returns whether it moved. When it did not, the temporary file is left for the caller."""
        final = self._path(relpath)
        if self._local:
            try:
                # link() fails when the destination exists: an atomic create-if-absent on POSIX filesystems.
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError:
                # Filesystems without hard links: fall back to check-then-rename (small race window).
                if os.path.exists(final):
                    return False
                os.replace(tmp, final)
                return True
            self.fs.rm_file(tmp)
            return True
        # Object stores have no atomic no-clobber rename; the existence check narrows the race to concurrent
        # writers of the same path, which the controllers avoid by giving each run and version its own prefix.
        if self.fs.exists(final):
            return False
        self.fs.mv(tmp, final)
        return True

    def _commit(self, tmp: str, relpath: str, digest: str) -> None:
        """Move a fully written temporary file to its final name without ever overwriting."""
        if not self._place(tmp, relpath):
            self._existing(relpath, digest)  # same content: fine; different: ArtifactExists
            self.fs.rm_file(tmp)

    def _discard(self, tmp: str) -> None:
        try:
            if self.fs.exists(tmp):
                self.fs.rm_file(tmp)
        except OSError:
            pass  # best effort: a leftover dot-file is harmless and never at a final name

    def _ensure_parent(self, relpath: str) -> None:
        parent = posixpath.dirname(self._path(relpath))
        if parent:
            self.fs.makedirs(parent, exist_ok=True)

    def write_once(self, relpath: str, data: bytes) -> ArtifactRefDict:
        """Write ``data`` at ``relpath`` unless identical content is already there."""
        digest = digest_of(data)
        found = self._existing(relpath, digest)
        if found is not None:
            return found
        self._ensure_parent(relpath)
        tmp = self._temp_path(relpath)
        try:
            self.fs.pipe_file(tmp, data)
            self._commit(tmp, relpath, digest)
        except BaseException:
            self._discard(tmp)
            raise
        return self._ref(relpath, digest, len(data))

    def write_file_once(self, relpath: str, local_path: str | os.PathLike[str]) -> ArtifactRefDict:
        """Upload a local file at ``relpath`` (streamed, never read into memory whole)."""
        digest, size = hash_local_file(local_path)
        found = self._existing(relpath, digest)
        if found is not None:
            return found
        self._ensure_parent(relpath)
        tmp = self._temp_path(relpath)
        try:
            self.fs.put_file(os.fspath(local_path), tmp)
            self._commit(tmp, relpath, digest)
        except BaseException:
            self._discard(tmp)
            raise
        return self._ref(relpath, digest, size)

    def stage_stream(self, directory: str, produce: Callable[[IO[bytes]], object], hashed: bool = True) -> Staged:
        """Write what ``produce`` writes to a hidden file in ``directory``, hashing on the way.

        For large artifacts generated by a library (e.g. a dataset snapshot): no local copy and no second read to
        hash it. The final name can be decided afterwards (content-addressed paths are only known once the
        content is), then :meth:`commit_staged` or :meth:`discard_staged`. ``hashed=False`` skips the sha256 of
        the bytes for an artifact whose name will identify its content (see :meth:`commit_addressed`).
        """
        rel = _clean_relpath(directory)
        self.fs.makedirs(self._path(rel), exist_ok=True)
        tmp = self._temp_path(f"{rel}/staged")
        try:
            with self.fs.open(tmp, "wb") as raw:
                sink = _HashingWriter(raw, hashed)
                produce(cast(IO[bytes], sink))
        except BaseException:
            self._discard(tmp)
            raise
        digest = "sha256:" + sink.hash.hexdigest() if sink.hash is not None else None
        return Staged(tmp, digest, sink.size)

    def commit_staged(self, staged: Staged, relpath: str) -> ArtifactRefDict:
        """Give a staged file its final name under the write-once rules (the staged file is consumed)."""
        if staged.digest is None:
            self._discard(staged.path)
            raise ValueError("a file staged without hashing has no digest to commit it under; use commit_addressed")
        try:
            found = self._existing(relpath, staged.digest)
            if found is not None:
                self._discard(staged.path)
                return found
            self._ensure_parent(relpath)
            self._commit(staged.path, relpath, staged.digest)
        except BaseException:
            self._discard(staged.path)
            raise
        return self._ref(relpath, staged.digest, staged.size)

    def commit_addressed(self, staged: Staged, relpath: str) -> bool:
        """Give a staged file a name that already identifies its content, such as a dataset snapshot under the
        digest of its data; returns False when a file was there already.

        Such a file holds the same content by construction (perhaps in other bytes, e.g. written by another library
        version), so it is kept and the staged file is discarded: nothing is ever overwritten, and no digest of the
        bytes is needed to decide, so the file can be staged with ``hashed=False``.
        """
        try:
            self._ensure_parent(relpath)
            placed = self._place(staged.path, relpath)
        except BaseException:
            self._discard(staged.path)
            raise
        if not placed:
            self._discard(staged.path)
        return placed

    def discard_staged(self, staged: Staged) -> None:
        self._discard(staged.path)

    # ------------------------------------------------------------------------------------------ retention

    def delete(self, relpath: str) -> bool:
        """Delete one artifact file; only for files nothing refers to yet (e.g. a crashed attempt's orphan)."""
        path = self._path(relpath)
        if not self.fs.exists(path):
            return False
        self.fs.rm_file(path)
        return True

    def delete_prefix(self, relpath: str) -> bool:
        """Delete everything under ``relpath`` (retention); returns whether anything was there."""
        rel = _clean_relpath(relpath)
        if rel.count("/") < 1:
            # A namespace root or the whole store is never a retention unit: refuse instead of wiping it.
            raise ValueError(f"refusing to delete {relpath!r}: give a full artifact prefix such as "
                             "<ns>/runs/<run>-<uid>/")
        path = self._path(rel)
        if not self.fs.exists(path):
            return False
        self.fs.rm(path, recursive=True)
        return True
