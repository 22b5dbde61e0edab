"""Reference sets for the report's tests and bench, written column-wise with pyarrow after refset/schema.py.

- `sample_refset`: scikit-image's bundled photos, Felzenszwalb segments of them, ~30 labels (some of them traps: a
  `<script>` label, quotes and ampersands, adjectives and verbs as labels), outliers, several drop reasons, failed
  inputs and one image that cannot be read. What the browser test renders and screenshots.
- `synthetic_refset`: any number of labels (50k for the size bound), Zipf-sized, over a few generated JPEGs and a
  pool of blob masks, so building one costs seconds.
No FAISS index is written: the report does not read it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from skimage import data
from skimage.segmentation import felzenszwalb

from models.rle import encode_masks
from refset import schema

EVIL = "<script>alert(1)</script>"
QUOTES = 'tree & "bush" \'s'


@dataclass
class Columns:
    """Segment rows as columns (masks as RLE with their size), appended row by row for small hand-made sets."""

    image_uri: list[str] = field(default_factory=list)
    width: list[int] = field(default_factory=list)
    height: list[int] = field(default_factory=list)
    bbox: list[list[float]] = field(default_factory=list)
    area: list[int] = field(default_factory=list)
    mask_rle: list[bytes] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    pair_score: list[float | None] = field(default_factory=list)
    quality: list[float | None] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)  # dropped rows only

    def add(self, uri: str, mask: MaskInfo, label, pair, quality, reason: str | None = None) -> None:
        self.image_uri.append(uri)
        self.width.append(mask.width)
        self.height.append(mask.height)
        self.bbox.append(mask.bbox)
        self.area.append(mask.area)
        self.mask_rle.append(mask.rle)
        self.label.append(label)
        self.pair_score.append(pair)
        self.quality.append(quality)
        if reason is not None:
            self.reason.append(reason)

    def table(self) -> pa.Table:
        return pa.table({
            "segment_id": pa.array([schema.segment_id(u, i) for i, u in enumerate(self.image_uri)], pa.string()),
            "image_uri": pa.array(self.image_uri, pa.string()),
            "width": pa.array(self.width, pa.int32()),
            "height": pa.array(self.height, pa.int32()),
            "bbox": pa.array(self.bbox, pa.list_(pa.float32(), 4)),
            "area": pa.array(self.area, pa.int64()),
            "mask_rle": pa.array(self.mask_rle, pa.binary()),
            "label": pa.array(self.label, pa.string()),
            "pair_score": pa.array(self.pair_score, pa.float32()),
            "quality": pa.array(self.quality, pa.float32()),
            **({"reason": pa.array(self.reason, pa.string())} if self.reason else {}),
        })


@dataclass(frozen=True)
class MaskInfo:
    rle: bytes
    width: int
    height: int
    bbox: list[float]
    area: int


def mask_info(mask: np.ndarray) -> MaskInfo:
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return MaskInfo(encode_masks(mask[None])[0], mask.shape[1], mask.shape[0], bbox, int(mask.sum()))


def write_refset(root: Path, kept: pa.Table, dropped: pa.Table | None, failures: list[dict], label_names: list[str],
                 shards: int = 4, manifest_extra: dict | None = None, visual_dim: int = 8, text_dim: int = 4) -> Path:
    """Write segments/, dropped/, failures/, labels.parquet and manifest.json from tables of the segment keys plus
    label, pair_score, quality (and reason for dropped); label ids follow label_names."""
    root = Path(root)
    for sub in (schema.SEGMENTS_DIR, schema.DROPPED_DIR, schema.FAILURES_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = kept.num_rows
    label_ids = pc.index_in(kept.column("label"), value_set=pa.array(label_names, pa.string()))
    embeddings = rng.normal(size=(n, visual_dim)).astype(np.float16)
    seg_schema = schema.segments_schema(visual_dim, "float16")
    table = pa.table({
        **{name: kept.column(name) for name in ("segment_id", "image_uri", "width", "height", "bbox", "area",
                                                "mask_rle")},
        "label_id": label_ids.cast(pa.int32()),
        "label": kept.column("label"),
        "pair_score": kept.column("pair_score"),
        "quality": kept.column("quality"),
        "visual_embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), visual_dim),
    }).cast(seg_schema)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        pq.write_table(table.slice(bounds[s], bounds[s + 1] - bounds[s]), root / schema.SEGMENTS_DIR / schema.shard_name(s))
    if dropped is not None and dropped.num_rows:
        pq.write_table(dropped.select(schema.dropped_schema().names).cast(schema.dropped_schema()),
                       root / schema.DROPPED_DIR / schema.shard_name(0))
    if failures:
        pq.write_table(pa.Table.from_pylist(failures, schema=schema.failures_schema()),
                       root / schema.FAILURES_DIR / schema.shard_name(0))
    counts = np.bincount(label_ids.to_numpy(), minlength=len(label_names))
    text = rng.normal(size=(len(label_names), text_dim)).astype(np.float32)
    pq.write_table(pa.table({
        "label_id": pa.array(np.arange(len(label_names)), pa.int32()),
        "label": pa.array(label_names, pa.string()),
        "count": pa.array(counts, pa.int64()),
        "text_embedding": pa.FixedSizeListArray.from_arrays(pa.array(text.reshape(-1)), text_dim),
    }, schema=schema.labels_schema(text_dim)), root / schema.LABELS)
    reasons = Counter(dropped.column("reason").to_pylist()) if dropped is not None else Counter()
    stages = Counter(f["stage"] for f in failures)
    images = len(set(kept.column("image_uri").unique().to_pylist())
                 | set(dropped.column("image_uri").unique().to_pylist() if dropped is not None else []))
    n_dropped = dropped.num_rows if dropped is not None else 0
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": "2025-06-01T12:00:00+00:00",
        "counts": {"images_in": images + len(failures), "images_processed": images, "images_failed": len(failures),
                   "failed_by_stage": dict(stages), "masks": n + n_dropped, "segments_kept": n,
                   "dropped": n_dropped, "dropped_by_reason": dict(reasons), "labels": len(label_names)},
        "model_info": {
            "visual": {"model_id": "facebook/dinov2-base", "revision": None, "kind": "dinov2", "dim": visual_dim,
                       "image_size": 448, "patch_size": 14, "pooling": "mask_area_weighted_mean"},
            "text": {"model_id": "openai/clip-vit-base-patch16", "revision": None, "kind": "clip", "dim": text_dim,
                     "templates": ["a photo of a {}.", "a photo of the {}."]},
            "masker": {"kind": "felzenszwalb", "scale": 200.0, "sigma": 0.8, "min_size": 60, "min_area": 64},
        },
        "models": {"preset": "default", "visual": {"batch_size": 8, "device": "auto", "precision": "auto"}},
        "params": {"label_source": "captions", "max_side": 512},
        "index": {"index_key": "Flat", "k": 10, "recall_at_k": 1.0, "n": n},
        **(manifest_extra or {}),
    }
    (root / schema.MANIFEST).write_text(json.dumps(manifest, indent=2))
    return root


# --- the sample set (real photos) --------------------------------------------------------------------------------

SAMPLE_LABELS = {  # skimage picture -> labels given to its largest segments, largest first
    "astronaut": ["wall", "person", "flag", "suit", "rocket", "helmet", EVIL, "red"],
    "coffee": ["table", "cup", "saucer", "coffee", "spoon", "walking", QUOTES],
    "chelsea": ["wall", "cat", "cat", "eye", "whisker", "on", "cat"],
    "rocket": ["sky", "tree", "rocket", "building", "grass", "cloud", "two"],
    "camera": ["sky", "grass", "person", "camera", "tripod", "building", "coat"],
    "coins": ["table", "coin", "coin", "coin", "coin", "coin"],
}


def _segments(image: np.ndarray, count: int) -> list[np.ndarray]:
    regions = felzenszwalb(image, scale=400, sigma=0.9, min_size=200)
    ids, areas = np.unique(regions, return_counts=True)
    return [regions == i for i in ids[np.argsort(-areas, kind="stable")][:count]]


def sample_refset(root: Path, max_side: int = 256) -> Path:
    """A small reference set over scikit-image's photos (see the module docstring)."""
    root = Path(root)
    images_dir = root.parent / f"{root.name}-images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    kept, dropped = Columns(), Columns()
    names: list[str] = []
    for picture, labels in SAMPLE_LABELS.items():
        image = np.asarray(getattr(data, picture)())
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        pil = Image.fromarray(image[..., :3].astype(np.uint8))
        pil.thumbnail((max_side, max_side))
        image = np.asarray(pil)
        uri = str(images_dir / f"{picture}.jpg")
        pil.save(uri, quality=90)
        masks = _segments(image, len(labels) + 3)
        for j, mask in enumerate(masks):
            info = mask_info(mask)
            if j < len(labels):
                label = labels[j]
                if label not in names:
                    names.append(label)
                quality = float(np.clip(rng.normal(0.72, 0.12), 0.05, 0.99))
                if label == EVIL:  # a lone, poorly matching segment: first in "fewest members", on the first screen
                    quality = 0.12
                kept.add(uri, info, label, float(rng.uniform(0.22, 0.34)), quality)
            else:  # the rest: dropped, one reason each
                reason = ("unpaired", "too_small", "outlier")[j % 3]
                label = labels[1] if reason == "outlier" else None
                dropped.add(uri, info, label, float(rng.uniform(0.1, 0.2)) if label else None,
                            float(rng.uniform(0.05, 0.3)) if label else None, reason)
    # Segments of an image that is gone since the index was built: the report shows the mask alone.
    gone = str(images_dir / "deleted-since.jpg")
    for j in range(2):
        mask = np.zeros((120, 160), bool)
        mask[20 + 30 * j:60 + 30 * j, 30:110] = True
        kept.add(gone, mask_info(mask), "cat", 0.25, 0.4 + 0.1 * j)
    # Outliers of "cup": cut from other pictures.
    for j in range(3):
        dropped.add(kept.image_uri[j], MaskInfo(kept.mask_rle[j], kept.width[j], kept.height[j], kept.bbox[j],
                                                kept.area[j]), "cup", 0.18, 0.1 + 0.05 * j, "outlier")
    failures = [{"uri": str(images_dir / "broken.jpg"), "stage": "decode", "error_type": "ImageDecodeError",
                 "message": "cannot decode image: truncated <b>file</b>"},
                {"uri": "gs://bucket/missing.png", "stage": "read", "error_type": "FileNotFoundError",
                 "message": "No such object"}]
    return write_refset(root, kept.table(), dropped.table(), failures, names, shards=2)


