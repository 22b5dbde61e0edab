"""Small reference sets written directly with pyarrow + faiss, following refset/schema.py (no index job)."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refset import schema
from refset.reader import ReferenceSet

VISUAL_INFO = {"model_id": "test/visual", "revision": None, "kind": "dinov2", "dim": 8}
TEXT_INFO = {"model_id": "test/text", "revision": None, "kind": "clip", "dim": 4}


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_reference_set(
    root: Path,
    visual: np.ndarray,  # [R, D] segment embeddings
    segment_labels: list[int],  # label_id per segment
    label_names: list[str],
    label_text: np.ndarray,  # [L, Dt]
    visual_info: dict | None = None,
    text_info: dict | None = None,
    shards: int = 2,
    image_uris: list[str] | None = None,
    masks: list[np.ndarray] | None = None,  # per segment bool [H, W] (for the report); default 8x8 squares
    qualities: list[float] | None = None,
    dropped: list[dict] | None = None,
    failures: list[dict] | None = None,
    permute_index: bool = False,
    extra_manifest: dict | None = None,
) -> Path:
    from models.rle import encode_masks

    root = Path(root)
    (root / schema.SEGMENTS_DIR).mkdir(parents=True, exist_ok=True)
    visual = unit(visual)
    r, dim = visual.shape
    uris = image_uris or [f"/nonexistent/img{i // 3}.jpg" for i in range(r)]
    if masks is None:
        masks = []
        for i in range(r):
            m = np.zeros((8, 8), bool)
            m[: 1 + i % 8, : 1 + i % 8] = True
            masks.append(m)
    quality = qualities or [float(0.5 + 0.5 * np.sin(i)) for i in range(r)]
    rows = []
    for i in range(r):
        m = masks[i]
        ys, xs = np.nonzero(m)
        rows.append({
            "segment_id": schema.segment_id(uris[i], i), "image_uri": uris[i], "width": m.shape[1],
            "height": m.shape[0],
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
            "area": int(m.sum()), "mask_rle": encode_masks(m[None])[0], "label_id": int(segment_labels[i]),
            "label": label_names[segment_labels[i]], "pair_score": float(0.2 + 0.01 * i), "quality": quality[i],
            "visual_embedding": visual[i].tolist(),
        })
    bounds = np.linspace(0, r, shards + 1).astype(int)
    id_rows = []
    for s in range(shards):
        part = rows[bounds[s]:bounds[s + 1]]
        name = schema.shard_name(s)
        pq.write_table(pa.Table.from_pylist(part, schema=schema.segments_schema(dim)), root / schema.SEGMENTS_DIR / name)
        id_rows += [{"segment_id": p["segment_id"], "shard": name, "row": j} for j, p in enumerate(part)]

    counts = np.bincount(np.asarray(segment_labels), minlength=len(label_names))
    label_text = unit(label_text)
    pq.write_table(pa.Table.from_pylist([
        {"label_id": i, "label": n, "count": int(counts[i]), "text_embedding": label_text[i].tolist()}
        for i, n in enumerate(label_names)], schema=schema.labels_schema(label_text.shape[1])), root / schema.LABELS)

    order = np.arange(r)
    if permute_index:  # index rows in another order than the shards: the id map must be honoured
        order = np.random.default_rng(0).permutation(r)
    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(visual[order]))
    (root / schema.INDEX_DIR).mkdir(exist_ok=True)
    faiss.write_index(index, str(root / schema.INDEX_FILE))
    (root / schema.INDEX_INFO).write_text(json.dumps({"index_key": "Flat", "search_params": {}}))
    ids = [dict(id_rows[o], position=p) for p, o in enumerate(order)]
    pq.write_table(pa.Table.from_pylist(ids, schema=schema.index_ids_schema()), root / schema.INDEX_IDS)

    if dropped:
        (root / schema.DROPPED_DIR).mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(dropped, schema=schema.dropped_schema()),
                       root / schema.DROPPED_DIR / schema.shard_name(0))
    if failures:
        (root / schema.FAILURES_DIR).mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(failures, schema=schema.failures_schema()),
                       root / schema.FAILURES_DIR / schema.shard_name(0))

    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "model_info": {"visual": visual_info or dict(VISUAL_INFO, dim=dim),
                       "text": text_info or dict(TEXT_INFO, dim=label_text.shape[1])},
        "counts": {"segments": r, "labels": len(label_names)},
        **(extra_manifest or {}),
    }
    (root / schema.MANIFEST).write_text(json.dumps(manifest))
    return root


def pets_reference_set(root: Path):
    """Two visual clusters labelled "dog" and "cat" (label text = axes 0 and 1): (ReferenceSet, cluster centres)."""
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(2, 8)))
    visual = np.concatenate([centres[0] + 0.03 * rng.normal(size=(6, 8)), centres[1] + 0.03 * rng.normal(size=(6, 8))])
    return ReferenceSet.open(str(write_reference_set(root, visual, [0] * 6 + [1] * 6, ["dog", "cat"],
                                                     np.eye(2, 4)))), centres
