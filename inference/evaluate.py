"""`reme evaluate`: run the labeller over a benchmark's images (or take existing label maps) and score them.

Predictions are label maps whose values are indices into the dataset's class list (what `reme label` writes when
given that list), with the ignore value (255, or 65535 for 16-bit maps) meaning "unlabelled" (a miss).
A prediction is found by the name `reme label` gives the image, else by the image's key or stem; a missing
prediction counts as all-unlabelled and is reported. A prediction of another size than its ground truth is
resized (nearest) to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from inference import outputs
from inference.datasets import Dataset, load_dataset, read_label
from inference.metrics import ConfusionMatrix


def find_prediction(predictions: Path, key: str, image: Path, images_root: Path) -> Path | None:
    names = [outputs.output_name(str(image), str(images_root)), key, Path(key).name, image.stem]
    for name in dict.fromkeys(names):
        for suffix in (".png", ".tif", ".tiff"):
            candidate = predictions / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def score_predictions(dataset: Dataset, predictions: str | os.PathLike) -> dict:
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise FileNotFoundError(f"predictions directory {predictions} does not exist")
    cm = ConfusionMatrix(len(dataset.class_names), dataset.ignore_index)
    images_root = dataset.root / dataset.layout.images
    missing, resized = [], 0
    for key, image, label_path in dataset:
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
    summary = cm.summary(dataset.class_names)
    summary.update({"dataset": dataset.name, "images": len(dataset), "missing_predictions": len(missing),
                    "missing_examples": missing[:10], "resized_predictions": resized,
                    "predictions": str(predictions)})
    return summary


def evaluate_dataset(name: str, root: str, index: str | None = None, predictions: str | None = None,
                     output: str | None = None, ignore_index: int | None = None, request_factory=None,
                     overrides: dict | None = None, settings: dict | None = None, beam_args=None,
                     progress: bool = True, overlay: bool = False) -> dict:
    """Label the dataset's images with the reference set at `index` (unless `predictions` is given), then score."""
    dataset = load_dataset(name, root, ignore_index)
    if predictions is None:
        from inference.label import prepare_job, run_job

        if index is None or request_factory is None:
            raise ValueError("evaluate needs an index (or --predictions)")
        images_root = dataset.root / dataset.layout.images
        output = output or str(Path(root).resolve().parent / f"reme-{name}")
        request = request_factory(list(dataset.class_names))
        # Exactly the benchmark's images (nested folders, split files), named relative to its image root.
        job = prepare_job(index, [str(images_root)], output, request, overrides or {}, overlay=overlay,
                          uris=[str(image) for _, image, _ in dataset], **(settings or {}))
        summary = run_job(job, beam_args, progress=progress)
        predictions = output
        result = score_predictions(dataset, predictions)
        result["label_failures"] = summary["failed"]
        return result
    return score_predictions(dataset, predictions)
