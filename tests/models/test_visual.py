import dataclasses

import numpy as np
import pytest
import skimage.data
import torch
from skimage.transform import resize

from models.config import FelzenszwalbConfig
from models.maskers import FelzenszwalbMasker
from models.pooling import mask_pool
from models.visual import VisualEncoder, masked_crop


def _img(fn, shape):
    return (resize(fn(), shape, anti_aliasing=True) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images_and_masks():
    images = [_img(skimage.data.astronaut, (96, 96)), _img(skimage.data.coffee, (80, 120)),
              _img(skimage.data.chelsea, (70, 90))]
    masker = FelzenszwalbMasker(FelzenszwalbConfig(min_size=30), min_area=10)
    return images, [masker(im).masks for im in images]


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_batched_equals_unbatched(tiny_models, images_and_masks, kind):
    images, masks = images_and_masks
    model_id = tiny_models.visual.model_id if kind == "dinov2" else tiny_models.clip.model_id
    cfg = dataclasses.replace(tiny_models.visual, kind=kind, model_id=model_id, device="cpu", batch_size=3)
    batched = VisualEncoder(cfg).embed_segments(images, masks)
    single = VisualEncoder(dataclasses.replace(cfg, batch_size=1)).embed_segments(images, masks)
    for b, s, m in zip(batched, single, masks, strict=True):
        assert b.shape == (len(m), VisualEncoder(cfg).dim) and b.dtype == np.float32
        np.testing.assert_allclose(b, s, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)


def test_pooled_embeddings_are_mask_pooled_patch_tokens(tiny_models, images_and_masks):
    images, masks = images_and_masks
    enc = VisualEncoder(dataclasses.replace(tiny_models.visual, device="cpu"))
    tokens = enc.patch_tokens(images[:1])
    assert tokens.shape == (1, enc.grid, enc.grid, enc.dim)
    assert enc.grid * enc.patch_size == enc.image_size
    expected = mask_pool(tokens[0], masks[0]).numpy()
    np.testing.assert_allclose(enc.embed_segments(images[:1], masks[:1])[0], expected, atol=1e-6)
    # Different segments of a real photo get different embeddings.
    emb = enc.embed_segments(images[:1], masks[:1])[0]
    assert (emb @ emb.T)[np.triu_indices(len(emb), 1)].min() < 0.999


def test_image_size_is_rounded_to_the_patch_grid_and_info(tiny_models):
    enc = VisualEncoder(dataclasses.replace(tiny_models.visual, image_size=70, device="cpu"))
    assert enc.image_size % enc.patch_size == 0 and abs(enc.image_size - 70) <= enc.patch_size // 2
    info = enc.info
    assert {"model_id", "revision", "kind", "dim"} <= info.keys() and info["dim"] == enc.dim


def test_embed_crops_shapes_unit_norm_and_fill(tiny_models, images_and_masks):
    images, masks = images_and_masks
    enc = VisualEncoder(dataclasses.replace(tiny_models.visual, device="cpu"))
    out = enc.embed_crops(images[0], masks[0][:5])
    assert out.shape == (5, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)

    image = np.full((10, 20, 3), 200, np.uint8)
    mask = np.zeros((10, 20), bool)
    mask[2:4, 5:15] = True
    crop = masked_crop(image, mask, np.array([1, 2, 3]), padding=0.0)
    assert crop.shape == (10, 10, 3)  # squared around the 2x10 box, beyond-image area filled
    assert (crop[4:6] == 200).all() and (crop[0] == [1, 2, 3]).all()


def test_mismatched_lengths_and_bad_kind(tiny_models):
    enc = VisualEncoder(dataclasses.replace(tiny_models.visual, device="cpu"))
    with pytest.raises(ValueError):
        enc.embed_segments([np.zeros((8, 8, 3), np.uint8)], [])
    with pytest.raises(ValueError):
        VisualEncoder(dataclasses.replace(tiny_models.visual, kind="resnet"))
    with pytest.raises(ValueError, match="is a clip model"):
        VisualEncoder(dataclasses.replace(tiny_models.visual, kind="dinov2", model_id=tiny_models.clip.model_id))


def test_clip_tokens_at_a_larger_input_interpolate_position_embeddings(tiny_models, images_and_masks):
    images, masks = images_and_masks
    cfg = dataclasses.replace(tiny_models.visual, kind="clip", model_id=tiny_models.clip.model_id, image_size=96,
                              device="cpu")
    enc = VisualEncoder(cfg)
    assert enc.image_size == 96 and enc.grid == 6  # the tiny CLIP was built for 64 px (4x4 patches of 16)
    assert enc.patch_tokens(images[:1]).shape == (1, 6, 6, enc.dim)
    assert enc.embed_segments(images[:1], masks[:1])[0].shape == (len(masks[0]), enc.dim)


def test_dinov2_with_registers_skips_register_tokens(tmp_path):
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    from models.config import VisualEncoderConfig
    from models.visual import to_pixels

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                       image_size=32, patch_size=8, num_register_tokens=4)
    Dinov2WithRegistersModel(config).save_pretrained(tmp_path)
    BitImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path)

    enc = VisualEncoder(VisualEncoderConfig(kind="dinov2", model_id=str(tmp_path), image_size=32, device="cpu"))
    assert enc.num_prefix == 5 and enc.grid == 4
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    hidden = enc._forward(to_pixels([image], 32, enc.mean, enc.std, enc.device)).last_hidden_state
    assert hidden.shape[1] == 1 + 4 + 16  # CLS, registers, patches
    np.testing.assert_allclose(enc.patch_tokens([image]).reshape(16, -1).numpy(), hidden[0, 5:].numpy(), atol=1e-5)
