"""Reading a Dataset's source into a pandas DataFrame.

Supported URIs:

* absolute paths and ``file://`` URIs;
* ``pvc://<claim>/<path>``: a file on a PersistentVolumeClaim. The validation pod mounts the claim read-only at
  ``/var/lib/kultivar/pvc/<claim>`` (see :data:`PVC_ROOT`; override with ``KULTIVAR_PVC_ROOT``), so the URI maps
  to ``/var/lib/kultivar/pvc/<claim>/<path>``. The controller that builds the Job must mount it there;
* ``s3://``, ``gs://``, ``http(s)://`` through fsspec. Credentials come from the environment (the Dataset's
  secretRef is exposed as environment variables; s3fs reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
  AWS_ENDPOINT_URL by itself);
* ``sklearn://<name>`` for the bundled scikit-learn sets (iris, wine, breast_cancer, diabetes, digits); their
  ``target`` column is renamed to ``schema.target``.

Formats: csv, parquet and jsonl, chosen by extension when ``format: auto`` (``.gz``/``.bz2``/``.zst``/... are
decompressed on the fly).
"""

from __future__ import annotations

import collections
import csv
import inspect
import os
import posixpath
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from kultivar.api.dataset import (
    COMPRESSIONS,
    CSV_MISSING_TOKENS,
    SKLEARN_DATASETS,
    DatasetSchema,
    DatasetSource,
    source_extension,
    source_format,
)

PVC_ROOT = "/var/lib/kultivar/pvc"


class SourceUnreadable(Exception):
    """The source could not be read. ``transient`` tells whether retrying may help."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def pvc_root() -> str:
    return os.environ.get("KULTIVAR_PVC_ROOT", PVC_ROOT)


def resolve_uri(uri: str) -> str:
    """The fsspec URI to read: pvc:// becomes a path on the mounted volume; everything else is unchanged."""
    if uri.startswith("pvc://"):
        rest = uri[len("pvc://"):]
        claim, _, path = rest.partition("/")
        if not claim or not path:
            raise SourceUnreadable(f"source {uri!r} must look like pvc://<claim>/<path/to/file>")
        clean = posixpath.normpath("/" + path)
        return f"{pvc_root().rstrip('/')}/{claim}{clean}"
    return uri


def detect_format(uri: str, declared: str = "auto") -> str:
    fmt = source_format(uri, declared)
    if fmt is not None:
        return fmt
    ext = source_extension(uri)
    raise SourceUnreadable(
        f"cannot tell the format of {uri!r} from its extension {ext or '(none)'!r}; "
        "set spec.source.format to csv, parquet or jsonl"
    )


def load_sklearn(name: str, target: str) -> pd.DataFrame:
    if name not in SKLEARN_DATASETS:
        raise SourceUnreadable(
            f"unknown scikit-learn dataset {name!r}; use one of {', '.join(SKLEARN_DATASETS)}"
        )
    from sklearn import datasets

    frame: pd.DataFrame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    if target != "target":
        if target in frame.columns:
            raise SourceUnreadable(
                f"sklearn://{name} already has a column named {target!r}; choose another schema.target "
                "(the bundled target column is renamed to it)"
            )
        frame = frame.rename(columns={"target": target})
    return frame


def _csv_dtypes(schema: DatasetSchema) -> dict[str, Any]:
    # Categorical codes such as zip codes must stay text ("01234"), not become numbers; a numeric target of a
    # classification stays numeric so class labels look as the user wrote them.
    return {f.name: "string" for f in schema.features if f.type == "categorical"}


# One block per column: numeric columns are used as Arrow decoded them instead of being copied into a 2-D block
# first (a copy of the whole table). pandas passes these options to pyarrow from version 3.0 on.
_PARQUET_OPTIONS: dict[str, Any] = (
    {"to_pandas_kwargs": {"split_blocks": True}} if "to_pandas_kwargs" in inspect.signature(pd.read_parquet).parameters
    else {}
)


