"""The launcher records each model's description from its configs alone; it must equal what the loaded encoder
reports (the labeller compares the two to refuse an index built with other encoders)."""

from __future__ import annotations

import dataclasses

import pytest

from models.clip import ClipEncoder, describe_clip
from models.text import build_text_encoder, describe_text
from models.visual import VisualEncoder, describe_visual
from tests.models.test_text import _minilm_dir  # the real all-MiniLM-L6-v2, shipped on PyPI


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_visual_description_matches_the_loaded_encoder(tiny_models, kind):
    config = tiny_models.visual if kind == "dinov2" else dataclasses.replace(
        tiny_models.visual, kind="clip", model_id=tiny_models.clip.model_id)
    assert describe_visual(config) == VisualEncoder(config).info


def test_text_and_pairing_descriptions_match_the_loaded_encoders(tiny_models):
    assert describe_text(tiny_models.text) == build_text_encoder(tiny_models.text).info
    assert describe_clip(tiny_models.clip) == ClipEncoder(tiny_models.clip).info


def test_sentence_encoder_description_matches(tiny_models):
    config = dataclasses.replace(tiny_models.text, kind="sentence", model_id=_minilm_dir())
    assert describe_text(config) == build_text_encoder(config).info
