"""Segmentation metrics from a confusion matrix accumulated with np.bincount: mIoU, per-class IoU, pixel accuracy.

Conventions (as mmsegmentation): ground-truth pixels equal to the ignore value (or outside [0, C)) are not
counted; a prediction outside [0, C) at a counted pixel (e.g. "unlabelled") is a miss for the true class and a
false positive for no class. A class's IoU is NaN when it appears neither in the ground truth nor in the
predictions, and mIoU is the mean over the other classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ConfusionMatrix:
    num_classes: int
    ignore_index: int | None = 255
    # rows: ground truth class; columns: predicted class, plus a last column for "no valid prediction".
    matrix: np.ndarray = field(init=False)

    def __post_init__(self):
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        prediction = np.asarray(prediction).astype(np.int64).ravel()
        target = np.asarray(target).astype(np.int64).ravel()
        if prediction.shape != target.shape:
            raise ValueError(f"prediction has {prediction.size} pixels but target has {target.size}")
        c = self.num_classes
        keep = (target >= 0) & (target < c)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        t = target[keep]
        p = prediction[keep]
        p = np.where((p >= 0) & (p < c), p, c)
        self.matrix += np.bincount(t * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        c = self.num_classes
        tp = np.diag(self.matrix[:, :c]).astype(np.float64)
        gt = self.matrix.sum(axis=1).astype(np.float64)
        pred = self.matrix[:, :c].sum(axis=0).astype(np.float64)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, : self.num_classes]) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        gt = self.matrix.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt > 0, np.diag(self.matrix[:, : self.num_classes]) / np.where(gt > 0, gt, 1), np.nan)

    def summary(self, class_names: list[str]) -> dict:
        """JSON-ready results, percentages with 2 decimals as benchmark tables print them."""
        iou = self.iou()

        def pct(x: float):
            return None if not np.isfinite(x) else round(100.0 * float(x), 2)

        return {
            "mIoU": pct(self.miou()),
            "pixel_accuracy": pct(self.pixel_accuracy()),
            "mean_class_accuracy": pct(float(np.nanmean(self.class_accuracy())) if np.isfinite(self.class_accuracy()).any() else float("nan")),
            "pixels": int(self.matrix.sum()),
            "per_class_iou": {name: pct(v) for name, v in zip(class_names, iou, strict=True)},
        }


def format_table(summary: dict, title: str = "") -> str:
    """A plain-text table: one row per class, then the totals."""
    rows = [(name, "-" if v is None else f"{v:6.2f}") for name, v in summary["per_class_iou"].items()]
    width = max([len(r[0]) for r in rows] + [len("mean_class_accuracy")])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  IoU(%)")
    lines.append("-" * (width + 8))
    lines += [f"{name:<{width}}  {v}" for name, v in rows]
    lines.append("-" * (width + 8))
    for key in ("mIoU", "pixel_accuracy", "mean_class_accuracy"):
        v = summary[key]
        lines.append(f"{key:<{width}}  {'-' if v is None else f'{v:6.2f}'}")
    return "\n".join(lines)
