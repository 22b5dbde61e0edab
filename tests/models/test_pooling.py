import numpy as np
import pytest
import torch

from models.pooling import mask_pool, mask_weights


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_masks_at_token_resolution_equal_plain_mean_per_segment():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(6, 7, 16)).astype(np.float32)
    masks = rng.random((9, 6, 7)) > 0.5
    masks[:, 0, 0] = True  # no empty mask
    pooled = mask_pool(torch.from_numpy(tokens), masks).numpy()
    for i, m in enumerate(masks):  # explicit per-segment loop
        expected = _unit(tokens[m].mean(axis=0))
        np.testing.assert_allclose(pooled[i], expected, atol=1e-5)


def test_pixel_masks_equal_mean_of_the_token_under_each_pixel():
    """Masks at 4x the grid: pooling must equal the mean, over the mask's pixels, of the token covering each pixel."""
    rng = np.random.default_rng(2)
    h, w, d, s = 5, 4, 8, 4
    tokens = rng.normal(size=(h, w, d)).astype(np.float32)
    masks = rng.random((7, h * s, w * s)) > 0.7
    masks[3] = False
    masks[3, 9, 13] = True  # a single pixel: smaller than a token, must still be pooled
    pooled = mask_pool(torch.from_numpy(tokens)[None], torch.from_numpy(masks)).numpy()  # [1,h,w,D] accepted
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        expected = _unit(np.mean([tokens[y // s, x // s] for y, x in zip(ys, xs, strict=True)], axis=0))
        np.testing.assert_allclose(pooled[i], expected, atol=1e-5)
    np.testing.assert_allclose(pooled[3], _unit(tokens[9 // s, 13 // s]), atol=1e-5)


def test_weights_are_area_fractions_and_output_unit_norm():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, :4, :2] = True  # half of token (0,0) at a 2x2 grid
    masks[1] = True
    w = mask_weights(torch.from_numpy(masks), (2, 2))
    np.testing.assert_allclose(w[0].numpy(), [0.5, 0, 0, 0])
    np.testing.assert_allclose(w[1].numpy(), [1, 1, 1, 1])
    out = mask_pool(torch.randn(2, 2, 5), masks)
    np.testing.assert_allclose(torch.linalg.norm(out, dim=1).numpy(), 1, atol=1e-6)


def test_empty_inputs_and_bad_shapes():
    assert mask_pool(torch.randn(3, 3, 4), np.zeros((0, 9, 9), dtype=bool)).shape == (0, 4)
    with pytest.raises(ValueError):
        mask_pool(torch.randn(2, 3, 3, 4), np.ones((1, 9, 9), dtype=bool))


def test_weights_conserve_area_on_grids_that_do_not_divide_the_image():
    rng = np.random.default_rng(3)
    masks = rng.random((6, 37, 53)) > 0.8
    masks[2] = False
    masks[2, 36, 52] = True
    w = mask_weights(torch.from_numpy(masks), (7, 5))
    cell = (37 / 7) * (53 / 5)
    np.testing.assert_allclose(w.sum(1).numpy() * cell, masks.sum((1, 2)), rtol=1e-5)
    assert ((w >= 0) & (w <= 1 + 1e-6)).all()
    assert w[2].nonzero().tolist() == [[34]]  # bottom-right pixel lands in the bottom-right cell only
    full = mask_weights(torch.ones(1, 37, 53, dtype=torch.bool), (7, 5))
    np.testing.assert_allclose(full.numpy(), 1, atol=1e-5)


def test_weights_match_adaptive_average_pooling_when_cells_align():
    rng = np.random.default_rng(4)
    masks = torch.from_numpy(rng.random((5, 24, 36)) > 0.5)
    expected = torch.nn.functional.adaptive_avg_pool2d(masks.float()[:, None], (6, 4)).reshape(5, -1)
    np.testing.assert_allclose(mask_weights(masks, (6, 4)).numpy(), expected.numpy(), atol=1e-6)
