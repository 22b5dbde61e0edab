"""Batched calls give what one-at-a-time calls give: label texts x prompt templates in batched forward passes, and
SAM's Mask step over a batch of images (with per-image failure isolation when the batch fails)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.config import ModelsConfig
from models.text import build_text_encoder
from transforms.failures import RetryPolicy
from transforms.masks import MaskerModelHandler

LABELS = ["cat", "dog", "surfboard", "traffic light", "a very long label about a red double decker bus", "sky"]


def test_labels_x_templates_batched_equal_one_label_and_one_template_at_a_time(tiny_models):
    cfg = dataclasses.replace(tiny_models.text, device="cpu", batch_size=5)  # 6 labels x 8 templates: 10 calls
    enc = build_text_encoder(cfg)
    batched = enc.encode(LABELS)
    one_by_one = []
    for label in LABELS:  # the earlier path: one forward pass per (label, template)
        total = sum(enc._embed([t.format(label)]) for t in enc.templates)
        one_by_one.append(torch.nn.functional.normalize(total, dim=-1).numpy()[0])
    np.testing.assert_allclose(batched, np.stack(one_by_one), atol=1e-5)
    np.testing.assert_allclose(enc.encode_each(LABELS), np.stack(one_by_one), atol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3  # different labels, different vectors


def test_encode_each_is_bit_stable_whatever_else_is_embedded(tiny_models):
    enc = build_text_encoder(dataclasses.replace(tiny_models.text, device="cpu"))
    alone = enc.encode_each(["traffic light"])[0]
    among = enc.encode_each(["cat", "traffic light", "a very long label about a red double decker bus"])[1]
    assert np.array_equal(alone, among)


def test_the_text_encoder_makes_few_forward_passes(tiny_models):
    enc = build_text_encoder(dataclasses.replace(tiny_models.text, device="cpu", batch_size=16))
    calls = []
    real = enc._embed
    enc._embed = lambda prompts: (calls.append(len(prompts)), real(prompts))[1]
    enc.encode(LABELS)
    assert calls == [16, 16, 16]  # 6 labels x 8 templates = 48 prompts in 3 passes (not 48)


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        image = np.zeros((40 + 8 * i, 48, 3), np.uint8)
        image[:, : 20 + i] = (200, 40, 40)
        image[10:30, 24:] = (30, 60, 200)
        images.append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    return images


@pytest.fixture(scope="module")
def sam_models(tiny_models) -> ModelsConfig:
    masker = dataclasses.replace(tiny_models.masker, kind="sam",
                                 sam=dataclasses.replace(tiny_models.masker.sam, points_per_side=4,
                                                         pred_iou_thresh=0.0, stability_score_thresh=0.0))
    return dataclasses.replace(tiny_models, masker=masker)


def _fields(items):
    return [(item["rles"], item["areas"].tolist(), item["bboxes"].tolist(), item["keep"].tolist()) for item in items]


def test_sam_mask_step_batched_equals_one_image_at_a_time(sam_models):
    handler = MaskerModelHandler(sam_models, max_batch_size=3)
    masker = handler.load_model()
    items = [{"uri": f"/img{i}.png", "image": image, "failure": None} for i, image in enumerate(_images(3))]
    calls = []
    real = masker.generator.generate_batch
    masker.generator.generate_batch = lambda images: (calls.append(len(images)), real(images))[1]
    batched = list(handler.run_inference(items, masker))
    singles = [item for one in items for item in handler.run_inference([one], masker)]
    assert calls == [3, 1, 1, 1]  # one batched call for the 3 images, then one per image
    assert _fields(batched) == _fields(singles)
    assert all(len(item["rles"]) > 0 for item in batched)


def test_a_sam_batch_with_a_bad_image_falls_back_to_one_image_at_a_time(sam_models):
    handler = MaskerModelHandler(sam_models, max_batch_size=3, retry=RetryPolicy(3, 0.0, 0.0))
    masker = handler.load_model()
    good = _images(2)
    items = [{"uri": "/a.png", "image": good[0], "failure": None},
             {"uri": "/grey.png", "image": np.zeros((8, 8), np.uint8), "failure": None},  # not RGB: the batch fails
             {"uri": "/b.png", "image": good[1], "failure": None}]
    out = list(handler.run_inference(items, masker))
    assert [item["failure"] is None for item in out] == [True, False, True]
    assert out[1]["failure"]["stage"] == "mask" and out[1]["failure"]["kind"] == "bug"
    alone = list(handler.run_inference([items[2]], masker))
    assert _fields([out[2]]) == _fields(alone)
