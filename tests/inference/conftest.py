"""Fixtures shared by the labelling tests."""

from __future__ import annotations

import pytest

from tests.inference.scenes import make_scenes


@pytest.fixture(scope="session")
def scene_index(tmp_path_factory, tiny_models):
    """(root, reference set) built once by the real index job from 12 annotated scenes (tiny random encoders)."""
    from pipeline.build_index import run

    root = tmp_path_factory.mktemp("scene-index")
    train = make_scenes(root / "train", 12, seed=0)
    ref = root / "ref"
    run(["--label_source", "annotations", "--annotations", str(train), "--output", str(ref),
         "--preset", "tiny-random", "--cache_dir", tiny_models.cache_dir, "--min_label_count", "1"],
        save_main_session=False)
    return root, ref