# --- the synthetic set (any size) ---------------------------------------------------------------------------------

_NOUNS = "cat dog cup rocket sky grass tree wall person car road boat chair table bottle bird horse sheep".split()
_ADJECTIVES = "red blue big small green wooden".split()


def _suffix(i: int) -> str:
    """A letters-only tag per index (never a lexicon word in practice: 'bqd', 'czf'...)."""
    letters = "bcdfghjklmnpqrstvwxz"
    out = ""
    i += 20 * 20
    while i:
        i, r = divmod(i, len(letters))
        out = letters[r] + out
    return out


def synthetic_refset(root: Path, n_labels: int, seed: int = 0, n_images: int = 48, image_size=(640, 480),
                     mask_pool: int = 128, shards: int = 8) -> Path:
    """`n_labels` labels, Zipf-sized (about 8 segments on average, up to 400), over `n_images` generated JPEGs
    and a pool of elliptic masks; every 40th label is adjective-headed; 5% as many outliers as kept segments
    are dropped, and as many again unpaired. Built column-wise: 50k labels take seconds."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    images_dir = root.parent / f"{root.name}-images"
    images_dir.mkdir(parents=True, exist_ok=True)
    w, h = image_size
    yy, xx = np.mgrid[0:h, 0:w]
    uris = []
    for i in range(n_images):
        base = np.stack([(xx * (i + 1) % 256), (yy * 2 + 40 * i) % 256, ((xx + yy) // 3) % 256], -1).astype(np.uint8)
        path = images_dir / f"img{i:04d}.jpg"
        Image.fromarray(base).save(path, quality=85)
        uris.append(str(path))
    pool = []
    for _ in range(mask_pool):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(8, h // 3), rng.integers(8, w // 3)
        pool.append(mask_info(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1))
    names = [f"{_NOUNS[i % len(_NOUNS)]} {_suffix(i)}" if i % 40 else f"{_suffix(i)} {_ADJECTIVES[i % 6]}"
             for i in range(n_labels)]
    counts = np.minimum(rng.zipf(1.8, n_labels), 400)

    def rows(n: int, label: pa.Array, pair: np.ndarray | None, quality: np.ndarray | None, prefix: str) -> dict:
        image, mask = rng.integers(n_images, size=n), rng.integers(mask_pool, size=n)
        bbox = np.array([m.bbox for m in pool], np.float32)[mask]
        return {
            "segment_id": pa.array(np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), 8))),
            "image_uri": pa.array(uris).take(pa.array(image)),
            "width": pa.array(np.full(n, w), pa.int32()), "height": pa.array(np.full(n, h), pa.int32()),
            "bbox": pa.FixedSizeListArray.from_arrays(pa.array(bbox.reshape(-1)), 4),
            "area": pa.array(np.array([m.area for m in pool], np.int64)[mask]),
            "mask_rle": pa.array([m.rle for m in pool], pa.binary()).take(pa.array(mask)),
            "label": label,
            "pair_score": pa.array(pair, pa.float32()) if pair is not None else pa.nulls(n, pa.float32()),
            "quality": pa.array(quality, pa.float32()) if quality is not None else pa.nulls(n, pa.float32()),
        }

    label_index = np.repeat(np.arange(n_labels), counts)
    n = label_index.size
    kept = pa.table(rows(n, pa.array(names).take(pa.array(label_index)), rng.uniform(0.15, 0.4, n),
                         np.clip(rng.normal(0.7, 0.15, n), 0, 1), "k"))
    n_out = n // 20
    outliers = pa.table({**rows(n_out, pa.array(names).take(pa.array(rng.integers(n_labels, size=n_out))),
                                rng.uniform(0.1, 0.3, n_out), rng.uniform(0.0, 0.35, n_out), "o"),
                         "reason": pa.array(["outlier"] * n_out)})
    unpaired = pa.table({**rows(n_out, pa.nulls(n_out, pa.string()), None, None, "u"),
                         "reason": pa.array(["unpaired"] * n_out)})
    failures = [{"uri": f"/data/broken{i}.jpg", "stage": ("decode", "read")[i % 2], "error_type": "ImageDecodeError",
                 "message": "truncated"} for i in range(5)]
    return write_refset(root, kept, pa.concat_tables([outliers, unpaired]), failures, names, shards=shards)
