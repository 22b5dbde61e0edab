"""Scoring label maps against a benchmark's ground truth (`reme evaluate`; pipeline.label_job runs the labeller first).

Predictions are label maps whose values are indices into the dataset's class list (what `reme label` writes when
given that list), with the ignore value (255, or 65535 for 16-bit maps) meaning "unlabelled" (a miss).
A prediction is found by the name `reme label` gives the image, else by the image's key or stem; a missing
prediction counts as all-unlabelled and is reported. A prediction of another size than its ground truth is
resized (nearest) to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from inference import outputs
from inference.datasets import Dataset, read_label
from inference.metrics import ConfusionMatrix


def find_prediction(predictions: Path, key: str, image: Path, images_root: Path) -> Path | None:
    names = [outputs.output_name(str(image), str(images_root)), key, Path(key).name, image.stem]
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
