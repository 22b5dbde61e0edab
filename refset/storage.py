"""One I/O layer for local paths and gs:// URIs (fsspec), with atomic writes.

Local writes go to a temporary name in the same directory and are renamed into place, so a reader (or a resumed
run) never sees a half-written file. Object stores (gs://) publish an object only when its upload completes, so
there a write is spooled locally and uploaded once, straight to its final name: no half-written object is ever
visible, a killed writer leaves nothing in the bucket, and no copy+delete "rename" is needed (gcsfs's mv first
tries the objects.move API, which not every endpoint serves, then falls back to copy+delete: two requests and a
window in which both names exist).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


# Object stores whose listings may change under us (other workers, a resumed run): never serve a cached listing,
# or exists() on a commit marker written by another process could answer False.
_REMOTE_OPTIONS = {"gs": {"use_listings_cache": False}, "gcs": {"use_listings_cache": False}}


def _protocol(path: str) -> str:
    return path.split("://", 1)[0].lower() if "://" in path else "file"


def is_local(path: str) -> bool:
    return _protocol(path) in ("file", "local")


def filesystem(path: str) -> fsspec.AbstractFileSystem:
    fs, _ = fsspec.core.url_to_fs(path, **_REMOTE_OPTIONS.get(_protocol(path), {}))
    return fs


def join(base: str, *parts: str) -> str:
    """Join path parts; keeps the scheme of `base` (gs://bucket/a + b -> gs://bucket/a/b)."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return posixpath.join(base, *parts)


def exists(path: str) -> bool:
    return filesystem(path).exists(path)


def makedirs(path: str) -> None:
    """Create a local directory. Object stores have no directories: only check that the bucket exists (gcsfs's
    makedirs would *create a bucket* for a mistyped name)."""
    if is_local(path):
        filesystem(path).makedirs(path, exist_ok=True)
        return
    bucket = path.split("://", 1)[1].split("/", 1)[0]
    if not bucket or not filesystem(path).exists(f"{_protocol(path)}://{bucket}"):
        raise FileNotFoundError(f"bucket {bucket!r} of {path} does not exist or is not accessible")


def _with_scheme(like: str, path: str) -> str:
    if "://" in like and "://" not in path:
        return f"{like.split('://', 1)[0]}://{path}"
    return path


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob, with the scheme kept so results can be opened as given."""
    fs = filesystem(pattern)
    return sorted(_with_scheme(pattern, p) for p in fs.glob(pattern))


def listdir(path: str) -> list[str]:
    """Sorted file paths directly under `path` (empty when it does not exist)."""
    fs = filesystem(path)
    if not fs.exists(path):
        return []
    return sorted(_with_scheme(path, p) for p in fs.ls(path, detail=False))


def read_bytes(path: str) -> bytes:
    with filesystem(path).open(path, "rb") as f:  # the uncached filesystem: a rewritten object is read whole
        return f.read()


def read_json(path: str) -> Any:
    """JSON parsed as data only (no object hooks, no pickle)."""
    return json.loads(read_bytes(path).decode("utf-8"))


@contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[Any]:
    """Open `path` for writing; the file appears complete under its name on success, and not at all on failure.

    Local: a temp file in the same directory, renamed into place. Object stores: a local spool file uploaded to
    the final name on success (the upload is atomic; nothing temporary is created in the bucket).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'wb' or 'w', got {mode!r}")
    fs = filesystem(path)
    if not is_local(path):
        with tempfile.NamedTemporaryFile(prefix=TMP_PREFIX, delete=False) as spool_handle:
            spool = spool_handle.name
        try:
            with open(spool, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
            fs.put_file(spool, path)
        finally:
            os.unlink(spool)
        return
    parent = posixpath.dirname(path.split("://", 1)[-1])
    tmp = _with_scheme(path, posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}"))
    fs.makedirs(_with_scheme(path, parent), exist_ok=True)
    try:
        with fs.open(tmp, mode) as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def write_bytes(path: str, data: bytes) -> None:
    if not is_local(path):
        filesystem(path).pipe_file(path, data)  # one upload request: the object appears whole or not at all
        return
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_parquet(path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(path, buffer.getvalue())


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    with filesystem(path).open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def remove_temp_files(directory: str) -> int:
    """Remove leftovers of writes that were interrupted (a killed worker); returns how many."""
    fs = filesystem(directory)
    if not fs.exists(directory):
        return 0
    stale = [p for p in fs.find(directory) if posixpath.basename(p).startswith(TMP_PREFIX)]
    for p in stale:
        fs.rm(p)
    return len(stale)
