"""FastSamMaskGenerator returns exactly what segment_anything's SamAutomaticMaskGenerator returns.

A tiny SAM (segment-anything's own builder, random weights, fixed seed) with its mask hypernetworks scaled up so
that logits cross the stability offsets (+-1) and stability scores are not all zero. Reference and ours run on the
same model, image and parameters; masks must be bit-identical, in the same order, with equal boxes and areas.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.build_sam import _build_sam

from models.sam_fast import FastSamMaskGenerator


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread while these tests run (the machine's cores are shared); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    model = _build_sam(
        encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1], checkpoint=None
    ).eval()
    with torch.no_grad():  # sharper logits: stability scores spread over ~0.1..0.2 instead of all 0
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30.0)
    return model


@pytest.fixture(scope="module")
def all_candidates(sam, image):
    """The reference's output with no NMS and no thresholds: every candidate of a 4x4 grid, in its order."""
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    return SamAutomaticMaskGenerator(sam, **params).generate(image)


@pytest.fixture(scope="module")
def image():
    return np.ascontiguousarray(skimage.data.astronaut()[::4, ::3])  # 128x171, not square


def assert_same_records(ours, ref):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a["segmentation"].dtype == bool and a["segmentation"].shape == b["segmentation"].shape
        assert np.array_equal(a["segmentation"], b["segmentation"]), f"mask {i} differs"
        assert a["area"] == b["area"] and a["bbox"] == b["bbox"] and a["crop_box"] == b["crop_box"], i
        assert a["point_coords"] == b["point_coords"], i
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-6)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-6)


def test_every_candidate_matches_reference(sam, image, all_candidates):
    # No NMS (IoU never exceeds 1), no thresholds: every candidate mask of every prompt is compared, in order.
    # Ours decodes 5+5+6 prompts and post-processes 10+6; the reference decoded all 16 at once.
    params = dict(points_per_side=4, points_per_batch=10, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                  box_nms_thresh=1.0)
    ref = all_candidates
    ours = FastSamMaskGenerator(sam, **params, decoder_batch_size=4).generate(image)
    assert len(ref) == 4 * 4 * 3
    assert len({r["stability_score"] for r in ref}) > 10  # scores really vary: the comparison means something
    assert_same_records(ours, ref)


def test_reference_decoder_path_matches_too(sam, image):
    params = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    ref = SamAutomaticMaskGenerator(sam, **params).generate(image)
    ours = FastSamMaskGenerator(sam, **params, share_image_projections=False).generate(image)
    assert_same_records(ours, ref)


def test_thresholds_and_nms_match_reference(sam, image, all_candidates):
    # Thresholds that drop part of the candidates (the IoU filter runs before upscaling here, after it in the
    # reference) and the default box NMS.
    params = dict(points_per_side=4, points_per_batch=8, pred_iou_thresh=0.3, stability_score_thresh=0.14,
                  box_nms_thresh=0.95)
    ref = SamAutomaticMaskGenerator(sam, **params).generate(image)
    assert 0 < len(ref) < len(all_candidates)
    assert_same_records(FastSamMaskGenerator(sam, **params).generate(image), ref)


def test_crop_layers_and_small_region_removal_match_reference(sam):
    # A 36x40 image: every crop edge lies within the reference's 20-pixel tolerance of an image edge, so crop
    # masks (which span their crop with random weights) are not dropped as touching a crop boundary, and the
    # uncropping of masks, boxes and points, the cross-crop NMS and the small-region clean-up are all compared.
    image = np.ascontiguousarray(skimage.data.astronaut()[::12, ::12][:36, :40])
    params = dict(points_per_side=2, crop_n_layers=1, crop_n_points_downscale_factor=2, pred_iou_thresh=0.0,
                  stability_score_thresh=0.0, box_nms_thresh=0.9, min_mask_region_area=10)
    ref = SamAutomaticMaskGenerator(sam, **params).generate(image)
    assert len({tuple(r["crop_box"]) for r in ref}) > 1  # masks from the crops survived, not only the full image
    assert_same_records(FastSamMaskGenerator(sam, **params).generate(image), ref)


@pytest.mark.parametrize("mode", ["coco_rle", "uncompressed_rle"])
def test_rle_output_modes_match_reference(sam, image, mode):
    params = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                  output_mode=mode)
    ref = SamAutomaticMaskGenerator(sam, **params).generate(image)
    ours = FastSamMaskGenerator(sam, **params).generate(image)
    assert [r["segmentation"] for r in ours] == [r["segmentation"] for r in ref]
    assert [r["bbox"] for r in ours] == [r["bbox"] for r in ref]


def test_generate_batch_equals_per_image_generate(sam, image):
    other = np.ascontiguousarray(skimage.data.coffee()[::5, ::5])  # 80x120: a different size in the same batch
    gen = FastSamMaskGenerator(sam, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                               box_nms_thresh=1.0, encoder_batch_size=2)
    batched = gen.generate_batch([image, other])
    assert len(batched) == 2
    assert_same_records(batched[0], gen.generate(image))
    assert_same_records(batched[1], gen.generate(other))
    assert batched[1][0]["segmentation"].shape == other.shape[:2]


def test_everything_filtered_gives_no_records(sam, image):
    assert FastSamMaskGenerator(sam, points_per_side=2, pred_iou_thresh=0.99).generate(image) == []


def test_bad_arguments_are_refused(sam, image):
    with pytest.raises(ValueError, match="points_per_side or point_grids"):
        FastSamMaskGenerator(sam, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        FastSamMaskGenerator(sam, output_mode="png")
    with pytest.raises(ValueError, match="autocast_dtype"):
        FastSamMaskGenerator(sam, autocast_dtype="int8")
    with pytest.raises(ValueError, match="HxWx3"):
        FastSamMaskGenerator(sam, points_per_side=2).generate(image[..., 0])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        FastSamMaskGenerator(sam, points_per_side=2).generate(image.astype(np.float32))


@pytest.mark.parametrize("n_points, points_per_batch, decoder_batch_size", [
    (1024, 64, 4), (9, 64, 4), (5, 64, 4), (16, 10, 4), (100, 64, 256), (130, 64, 128), (3, 2, 1),
])
def test_decoder_plan_covers_reference_batches_with_pieces_of_at_least_four(sam, n_points, points_per_batch,
                                                                           decoder_batch_size):
    gen = FastSamMaskGenerator(sam, points_per_side=2, points_per_batch=points_per_batch,
                               decoder_batch_size=decoder_batch_size)
    plan = gen._decoder_plan(n_points)
    chunks = [c for chunk_group, _ in plan for c in chunk_group]
    assert chunks == [(a, min(a + points_per_batch, n_points)) for a in range(0, n_points, points_per_batch)]
    for chunk_group, pieces in plan:
        assert pieces[0][0] == chunk_group[0][0] and pieces[-1][1] == chunk_group[-1][1]
        assert all(b == c for (_, b), (c, _) in zip(pieces[:-1], pieces[1:], strict=True))  # contiguous, in order
        span = chunk_group[-1][1] - chunk_group[0][0]
        assert all(b - a >= min(4, span) for a, b in pieces)
        assert all(b - a <= max(decoder_batch_size, 7) for a, b in pieces)  # 7: n // 4 pieces of n prompts
