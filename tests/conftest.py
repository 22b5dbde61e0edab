"""Shared fixtures: the tiny-random model preset (built once per session) and the real photos in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores here: keep each test process from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real (VOC, ADE20K, CamVid pairs); tests using it skip when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real test photos not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A ModelsConfig whose every model is the tiny-random preset, materialised once in a temp cache."""
    from models.config import ModelsConfig
    from models.presets import resolve_models

    cache = tmp_path_factory.mktemp("reme-cache")
    return resolve_models(ModelsConfig(preset="tiny-random", cache_dir=str(cache)))
