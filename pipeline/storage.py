"""One I/O layer for local paths and gs:// URIs (fsspec), with atomic writes.

Writes go to a temporary name in the same directory and are renamed into place, so a reader (or a resumed
run) never sees a half-written file. On GCS a rename is copy+delete of one object, which is atomic for
readers because the final name appears only when the copy completes.
"""

from __future__ import annotations

import io
import json
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


def filesystem(path: str) -> fsspec.AbstractFileSystem:
    fs, _ = fsspec.core.url_to_fs(path)
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
    filesystem(path).makedirs(path, exist_ok=True)


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
    with fsspec.open(path, "rb") as f:
        return f.read()


def read_json(path: str) -> Any:
    """JSON parsed as data only (no object hooks, no pickle)."""
    return json.loads(read_bytes(path).decode("utf-8"))


@contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[Any]:
    """Open `path` for writing through a temp file in the same directory, renamed into place on success."""
    fs = filesystem(path)
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
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_parquet(path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(path, buffer.getvalue())


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    with fsspec.open(path, "rb") as f:
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
