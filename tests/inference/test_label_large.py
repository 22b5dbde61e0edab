"""`reme label` on users' photo sizes, in bounded memory: a 24 MP photo and a folder of mixed sizes (tiny, portrait
with EXIF rotation, panorama, 24 MP) each get a label map of their own upright size, from a process whose peak
memory stays far below the 17.9 GB one 24 MP photo used to take at full resolution."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.inference.scenes import CLASSES

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PEAK_RSS_LIMIT_MB = 2500  # the tiny-random models and Beam take ~1 GB; a full-size 24 MP run took 17.9 GB+


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: three colour bands like the test scenes, at any size, without a full-size float."""
    rng = np.random.default_rng(seed)
    small_h = 96
    small_w = max(2, round(small_h * width / height))
    bands = np.zeros((small_h, small_w, 3))
    bands[: small_h // 3] = (70, 130, 230)
    bands[small_h // 3: 2 * small_h // 3] = (40, 160, 40)
    bands[2 * small_h // 3:] = (120, 110, 100)
    bands += rng.normal(0, 6, bands.shape)
    return Image.fromarray(bands.clip(0, 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)


def jpeg(image: Image.Image, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def run_label(index: Path, inputs: Path, out: Path, cache_dir: str) -> dict:
    """`reme label` in a child process that reports its own peak resident memory (ru_maxrss) when done."""
    code = ("import json, resource, sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps({'rc': rc, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    argv = [sys.executable, "-c", code, "label", "--index", str(index), "--classes", ",".join(CLASSES),
            "--cache_dir", cache_dir, "--torch_threads", "1", "--no_progress", "--overlay", str(inputs), str(out)]
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_24_megapixel_photo_and_a_folder_of_mixed_sizes(scene_index, tiny_models, tmp_path):
    _, index = scene_index
    inputs = tmp_path / "photos"
    (inputs / "phone").mkdir(parents=True)
    (inputs / "camera").mkdir()
    # name -> (bytes, upright (height, width))
    cases = {
        "camera/DSC 0001.jpg": (jpeg(photo(6000, 4000)), (4000, 6000)),  # 24 MP
        "phone/tiny.png": (None, (12, 16)),
        "phone/portrait.jpg": (jpeg(photo(4000, 3000, 1), 6), (4000, 3000)),  # stored 4000 wide, upright 3000 wide
        "phone/panorama.jpg": (jpeg(photo(12000, 1500, 2)), (1500, 12000)),
    }
    photo(16, 12, 3).save(inputs / "phone" / "tiny.png")
    for rel, (data, _) in cases.items():
        if data is not None:
            (inputs / rel).write_bytes(data)
    out = tmp_path / "labels"
    result = run_label(index, inputs, out, tiny_models.cache_dir)
    print("peak RSS of reme label on 24 MP + mixed folder:", result)

    for rel, (_, (height, width)) in cases.items():
        name = rel.rsplit(".", 1)[0]
        with Image.open(out / f"{name}.png") as im:
            assert im.size == (width, height), (rel, im.size)
            label_map = np.asarray(im)
        assert set(np.unique(label_map)) <= set(range(len(CLASSES)))  # every pixel labelled (nearest fill)
        with Image.open(out / "overlays" / f"{name}.png") as im:
            assert max(im.size) <= 1024 + 200  # a working-size preview plus its legend column
    rows = pq.read_table(out / "segments").to_pylist()
    assert {(r["source_height"], r["source_width"]) for r in rows} == {size for _, size in cases.values()}
    assert max(max(r["height"], r["width"]) for r in rows) == 1024  # masks at the working size
    assert result["peak_rss_mb"] < PEAK_RSS_LIMIT_MB, result
