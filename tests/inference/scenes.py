"""Annotated test scenes: horizontal bands of three classes with distinct colour and texture, random order and
band heights, with label-map PNGs and classes.txt (the layout the index job's annotations source reads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("sky", "grass", "road")


def _texture(cls: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    if cls == 0:  # smooth blue
        return np.array([70, 130, 230]) + rng.normal(0, 4, (h, w, 3))
    if cls == 1:  # noisy green
        return np.array([40, 160, 40]) + rng.normal(0, 30, (h, w, 3))
    return np.array([120, 110, 100]) + rng.normal(0, 6, (h, w, 3))  # grey


def make_scenes(root: Path, count: int, seed: int, size: tuple[int, int] = (96, 128)) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    h, w = size
    for i in range(count):
        a, b = sorted(rng.integers(20, h - 20, 2))
        b = max(b, a + 12)
        order = rng.permutation(3)
        label = np.zeros((h, w), np.uint8)
        label[:a], label[a:b], label[b:] = order
        image = np.zeros((h, w, 3))
        for c in range(3):
            image[label == c] = _texture(c, (h, w), rng)[label == c]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"img{i:03d}.png")
        Image.fromarray(label).save(root / "labels" / f"img{i:03d}.png")
    return root


def read_scene(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(Image.open(root / "images" / f"{name}.png").convert("RGB")),
            np.asarray(Image.open(root / "labels" / f"{name}.png")))
