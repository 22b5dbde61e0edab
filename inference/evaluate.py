"""Scoring label maps against a benchmark's ground truth (`reme evaluate`; pipeline.label_job runs the labeller first).

Predictions are label maps whose values are indices into the dataset's class list (what `reme label` writes when
given that list), with the ignore value (255, or 65535 for 16-bit maps) meaning "unlabelled" (a miss).
A prediction is found by the name `reme label` gives the image (its path under the images root, subfolders kept,
stem verbatim or the full file name where stems collide), else by the image's key or stem; a missing
prediction counts as all-unlabelled and is reported. A prediction of another size than its ground truth is
resized (nearest) to it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from inference import outputs
from inference.datasets import Dataset, read_label
from inference.metrics import ConfusionMatrix


def prediction_names(image: Path, images_root: Path) -> list[str]:
    """The names `reme label` can have given an image under `images_root` (inference.outputs), most specific first:
    the path with its full file name (given when another file of its folder shares its stem; no other input can
    have it), then with its stem. Knowing the image alone is enough: no listing of its folder is needed."""
    try:
        folder, filename = outputs.split_input(str(image), [str(images_root)])
    except outputs.UnsafeName:
        return []
    stem = posixpath.splitext(filename)[0]
    return [posixpath.join(folder, filename), posixpath.join(folder, stem)]


def find_prediction(predictions: Path, key: str, image: Path, images_root: Path) -> Path | None:
    """The label map of one image: by the names `reme label` gives (subfolders mirrored), else by the image's key
    or stem, flat (label maps written by other tools)."""
    names = [*prediction_names(image, images_root), key, Path(key).name, image.stem]
    for name in dict.fromkeys(names):
        for suffix in (".png", ".tif", ".tiff"):
            candidate = predictions / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def score_predictions(dataset: Dataset, predictions: str | os.PathLike,
                      progress: Callable[[int], None] | None = None) -> dict:
    """mIoU etc. of the label maps in `predictions`; `progress(images scored so far)` is called after each image."""
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise FileNotFoundError(f"predictions directory {predictions} does not exist")
    cm = ConfusionMatrix(len(dataset.class_names), dataset.ignore_index)
    images_root = dataset.root / dataset.layout.images
    missing, resized = [], 0
    for done, (key, image, label_path) in enumerate(dataset, 1):
        gt = dataset.label(label_path)
        found = find_prediction(predictions, key, image, images_root)
        if found is None:
            missing.append(key)
            pred = np.full(gt.shape, -1, dtype=np.int64)
        else:
            pred = read_label(found)
            if pred.shape != gt.shape:
                resized += 1
                pred = np.asarray(Image.fromarray(pred.astype(np.int32)).resize(
                    (gt.shape[1], gt.shape[0]), Image.Resampling.NEAREST)).astype(np.int64)
        cm.update(pred, gt)
        if progress is not None:
            progress(done)
    summary = cm.summary(dataset.class_names)
    summary.update({"dataset": dataset.name, "images": len(dataset), "missing_predictions": len(missing),
                    "missing_examples": missing[:10], "resized_predictions": resized,
                    "predictions": str(predictions)})
    return summary
