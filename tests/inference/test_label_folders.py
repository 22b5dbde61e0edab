"""`reme label` on a nested folder: outputs mirror the inputs' paths with verbatim stems at each input's own size,
colliding stems keep their extension, unusable names are refused with a reason, a re-run skips what one listing of
OUTPUT shows done, and no file is checked image by image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline import cli
from refset import storage
from tests.inference.scenes import CLASSES, make_scenes, read_scene

WORKING = 48  # --max_side: every input below is larger, so every label map is upsampled


def _rotated_jpeg(image: np.ndarray) -> bytes:
    """The upright `image` stored as a camera does: turned, with EXIF orientation 6 to turn it back."""
    stored = Image.fromarray(np.rot90(image, k=1).copy())  # upright = stored turned 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def _write_inputs(root: Path, test: Path) -> dict[str, tuple[int, int]]:
    """Nested inputs -> {expected output name: upright (height, width)}."""
    scenes = [read_scene(test, f"img{i:03d}")[0] for i in range(4)]  # 96 x 128 each
    files = {
        "top.png": scenes[0],
        "city a/x 1.png": scenes[1],
        "city a/x 1.jpg": scenes[2],  # same stem as the PNG beside it
        "b/ü é.png": scenes[3][:60],
        "overlays/o.png": scenes[0][:, :70],  # a folder named like an output folder
    }
    expected = {"top": (96, 128), "city a/x 1.png": (96, 128), "city a/x 1.jpg": (96, 128), "b/ü é": (60, 128),
                "overlays_/o": (96, 70), "b/portrait": (128, 96)}
    for rel, image in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel, quality=95)
    (root / "b" / "portrait.jpg").write_bytes(_rotated_jpeg(np.rot90(scenes[1], k=-1).copy()))
    (root / "b" / "new\nline.png").write_bytes((root / "top.png").read_bytes())  # a control character: refused
    (root / "notes.txt").write_text("not an image")
    return expected


def _label(argv) -> int:
    return cli.main(argv)


def test_nested_folder_outputs_mirror_inputs_at_their_own_size(scene_index, tmp_path, capsys, monkeypatch):
    _, ref = scene_index
    test = make_scenes(tmp_path / "test", 4, seed=1)
    inputs = tmp_path / "in"
    expected = _write_inputs(inputs, test)
    out = tmp_path / "out"
    exists_calls = []
    real_exists = storage.exists
    monkeypatch.setattr(storage, "exists", lambda path: exists_calls.append(path) or real_exists(path))
    argv = ["label", "--index", str(ref), "--classes", ",".join(CLASSES), str(inputs), str(out), "--overlay",
            "--max_side", str(WORKING), "--max_failure_rate", "0.5"]  # 1 refused name of 7 inputs
    assert _label(argv) == 0
    printed = capsys.readouterr().out
    assert "labelled 6 images, skipped 0 already done, failed 1" in printed, printed

    for name, (height, width) in expected.items():
        with Image.open(out / f"{name}.png") as im:
            assert im.size == (width, height), name
        with Image.open(out / "overlays" / f"{name}.png") as im:
            assert im.size[1] <= 16 * len(CLASSES) + 8  # a working-size preview (legend rows at most), never full
    table = pq.read_table(out / "segments").to_pylist()  # nested folders read as one table
    by_image = {}
    for row in table:
        by_image.setdefault(Path(row["image"]).relative_to(inputs).as_posix(), set()).add(
            (row["height"], row["width"], row["source_height"], row["source_width"]))
    assert by_image["b/portrait.jpg"] == {(WORKING, 36, 128, 96)}  # upright portrait, worked on at 48 px
    assert by_image["top.png"] == {(36, WORKING, 96, 128)}
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert [(Path(f["uri"]).name, f["stage"]) for f in failures] == [("new\nline.png", "read")]
    assert "control character" in failures[0]["message"]

    # The portrait was labelled upright: the scene's horizontal bands, turned, run down its columns.
    with Image.open(out / "b" / "portrait.png") as im:
        portrait = np.asarray(im)
    columns_uniform = np.mean([len(np.unique(c)) == 1 for c in portrait.T])
    assert columns_uniform > 0.8, columns_uniform

    # No input or output is checked one by one: the only exists() calls on the run's files are on classes.json,
    # failures.parquet and the progress counts (the reference set's own files are opened by each worker).
    def run_file_checks() -> list[str]:
        ours = [p for p in exists_calls if p.startswith((str(out), str(inputs)))]
        exists_calls.clear()
        return sorted(Path(p).name for p in ours)

    expected_checks = [".tmp-progress", ".tmp-progress", "classes.json", "failures.parquet", "failures.parquet"]
    assert run_file_checks() == expected_checks
    # A re-run skips everything one listing of OUTPUT shows done, and clears what a killed write left.
    stale = out / "city a" / f"{storage.TMP_PREFIX}0123-x 1.png.png"
    stale.write_bytes(b"half a PNG")
    assert _label(argv) == 0
    assert not stale.exists()
    assert "labelled 0 images, skipped 6 already done, failed 1" in capsys.readouterr().out
    assert run_file_checks() == expected_checks
    # A lost overlay makes its image due again (with --overlay), and only that one.
    (out / "overlays" / "city a" / "x 1.jpg.png").unlink()
    assert _label(argv) == 0
    assert "labelled 1 images, skipped 5 already done" in capsys.readouterr().out


def test_an_output_folder_inside_the_input_folder_is_not_an_input(scene_index, tmp_path, capsys):
    _, ref = scene_index
    test = make_scenes(tmp_path / "photos", 2, seed=2)
    photos, out = test / "images", test / "images" / "labels"
    argv = ["label", "--index", str(ref), "--classes", ",".join(CLASSES), str(photos), str(out), "--no_progress"]
    assert _label(argv) == 0
    assert "labelled 2 images" in capsys.readouterr().out
    assert _label(argv) == 0  # its own label maps are not new inputs
    assert "labelled 0 images, skipped 2 already done, failed 0" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["img000.png", "img001.png"]
