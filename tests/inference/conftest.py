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


@pytest.fixture(scope="session")
def labelled_inputs(scene_index, tmp_path_factory):
    """(reference set, input folder, output) of one `reme label --format png,coco --max_side 64` run over
    tests.inference.label_inputs (scenes, a many-segment mosaic, an EXIF-rotated JPEG in a subfolder)."""
    from pipeline import cli
    from tests.inference.label_inputs import write_label_inputs
    from tests.inference.scenes import CLASSES

    _, ref = scene_index
    root = tmp_path_factory.mktemp("labelled")
    inputs = write_label_inputs(root)
    out = root / "out"
    assert cli.main(["label", "--index", str(ref), "--classes", ",".join(CLASSES), "--format", "png,coco",
                     "--max_side", "64", "--no_progress", str(inputs), str(out)]) == 0
    return ref, inputs, out
