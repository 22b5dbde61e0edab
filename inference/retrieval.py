"""FAISS top-k retrieval, batched over all segments of a batch of images (SPEC §1, labelling step 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.scoring import l2_normalise


@dataclass(frozen=True)
class Neighbours:
    sims: np.ndarray  # float32 [S, k]: inner product = cosine on unit vectors
    positions: np.ndarray  # int64 [S, k]: rows of the index (-1 where the index had fewer than k answers)
    label_ids: np.ndarray  # int64 [S, k]: label of each neighbour (-1 where position is -1)


def search(index, queries: np.ndarray, k: int, position_labels: np.ndarray) -> Neighbours:
    """Top-k reference segments for every query row (one FAISS call for the whole batch).

    position_labels: int [ntotal] label id of each index row, in index order.
    """
    queries = np.ascontiguousarray(l2_normalise(queries), dtype=np.float32)
    if queries.ndim != 2:
        raise ValueError(f"queries must be [S, D], got shape {queries.shape}")
    if queries.shape[1] != index.d:
        raise ValueError(f"query dim {queries.shape[1]} does not match the index dim {index.d}")
    k = max(1, min(int(k), int(index.ntotal)))
    if len(queries) == 0:
        empty = np.zeros((0, k))
        return Neighbours(empty.astype(np.float32), empty.astype(np.int64), empty.astype(np.int64))
    sims, positions = index.search(queries, k)
    positions = positions.astype(np.int64)
    valid = positions >= 0
    labels = np.where(valid, np.asarray(position_labels, dtype=np.int64)[np.where(valid, positions, 0)], -1)
    return Neighbours(sims.astype(np.float32), positions, labels)


def split_rows(array: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Split the rows of a batched result back per image."""
    return np.split(array, np.cumsum(counts)[:-1]) if counts else []
