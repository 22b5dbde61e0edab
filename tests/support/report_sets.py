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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
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
    """Segment rows as columns (masks as RLE with their size)."""

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

    def __len__(self) -> int:
        return len(self.image_uri)


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


def _keys(c: Columns) -> dict[str, pa.Array]:
    ids = [schema.segment_id(u, i) for i, u in enumerate(c.image_uri)]
    return {
        "segment_id": pa.array(ids, pa.string()),
        "image_uri": pa.array(c.image_uri, pa.string()),
        "width": pa.array(c.width, pa.int32()),
        "height": pa.array(c.height, pa.int32()),
        "bbox": pa.array(c.bbox, pa.list_(pa.float32(), 4)),
        "area": pa.array(c.area, pa.int64()),
        "mask_rle": pa.array(c.mask_rle, pa.binary()),
    }


def write_refset(root: Path, kept: Columns, dropped: Columns, failures: list[dict], label_names: list[str],
                 shards: int = 4, manifest_extra: dict | None = None, visual_dim: int = 8, text_dim: int = 4) -> Path:
    """Write segments/, dropped/, failures/, labels.parquet and manifest.json; label ids follow label_names."""
    root = Path(root)
    for sub in (schema.SEGMENTS_DIR, schema.DROPPED_DIR, schema.FAILURES_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    label_id = {name: i for i, name in enumerate(label_names)}
    n = len(kept)
    embeddings = rng.normal(size=(n, visual_dim)).astype(np.float16)
    seg_schema = schema.segments_schema(visual_dim, "float16")
    table = pa.table({
        **_keys(kept),
        "label_id": pa.array([label_id[x] for x in kept.label], pa.int32()),
        "label": pa.array(kept.label, pa.string()),
        "pair_score": pa.array(kept.pair_score, pa.float32()),
        "quality": pa.array(kept.quality, pa.float32()),
        "visual_embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), visual_dim),
    }, schema=seg_schema)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        pq.write_table(table.slice(bounds[s], bounds[s + 1] - bounds[s]), root / schema.SEGMENTS_DIR / schema.shard_name(s))
    if len(dropped):
        pq.write_table(pa.table({**_keys(dropped), "label": pa.array(dropped.label, pa.string()),
                                 "pair_score": pa.array(dropped.pair_score, pa.float32()),
                                 "quality": pa.array(dropped.quality, pa.float32()),
                                 "reason": pa.array(dropped.reason, pa.string())}, schema=schema.dropped_schema()),
                       root / schema.DROPPED_DIR / schema.shard_name(0))
    if failures:
        pq.write_table(pa.Table.from_pylist(failures, schema=schema.failures_schema()),
                       root / schema.FAILURES_DIR / schema.shard_name(0))
    counts = np.bincount([label_id[x] for x in kept.label], minlength=len(label_names))
    text = rng.normal(size=(len(label_names), text_dim)).astype(np.float32)
    pq.write_table(pa.table({
        "label_id": pa.array(np.arange(len(label_names)), pa.int32()),
        "label": pa.array(label_names, pa.string()),
        "count": pa.array(counts, pa.int64()),
        "text_embedding": pa.FixedSizeListArray.from_arrays(pa.array(text.reshape(-1)), text_dim),
    }, schema=schema.labels_schema(text_dim)), root / schema.LABELS)
    reasons: dict[str, int] = {}
    for r in dropped.reason:
        reasons[r] = reasons.get(r, 0) + 1
    stages: dict[str, int] = {}
    for f in failures:
        stages[f["stage"]] = stages.get(f["stage"], 0) + 1
    images = len(set(kept.image_uri) | set(dropped.image_uri))
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": "2025-06-01T12:00:00+00:00",
        "counts": {"images_in": images + len(failures), "images_processed": images, "images_failed": len(failures),
                   "failed_by_stage": stages, "masks": n + len(dropped), "segments_kept": n,
                   "dropped": len(dropped), "dropped_by_reason": reasons, "labels": len(label_names)},
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
    return write_refset(root, kept, dropped, failures, names, shards=2)


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
    """`n_labels` labels, Zipf-sized (mean about 3 segments), over `n_images` generated JPEGs; every 40th label
    is adjective-headed; ~5% of segments dropped as outliers, as many again unpaired."""
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
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        pool.append(mask_info(mask) if mask.any() else mask_info(np.pad(np.ones((8, 8), bool), ((0, h - 8), (0, w - 8)))))
    names = [f"{_NOUNS[i % len(_NOUNS)]} {_suffix(i)}" if i % 40 else f"{_suffix(i)} {_ADJECTIVES[i % 6]}"
             for i in range(n_labels)]
    counts = np.minimum(rng.zipf(1.8, n_labels), 400)
    kept, dropped = Columns(), Columns()
    for i, name in enumerate(names):
        for _ in range(int(counts[i])):
            kept.add(uris[rng.integers(n_images)], pool[rng.integers(mask_pool)], name,
                     float(rng.uniform(0.15, 0.4)), float(np.clip(rng.normal(0.7, 0.15), 0, 1)))
    for _ in range(len(kept) // 20):
        name = names[rng.integers(n_labels)]
        dropped.add(uris[rng.integers(n_images)], pool[rng.integers(mask_pool)], name,
                    float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.0, 0.35)), "outlier")
    for _ in range(len(kept) // 20):
        dropped.add(uris[rng.integers(n_images)], pool[rng.integers(mask_pool)], None, None, None, "unpaired")
    failures = [{"uri": f"/data/broken{i}.jpg", "stage": ("decode", "read")[i % 2], "error_type": "ImageDecodeError",
                 "message": "truncated"} for i in range(5)]
    return write_refset(root, kept, dropped, failures, names, shards=shards)
