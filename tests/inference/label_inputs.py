"""A folder of inputs for comparing `reme label` with the Python API: the test scenes, plus a many-segment mosaic and
an EXIF-rotated JPEG in a subfolder (names relative to the input root, decoding, upsampling all exercised)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.inference.scenes import make_scenes


def mosaic(height: int, width: int, seed: int, block: int = 12) -> np.ndarray:
    """Random colour blocks with noise: many segments of many sizes."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (height // block + 1, width // block + 1, 3))
    image = colours.repeat(block, 0).repeat(block, 1)[:height, :width].astype(np.float64)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_label_inputs(root: Path) -> Path:
    """root/inputs: img000..img003.png, sub/mosaic.png (150x200), sub/rotated.jpg (EXIF 6: stored 90x120, upright
    120x90). Returns the input folder."""
    scenes = make_scenes(root / "scenes", 4, seed=1)
    inputs = root / "inputs"
    (inputs / "sub").mkdir(parents=True)
    for path in sorted((scenes / "images").iterdir()):
        shutil.copy(path, inputs / path.name)
    Image.fromarray(mosaic(150, 200, seed=5)).save(inputs / "sub" / "mosaic.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the upright image is 120 wide, 90 high
    Image.fromarray(mosaic(120, 90, seed=6, block=15)).save(inputs / "sub" / "rotated.jpg", quality=95, exif=exif)
    return inputs


INPUT_NAMES = ("img000.png", "img001.png", "img002.png", "img003.png", "sub/mosaic.png", "sub/rotated.jpg")
UPRIGHT_SIZES = {"sub/mosaic.png": (150, 200), "sub/rotated.jpg": (90, 120)}  # (height, width); scenes 96 x 128
