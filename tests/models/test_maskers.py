import dataclasses

import numpy as np
import pytest
import skimage.data
from skimage.transform import resize

from models.config import FelzenszwalbConfig, MaskerConfig
from models.maskers import FelzenszwalbMasker, Segments, build_masker, order_and_limit
from models.rle import decode_masks


@pytest.fixture(scope="module")
def image():
    return (resize(skimage.data.coffee(), (120, 160), anti_aliasing=True) * 255).astype(np.uint8)


def _is_sorted(seg: Segments) -> bool:
    flat = seg.masks.reshape(len(seg), -1)
    keys = [(-int(a), int(f)) for a, f in zip(flat.sum(1), flat.argmax(1), strict=True)]
    return keys == sorted(keys)


def test_felzenszwalb_partitions_the_image(image):
    seg = build_masker(MaskerConfig(min_area=0, max_masks=0))(image)
    assert seg.masks.shape[1:] == image.shape[:2] and len(seg) > 5
    coverage = seg.masks.sum(axis=0)
    assert (coverage == 1).all()  # disjoint and covering
    assert _is_sorted(seg)
    np.testing.assert_array_equal(seg.scores, 1.0)


def test_felzenszwalb_is_deterministic_and_applies_min_area_and_max_masks(image):
    cfg = MaskerConfig(min_area=150, max_masks=7)
    a, b = build_masker(cfg)(image), build_masker(cfg)(image)
    np.testing.assert_array_equal(a.masks, b.masks)
    full = build_masker(MaskerConfig(min_area=0, max_masks=0))(image)
    big = full.areas[full.areas >= 150]
    assert len(a) == min(7, len(big))
    np.testing.assert_array_equal(a.areas, big[: len(a)])  # the largest kept, in order


def test_felzenszwalb_max_side_resizes_labels_back(image):
    masker = FelzenszwalbMasker(FelzenszwalbConfig(max_side=64, min_size=20))
    labels = masker.label_map(image)
    assert labels.shape == image.shape[:2]
    seg = masker(image)
    assert (seg.masks.sum(axis=0) == 1).all()


def test_segments_properties_and_rles():
    masks = np.zeros((2, 6, 9), dtype=bool)
    masks[0, 1:4, 2:7] = True
    masks[1, 5, 8] = True
    seg = Segments(masks, np.array([0.5, 0.9]))
    np.testing.assert_array_equal(seg.areas, [15, 1])
    np.testing.assert_array_equal(seg.bboxes, [[2, 1, 5, 3], [8, 5, 1, 1]])
    np.testing.assert_array_equal(decode_masks(seg.rles(), 6, 9), masks)
    assert seg.scores.dtype == np.float32 and len(seg) == 2


def test_order_ties_broken_by_first_pixel_row_major():
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 3, :2] = True  # area 2, first pixel (3,0)
    masks[1, 0, 2:] = True  # area 2, first pixel (0,2)
    masks[2, 1:3, 1] = True  # area 2, first pixel (1,1)
    seg = order_and_limit(masks, np.arange(3, dtype=np.float32), min_area=0)
    np.testing.assert_array_equal(seg.scores, [1, 2, 0])


def test_bad_image_and_unknown_kind():
    with pytest.raises(ValueError):
        build_masker(MaskerConfig())(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError):
        build_masker(MaskerConfig(kind="watershed"))


def test_sam_masker_returns_exactly_what_segment_anything_returns(tiny_models, image):
    """Same tiny SAM, same parameters: our masker == SamAutomaticMaskGenerator (sorted, min_area applied)."""
    from segment_anything import SamAutomaticMaskGenerator

    sam_cfg = dataclasses.replace(
        tiny_models.masker.sam, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
        box_nms_thresh=1.0, implementation="reference",
    )
    masker = build_masker(dataclasses.replace(tiny_models.masker, kind="sam", min_area=20, max_masks=0, sam=sam_cfg),
                          device="cpu")
    small = image[:64, :80].copy()
    ours = masker(small)

    params = {k: getattr(sam_cfg, k) for k in (
        "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
        "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
        "crop_n_points_downscale_factor", "min_mask_region_area")}
    records = SamAutomaticMaskGenerator(masker.model, output_mode="binary_mask", **params).generate(small)
    records = [r for r in records if r["area"] >= 20]
    records.sort(key=lambda r: (-int(r["segmentation"].sum()), int(np.flatnonzero(r["segmentation"].ravel())[0])))

    assert len(ours) == len(records) > 1
    for i, r in enumerate(records):
        np.testing.assert_array_equal(ours.masks[i], r["segmentation"])
        assert ours.scores[i] == pytest.approx(r["predicted_iou"])


def test_sam_masker_passes_every_config_parameter_to_its_generator(tiny_models, monkeypatch):
    """implementation="fast" uses models.sam_fast when it imports, with the same kwargs as the reference class."""
    import importlib.util

    from models.maskers import GENERATOR_PARAMS

    sam_cfg = dataclasses.replace(tiny_models.masker.sam, points_per_side=3, pred_iou_thresh=0.11,
                                  stability_score_thresh=0.22, box_nms_thresh=0.33, crop_nms_thresh=0.44)
    for implementation in ("fast", "reference"):
        cfg = dataclasses.replace(tiny_models.masker, kind="sam",
                                  sam=dataclasses.replace(sam_cfg, implementation=implementation))
        masker = build_masker(cfg, device="cpu")
        expected = implementation if importlib.util.find_spec("models.sam_fast") else "reference"
        assert masker.implementation == expected
        for name in set(GENERATOR_PARAMS) - {"points_per_side"}:
            assert getattr(masker.generator, name) == getattr(sam_cfg, name), name
        assert len(masker.generator.point_grids[0]) == 9
        assert masker.generator.output_mode == "binary_mask"


def test_felzenszwalb_batch_equals_one_image_at_a_time(image):
    felz = build_masker(MaskerConfig(min_area=30))
    images = [image, image[::2, ::2].copy()]
    for got, want in zip(felz.batch(images), [felz(im) for im in images], strict=True):
        np.testing.assert_array_equal(got.masks, want.masks)


def test_sam_batch_uses_generate_batch_and_orders_each_image(tiny_models, image):
    """Records from the generator's batched path become ordered, min_area-filtered Segments per image."""
    sam = build_masker(dataclasses.replace(tiny_models.masker, kind="sam", min_area=3, max_masks=0), device="cpu")

    def record(mask, iou):
        return {"segmentation": mask, "predicted_iou": iou, "area": int(mask.sum())}

    small, big, tiny = (np.zeros((6, 8), bool) for _ in range(3))
    small[0, :4] = True
    big[2:5, 2:7] = True
    tiny[5, 7] = True

    class Batched:
        def generate_batch(self, images):
            return [[record(small, 0.1), record(tiny, 0.2), record(big, 0.3)], []]

    sam.generator = Batched()
    first, second = sam.batch([np.zeros((6, 8, 3), np.uint8)] * 2)
    np.testing.assert_array_equal(first.masks, np.stack([big, small]))
    np.testing.assert_allclose(first.scores, [0.3, 0.1])
    assert len(second) == 0 and second.masks.shape == (0, 6, 8)