def _read(f: Any, fmt: str, schema: DatasetSchema, sep: str) -> pd.DataFrame:
    if fmt == "csv":
        # The missing-value spellings spelled out (pandas' defaults): the manifest tells the server the same list.
        return pd.read_csv(f, sep=sep, dtype=_csv_dtypes(schema) or None, keep_default_na=False,
                           na_values=list(CSV_MISSING_TOKENS))
    if fmt == "parquet":
        return pd.read_parquet(f, **_PARQUET_OPTIONS)
    if fmt == "jsonl":
        # precise_float: the default parser rounds the last digits, which would change the digest. dtype=False:
        # keep JSON's own types and skip pandas' guessing (a feature named like "created_at" would become a date).
        return pd.read_json(f, lines=True, dtype=False, precise_float=True)
    raise SourceUnreadable(f"unsupported format {fmt!r}; use csv, parquet or jsonl")


_TRANSIENT = (ConnectionError, TimeoutError)


def _local_parquet(path: str, fmt: str) -> str | None:
    """The local path of an uncompressed Parquet source, None for anything else."""
    if fmt != "parquet" or path.split("?", 1)[0].lower().endswith(COMPRESSIONS):
        return None
    fs, local = fsspec.core.url_to_fs(path)
    return str(local) if isinstance(fs, LocalFileSystem) else None


def load_source(source: DatasetSource, schema: DatasetSchema) -> pd.DataFrame:
    """Read the source into a DataFrame; raises :class:`SourceUnreadable` with what to fix."""
    uri = source.uri
    if uri.startswith("sklearn://"):
        return load_sklearn(uri[len("sklearn://"):].strip("/"), schema.target)
    path = resolve_uri(uri)
    fmt = detect_format(uri, source.format)
    sep = "\t" if ".tsv" in uri.lower() else ","
    try:
        local = _local_parquet(path, fmt)
        if local is not None:
            # pyarrow's own file reads, not a Python file object's: those return every chunk of the file as a new
            # bytes object, which for a large file means a page fault per 4 KiB read, slow on virtual machines.
            with pa.OSFile(local) as f:
                df = _read(f, fmt, schema, sep)
        else:
            with fsspec.open(path, "rb", compression="infer") as f:
                df = _read(f, fmt, schema, sep)
    except SourceUnreadable:
        raise
    except FileNotFoundError as e:
        hint = (f" (the claim is mounted at {pvc_root()}/<claim>)" if uri.startswith("pvc://") else "")
        raise SourceUnreadable(f"source {uri} does not exist{hint}: check spec.source.uri ({e})") from e
    except PermissionError as e:
        raise SourceUnreadable(
            f"no permission to read {uri}: check the credentials in spec.source.secretRef ({e})"
        ) from e
    except _TRANSIENT as e:
        raise SourceUnreadable(f"could not reach {uri}: {e}", transient=True) from e
    except ImportError as e:
        raise SourceUnreadable(f"reading {uri} needs an extra package that is not installed: {e}") from e
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise SourceUnreadable(
            f"could not parse {uri} as {fmt}: {e}; check the file or set spec.source.format"
        ) from e
    except OSError as e:
        # Network filesystems report outages as OSError; the Job's retry may get through.
        raise SourceUnreadable(f"could not read {uri}: {e}", transient=True) from e
    except Exception as e:  # e.g. pyarrow.ArrowInvalid for a corrupt parquet file
        raise SourceUnreadable(f"could not parse {uri} as {fmt}: {type(e).__name__}: {e}") from e
    if not isinstance(df, pd.DataFrame):
        raise SourceUnreadable(f"{uri} did not contain a table")
    df.columns = [str(c) for c in df.columns]
    twice = _named_twice(df, path, fmt, sep)
    if twice:
        raise SourceUnreadable(f"{uri} has more than one column named {twice[0]!r}"
                               f"{f' (and {len(twice) - 1} more such names)' if len(twice) > 1 else ''}; "
                               "give each column its own name - which one a feature or the target means would be "
                               "a guess")
    return df


def _named_twice(df: pd.DataFrame, path: str, fmt: str, sep: str) -> list[str]:
    """Column names the source uses more than once. Parquet keeps them as they are; pandas' CSV reader renames
    the second ``x`` to ``x.1``, so a CSV with such a pair has its header read once more (only then) to tell a
    renamed duplicate from a column really named ``x.1``."""
    repeated = [name for name, n in collections.Counter(df.columns).items() if n > 1]
    if repeated or fmt != "csv":
        return repeated
    names = set(df.columns)
    if not any(c.rpartition(".")[0] in names and c.rpartition(".")[2].isdigit() for c in df.columns):
        return []
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    return [name for name, n in collections.Counter(header).items() if n > 1]
