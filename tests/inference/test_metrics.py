import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from inference.datasets import load_dataset
from inference.metrics import ConfusionMatrix, format_table


def _torchmetrics_iou(preds, targets, num_classes, ignore):
    metric = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=ignore, average="none")
    for p, t in zip(preds, targets, strict=False):
        metric.update(torch.from_numpy(p).long(), torch.from_numpy(t).long())
    return metric.compute().numpy()


def test_matches_torchmetrics_on_random_label_maps():
    rng = np.random.default_rng(0)
    c = 6
    preds, targets = [], []
    for _ in range(4):
        t = rng.integers(0, c, size=(17, 23))
        t[rng.random(t.shape) < 0.1] = 255
        p = np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, c, size=t.shape))
        p[p == 255] = 0
        preds.append(p)
        targets.append(t)
    cm = ConfusionMatrix(c, ignore_index=255)
    for p, t in zip(preds, targets, strict=False):
        cm.update(p, t)
    expected = _torchmetrics_iou(preds, targets, c, 255)
    assert np.allclose(cm.iou(), expected, atol=1e-6)
    assert cm.miou() == pytest.approx(float(expected.mean()), abs=1e-6)
    valid = np.concatenate([t.ravel() for t in targets]) != 255
    correct = np.concatenate([(p == t).ravel() for p, t in zip(preds, targets, strict=False)])
    assert cm.pixel_accuracy() == pytest.approx(correct[valid].mean())


def test_absent_class_is_nan_and_unlabelled_predictions_are_misses():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.array([0, 255, 1, 1]), np.array([0, 0, 1, 255]))
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(1.0) and np.isnan(iou[2])
    assert cm.miou() == pytest.approx(0.75)
    text = format_table(cm.summary(["a", "b", "c"]))
    assert "75.00" in text and "c" in text


def _hand_iou(pred, gt, num_classes, ignore):
    out = []
    valid = gt != ignore
    for k in range(num_classes):
        inter = np.logical_and.reduce([pred == k, gt == k, valid]).sum()
        union = np.logical_and(np.logical_or(pred == k, gt == k), valid).sum()
        out.append(inter / union if union else np.nan)
    return np.array(out)


@pytest.mark.parametrize("name,dataset,ignore", [("voc2012", "voc21", None), ("ade20k", "ade150", None),
                                                  ("camvid", "folder", 11)])
def test_real_pairs_self_and_shifted(real_data, name, dataset, ignore):
    ds = load_dataset(dataset, real_data / name, ignore_index=ignore)
    assert len(ds) > 0
    cm_self = ConfusionMatrix(len(ds.class_names), ds.ignore_index)
    cm_shift = ConfusionMatrix(len(ds.class_names), ds.ignore_index)
    preds, gts = [], []
    for _, _image, label_path in ds:
        gt = ds.label(label_path)
        cm_self.update(gt, gt)
        shifted = np.roll(gt, shift=(7, 11), axis=(0, 1))
        shifted[shifted == ds.ignore_index] = 0  # a prediction always names a class
        cm_shift.update(shifted, gt)
        preds.append(shifted)
        gts.append(gt)
    assert cm_self.miou() == pytest.approx(1.0)
    assert cm_self.pixel_accuracy() == pytest.approx(1.0)
    # Hand computation over all images at once: per-class intersection / union with boolean masks.
    pred_all = np.concatenate([p.ravel() for p in preds])
    gt_all = np.concatenate([g.ravel() for g in gts])
    hand = _hand_iou(pred_all, gt_all, len(ds.class_names), ds.ignore_index)
    assert np.allclose(cm_shift.iou(), hand, equal_nan=True)
    assert cm_shift.miou() == pytest.approx(np.nanmean(hand))
    assert cm_shift.miou() < 0.99
