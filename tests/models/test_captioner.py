import dataclasses

import numpy as np
import pytest
import skimage.data

from models.captioner import Captioner


def test_blip_captions_are_strings_one_per_image_and_batching_is_consistent(tiny_models):
    images = [skimage.data.astronaut()[::8, ::8].copy(), skimage.data.coffee()[::8, ::8].copy(),
              np.zeros((30, 50, 3), np.uint8)]
    cfg = dataclasses.replace(tiny_models.captioner, device="cpu", max_new_tokens=6)
    batched = Captioner(dataclasses.replace(cfg, batch_size=3)).caption(images)
    single = Captioner(dataclasses.replace(cfg, batch_size=1)).caption(images)
    assert len(batched) == 3 and all(isinstance(c, str) and c for c in batched)
    assert batched == single
    assert Captioner(cfg).caption([]) == []


def test_prompt_is_stripped_from_blip_output(tiny_models):
    image = skimage.data.chelsea()[::8, ::8].copy()
    cap = Captioner(dataclasses.replace(tiny_models.captioner, device="cpu", max_new_tokens=5, prompt="a picture of"))
    (text,) = cap.caption([image])
    assert isinstance(text, str) and not text.startswith("a picture of")
    assert cap.info["prompt"] == "a picture of"


def test_unknown_kind():
    from models.config import CaptionerConfig

    with pytest.raises(ValueError):
        Captioner(CaptionerConfig(kind="gpt"))


def test_llava_decodes_only_new_tokens_with_left_padded_batches(tiny_models):
    from pathlib import Path

    from models.config import CaptionerConfig, ModelsConfig
    from models.presets import resolve_models

    cache = str(Path(tiny_models.clip.model_id).parents[1])
    cfg = resolve_models(ModelsConfig(preset="tiny-random", cache_dir=cache,
                                      captioner=CaptionerConfig(kind="llava", max_new_tokens=5, device="cpu")))
    assert cfg.captioner.kind == "llava" and "<image>" in cfg.captioner.prompt
    images = [skimage.data.astronaut()[::8, ::8].copy(), skimage.data.coffee()[::8, ::8].copy(),
              skimage.data.chelsea()[::8, ::8].copy()]
    batched = Captioner(dataclasses.replace(cfg.captioner, batch_size=3)).caption(images)
    single = Captioner(dataclasses.replace(cfg.captioner, batch_size=1)).caption(images)
    assert batched == single and len(batched) == 3
    for text in batched:
        assert isinstance(text, str) and text
        assert "user" not in text.lower() and "assistant" not in text.lower()  # the prompt is not echoed
