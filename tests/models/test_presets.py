"""The tiny-random preset: a token grid fine enough for small objects, and no model setting silently ignored.

Every setting of ModelsConfig, changed from its default, must either survive `resolve_models` unchanged or be
named by `preset_conflicts` (and then refused by both launchers with one line).
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from models.config import ModelsConfig, TextEncoderConfig, VisualEncoderConfig
from models.presets import preset_conflicts, preset_refusal, resolve_models
from models.visual import VisualEncoder


def _cache(tiny_models) -> str:
    return tiny_models.cache_dir


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_default_image_size_gives_at_least_a_28x28_grid(tiny_models, kind):
    cfg = resolve_models(ModelsConfig(preset="tiny-random", cache_dir=_cache(tiny_models),
                                      visual=VisualEncoderConfig(kind=kind, device="cpu")))
    assert cfg.visual.image_size == VisualEncoderConfig.image_size == 448
    enc = VisualEncoder(cfg.visual)
    assert enc.grid >= 28
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    assert enc.patch_tokens([image]).shape[1:3] == (enc.grid, enc.grid)
    # A 2% object of a 192x256 image (about 31x31 px) spans several tokens, not a fraction of one.
    assert 31 / 256 * enc.grid >= 3


def test_visual_image_size_is_honoured(tiny_models):
    cfg = resolve_models(ModelsConfig(preset="tiny-random", cache_dir=_cache(tiny_models),
                                      visual=VisualEncoderConfig(image_size=224, device="cpu")))
    assert cfg.visual.image_size == 224
    enc = VisualEncoder(cfg.visual)
    assert enc.image_size == 224 and enc.grid == 224 // enc.patch_size


def _other_value(cfg_cls, name: str, value):
    """A valid value other than `value` for field `name` of dataclass `cfg_cls`."""
    hint = typing.get_type_hints(cfg_cls)[name]
    if typing.get_origin(hint) is typing.Literal:
        return next(v for v in typing.get_args(hint) if v != value)
    if name == "kind":  # plain-str kinds with a fixed set of values
        return {"felzenszwalb": "sam", "dinov2": "clip", "clip": "sentence", "blip": "llava"}[value]
    if name == "model_type":
        return "vit_h"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, tuple):
        return value + ("a picture of a {}.",)
    if name == "device":
        return "cpu"
    return "custom/value"  # str or None: model ids, revisions, checkpoints, prompts, cache dirs


def _leaf_settings(obj, path=()):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_settings(value, path + (f.name,))
        else:
            yield path + (f.name,), type(obj), f.name, value


def _replace(obj, path, value):
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace(getattr(obj, path[0]), path[1:], value)})


def _get(obj, path):
    for p in path:
        obj = getattr(obj, p)
    return obj


def test_every_setting_is_honoured_or_named_as_a_conflict(tiny_models):
    base = ModelsConfig(preset="tiny-random", cache_dir=_cache(tiny_models))
    assert preset_conflicts(base) == []
    checked = 0
    for path, cls, name, value in _leaf_settings(base):
        if path in (("preset",), ("cache_dir",)):
            continue
        changed = _replace(base, path, _other_value(cls, name, value))
        conflicts = preset_conflicts(changed)
        if conflicts:
            assert preset_refusal(changed) and "\n" not in preset_refusal(changed)
            continue
        resolved = resolve_models(changed)
        assert _get(resolved, path) == _get(changed, path), f"{'.'.join(path)} silently replaced by the preset"
        checked += 1
    assert checked > 30  # most settings are honoured, only model identities conflict


@pytest.mark.parametrize("change, flag", [
    (lambda c: dataclasses.replace(c, visual=dataclasses.replace(c.visual, model_id="facebook/dinov2-large")),
     "--visual_model facebook/dinov2-large"),
    (lambda c: dataclasses.replace(c, clip=dataclasses.replace(c.clip, model_id="openai/clip-vit-large-patch14")),
     "--clip_model openai/clip-vit-large-patch14"),
    (lambda c: dataclasses.replace(c, text=TextEncoderConfig(kind="sentence", model_id="sentence-transformers/x")),
     "--text_model sentence-transformers/x"),
    (lambda c: dataclasses.replace(c, masker=dataclasses.replace(
        c.masker, sam=dataclasses.replace(c.masker.sam, checkpoint="/w/sam_vit_h.pth"))), "--sam_checkpoint"),
    (lambda c: dataclasses.replace(c, masker=dataclasses.replace(
        c.masker, sam=dataclasses.replace(c.masker.sam, model_type="vit_h"))), "--sam_model_type vit_h"),
    (lambda c: dataclasses.replace(c, captioner=dataclasses.replace(c.captioner, model_id="llava-hf/llava-1.5-7b-hf")),
     "--captioner_model llava-hf/llava-1.5-7b-hf"),
])
def test_model_identities_conflict_with_the_preset(change, flag):
    cfg = change(ModelsConfig(preset="tiny-random"))
    assert any(flag in c for c in preset_conflicts(cfg))
    line = preset_refusal(cfg)
    assert flag in line and "tiny-random" in line and "\n" not in line
    assert preset_conflicts(dataclasses.replace(cfg, preset="default")) == []


def test_a_resolved_config_and_a_local_sentence_encoder_are_no_conflicts(tiny_models, tmp_path):
    assert preset_conflicts(tiny_models) == []  # resolving twice is harmless
    local = ModelsConfig(preset="tiny-random", text=TextEncoderConfig(kind="sentence", model_id=str(tmp_path)))
    assert preset_conflicts(local) == []
    assert "unknown models preset" in preset_refusal(ModelsConfig(preset="huge-random"))


def test_index_job_refuses_a_conflicting_flag_before_any_work(capsys):
    from pipeline import build_index

    with pytest.raises(SystemExit) as exit_info:
        build_index.parse(["--input", "x", "--output", "o", "--captions", "c", "--preset", "tiny-random",
                           "--visual_model", "facebook/dinov2-large"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--visual_model facebook/dinov2-large" in errors[0]
    # The same run with the image size changed is accepted: that setting is honoured.
    config, _ = build_index.parse(["--input", "x", "--output", "o", "--captions", "c", "--preset", "tiny-random",
                                   "--visual_image_size", "224"])
    assert config.models.visual.image_size == 224


def test_label_job_refuses_a_conflicting_override():
    from pipeline.command import UsageError
    from pipeline.config import ModelChoices
    from pipeline.label_job import resolve_label_models

    class Ref:  # what resolve_label_models reads of a reference set
        root = "/refs/r"

        def models_config(self):
            return ModelsConfig(preset="tiny-random")

    assert resolve_label_models(Ref(), ModelChoices()).preset == "tiny-random"
    with pytest.raises(UsageError) as err:
        resolve_label_models(Ref(), ModelChoices(visual_model="facebook/dinov2-large"))
    assert "--visual_model facebook/dinov2-large" in str(err.value) and "\n" not in str(err.value)
