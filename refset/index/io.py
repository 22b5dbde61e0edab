"""Checksummed writing and reading of the index files (local paths or any fsspec URL, e.g. gs://).

Every file is written to a local temp file first, hashed, then moved into place in one step (readers never see
a partial file); its size and sha256 go into index_info.json, and loading refuses a file that does not match.
The refine file is memory-mapped (faiss.IO_FLAG_MMAP_IFC): a remote one is downloaded to a local temp file
first, which is unlinked once mapped (the mapping keeps it alive).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid

import faiss

from refset import storage


class CorruptIndex(RuntimeError):
    """The index files under <reference>/index are missing, truncated or do not match their recorded info."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _local(path: str) -> str | None:
    return path.split("://", 1)[-1] if "://" not in path or path.startswith("file://") else None


def put_file(local_path: str, dest: str) -> None:
    """Move a finished local file to `dest` (local or remote) so readers never see a partial file."""
    target = _local(dest)
    if target is not None:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f"{storage.TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(target)}")
        try:
            try:  # same filesystem: a rename; otherwise copy next to the target, then rename
                os.replace(local_path, tmp)
            except OSError:
                with open(local_path, "rb") as src, open(tmp, "wb") as dst:
                    while block := src.read(1 << 24):
                        dst.write(block)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    storage.filesystem(dest).put_file(local_path, dest)  # a GCS object appears only when its upload completes


def write_index(index: faiss.Index, dest: str) -> tuple[int, str]:
    """Write a faiss index to `dest`; returns (bytes, sha256)."""
    with tempfile.TemporaryDirectory(prefix="reme-faiss-") as tmp:
        local = os.path.join(tmp, os.path.basename(dest))
        faiss.write_index(index, local)
        size, sha = os.path.getsize(local), file_sha256(local)
        put_file(local, dest)
    return size, sha


def read_index(path: str, info_path: str, size: int | None, sha: str | None, mmap: bool = False) -> faiss.Index:
    """Read a faiss index file, refusing one whose size or checksum differs from its recorded info."""
    with tempfile.TemporaryDirectory(prefix="reme-faiss-") as tmp:
        local = _local(path)
        if local is None:
            local = os.path.join(tmp, os.path.basename(path))
            storage.filesystem(path).get_file(path, local)
        actual = os.path.getsize(local)
        if size is not None and actual != size:
            raise CorruptIndex(f"{path} is {actual} bytes, its info records {size}: truncated or replaced; "
                               "rebuild the index")
        if sha is not None and file_sha256(local) != sha:
            raise CorruptIndex(f"{path} does not match the checksum in {info_path}; rebuild the index")
        try:
            return faiss.read_index(local, faiss.IO_FLAG_MMAP_IFC) if mmap else faiss.read_index(local)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CorruptIndex(f"cannot read {path}: {first}") from None
