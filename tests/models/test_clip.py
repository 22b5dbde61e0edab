import dataclasses

import numpy as np
import pytest
import skimage.data

from models.clip import ClipEncoder
from models.visual import masked_crop


@pytest.fixture(scope="module")
def data():
    a = skimage.data.astronaut()[::4, ::4].copy()
    c = skimage.data.coffee()[::4, ::4].copy()
    ma = np.zeros((3,) + a.shape[:2], bool)
    ma[0, 10:60, 20:90] = True
    ma[1, 70:, :40] = True
    ma[2, 5:8, 5:8] = True
    mc = np.zeros((1,) + c.shape[:2], bool)
    mc[0, 30:90, 40:120] = True
    return [a, c], [ma, mc]


def test_masked_crops_batched_across_images_equal_one_by_one(tiny_models, data):
    images, masks = data
    enc = ClipEncoder(dataclasses.replace(tiny_models.clip, device="cpu", batch_size=3))
    out = enc.embed_segments(images, masks)
    assert [o.shape for o in out] == [(3, enc.dim), (1, enc.dim)]
    for o in out:
        np.testing.assert_allclose(np.linalg.norm(o, axis=1), 1, atol=1e-5)
    # The same crops embedded one at a time.
    for image, m, o in zip(images, masks, out, strict=True):
        for i, mask in enumerate(m):
            crop = masked_crop(image, mask, enc.fill, enc.config.crop_padding)
            np.testing.assert_allclose(enc.embed_crops([crop])[0], o[i], atol=1e-5)


def test_outside_mask_pixels_do_not_matter(tiny_models, data):
    images, masks = data
    enc = ClipEncoder(dataclasses.replace(tiny_models.clip, device="cpu"))
    noisy = images[0].copy()
    noisy[~masks[0][0]] = np.random.default_rng(0).integers(0, 255, size=(int((~masks[0][0]).sum()), 3))
    a = enc.embed_segments([images[0]], [masks[0][:1]])[0]
    b = enc.embed_segments([noisy], [masks[0][:1]])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_pooled_dense_mode_and_info(tiny_models, data):
    images, masks = data
    enc = ClipEncoder(dataclasses.replace(tiny_models.clip, device="cpu", crop_mode="pooled_dense"))
    out = enc.embed_segments(images, masks)
    assert [o.shape for o in out] == [(3, enc.dim), (1, enc.dim)]
    assert enc.info["crop_mode"] == "pooled_dense" and enc.info["dim"] == enc.dim
    with pytest.raises(ValueError):
        ClipEncoder(dataclasses.replace(tiny_models.clip, crop_mode="boxes"))
