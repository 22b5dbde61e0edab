"""Datasets the pipeline tests make, and readers for a finished reference set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CLASSES = ["unlabeled", "brick", "grass", "water", "sand"]
COLOURS = {1: (170, 60, 40), 2: (40, 160, 50), 3: (30, 70, 190), 4: (220, 200, 130)}


def make_annotated_dataset(root: Path, n_images: int = 12, size=(48, 64), seed: int = 0) -> Path:
    """images/ + labels/ (mode L id maps, 0 = ignore) + classes.txt; each image: 2-3 textured class regions."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    h, w = size
    for i in range(n_images):
        classes = rng.choice([1, 2, 3, 4], size=3, replace=False)
        label = np.zeros((h, w), dtype=np.uint8)
        cuts = sorted(rng.choice(np.arange(12, w - 12), size=2, replace=False))
        label[:, : cuts[0]] = classes[0]
        label[:, cuts[0] : cuts[1]] = classes[1]
        label[:, cuts[1] :] = classes[2]
        label[:4, :] = 0  # an ignored strip, as annotators leave
        image = np.zeros((h, w, 3), dtype=np.float64)
        for c, colour in COLOURS.items():
            image[label == c] = colour
        image += rng.normal(0, 12, image.shape)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"img_{i:03d}.png")
        Image.fromarray(label, mode="L").save(root / "labels" / f"img_{i:03d}.png")
    return root


def read_parts(directory: Path) -> pa.Table | None:
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p) for p in parts])


def rows(directory: Path) -> list[dict]:
    table = read_parts(directory)
    return [] if table is None else table.to_pylist()


def snapshot(output: Path) -> dict:
    """Everything a reference set holds as rows (for exact comparison of two runs)."""
    return {
        "segments": {p.name: pq.read_table(p).to_pylist() for p in sorted((output / "segments").glob("part-*"))},
        "dropped": {p.name: pq.read_table(p).to_pylist() for p in sorted((output / "dropped").glob("part-*"))},
        "failures": {p.name: pq.read_table(p).to_pylist() for p in sorted((output / "failures").glob("part-*"))},
        "labels": pq.read_table(output / "labels.parquet").to_pylist(),
        "counts": json.loads((output / "manifest.json").read_text())["counts"],
    }


def make_captions(root: Path) -> Path:
    """captions.jsonl naming the classes present in each made-up image ("brick and grass and a sky")."""
    lines = []
    for label_path in sorted((root / "labels").glob("*.png")):
        ids = [int(i) for i in np.unique(np.asarray(Image.open(label_path))) if i != 0]
        caption = " and ".join(CLASSES[i] for i in ids) + " under a sky"
        lines.append(json.dumps({"image": label_path.name, "caption": caption}))
    path = root / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
