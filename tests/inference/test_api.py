"""The Python API (inference.api): the same label maps and segments as `reme label`, tables and searches of a
reference set, and the README's example run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from inference import Labeller, ReferenceSet
from inference.labeller import ClassListError
from models.images import ImageDecodeError
from models.rle import decode_rle
from tests.inference.label_inputs import INPUT_NAMES
from tests.inference.scenes import CLASSES

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def api(labelled_inputs):
    ref_path, inputs, out = labelled_inputs
    ref = ReferenceSet.open(ref_path, max_side=64)  # the working size the CLI run used (--max_side 64)
    return ref, Labeller(ref, list(CLASSES)), inputs, out


def _cli_rows(out: Path, uri: Path) -> list[dict]:
    return [r for r in pq.read_table(out / "segments").to_pylist() if r["image"] == str(uri)]


def _same_segments(table, rows: list[dict]) -> None:
    mine = table.to_pylist()
    assert len(mine) == len(rows) > 0
    for a, b in zip(mine, rows, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}


def test_label_maps_and_segments_equal_reme_label_for_every_input(api):
    ref, labeller, inputs, out = api
    results = labeller.label_many([inputs / name for name in INPUT_NAMES])
    for name, batched in zip(INPUT_NAMES, results, strict=True):
        png = np.asarray(Image.open(out / f"{name.rsplit('.', 1)[0]}.png"))
        one = labeller.label(inputs / name)
        assert one.label_map.dtype == png.dtype and np.array_equal(one.label_map, png), name
        assert np.array_equal(batched.label_map, png), name
        _same_segments(one.segments, _cli_rows(out, inputs / name))
        # The same image in memory: a PIL image (EXIF orientation applied as for a file) and, for PNGs, an array.
        assert np.array_equal(labeller.label(Image.open(inputs / name)).label_map, png), name
        if name.endswith(".png"):
            array = np.asarray(Image.open(inputs / name).convert("RGB"))
            assert np.array_equal(labeller.label(array).label_map, png), name


def test_result_classes_are_the_coco_regions(api):
    _, labeller, inputs, out = api
    result = labeller.label(inputs / "sub" / "mosaic.png")
    png = np.asarray(Image.open(out / "sub" / "mosaic.png"))
    classes = result.classes.to_pylist()
    assert [c["class_id"] for c in classes] == [int(c) for c in np.unique(png)]
    for c in classes:
        assert c["class_name"] == CLASSES[c["class_id"]] and c["area"] == int((png == c["class_id"]).sum())
    annotations = result.coco_annotations(image_id=7)
    assert [a["category_id"] for a in annotations] == [c["class_id"] + 1 for c in classes]
    masks = result.masks()
    assert masks.shape == (result.segments.num_rows, *result.labels.working_map.shape)
    assert masks.sum(axis=(1, 2)).tolist() == result.segments.column("area").to_pylist()


def test_reference_set_tables(api):
    ref, *_ = api
    assert ref.counts["segments_kept"] == ref.counts["indexed"] == ref.index.ntotal
    labels = ref.labels_table()
    assert labels.column_names == ["label_id", "label", "count"] and sorted(labels.column("label").to_pylist()) == \
        sorted(CLASSES)
    segments = ref.segments_table()
    assert segments.num_rows == ref.index.ntotal and "visual_embedding" not in segments.column_names
    assert sorted(segments.column("position").to_pylist()) == list(range(ref.index.ntotal))
    for row in labels.to_pylist():
        mine = ref.segments_table(label_ids=[row["label_id"]])
        assert mine.num_rows == row["count"] and set(mine.column("label").to_pylist()) == {row["label"]}
    picked = [5, 0, 17]
    at = ref.segments_at(picked)
    by_position = {r["position"]: r for r in segments.to_pylist()}
    assert at.to_pylist() == [by_position[p] for p in picked]
    # Position p's label is the one the labeller reads for FAISS row p.
    assert [by_position[p]["label_id"] for p in range(ref.index.ntotal)] == ref.position_labels.tolist()
    assert ref.labels_table().to_pandas().shape == (labels.num_rows, 3)  # pandas: the optional extra


def test_search_text_finds_each_label_by_its_own_name(api):
    ref, *_ = api
    hits = ref.search_text(list(CLASSES), k=2)
    assert hits.num_rows == 2 * len(CLASSES)
    for name in CLASSES:
        top = [r for r in hits.to_pylist() if r["query"] == name and r["rank"] == 0][0]
        assert top["label"] == name and top["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_search_image_with_a_reference_segment_finds_that_segment(scene_index, api):
    """A reference segment's own image and mask, searched at the index job's working size, retrieve it first."""
    _, ref_path = scene_index
    ref = ReferenceSet.open(ref_path)  # default working size, as the index job (its images are 96 x 128)
    row = ref.segments_table().to_pylist()[3]
    mask = decode_rle(row["mask_rle"], row["height"], row["width"])
    hits = ref.search_image(row["image_uri"], mask=mask, k=3).to_pylist()
    assert [h["query_segment"] for h in hits] == [0, 0, 0] and [h["rank"] for h in hits] == [0, 1, 2]
    assert hits[0]["segment_id"] == row["segment_id"] and hits[0]["similarity"] > 0.99
    every = ref.search_image(row["image_uri"], k=2)
    kept = ref.segment(row["image_uri"])["to_embed"]
    assert every.num_rows == 2 * len(kept) and sorted(set(every.column("query_segment").to_pylist())) == \
        list(range(len(kept)))


def test_bad_inputs_are_one_line_errors(api, tmp_path):
    ref, labeller, *_ = api
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        labeller.label(broken)
    with pytest.raises(ClassListError, match="duplicate class name"):
        Labeller(ref, ["cat", "Cat"])
    with pytest.raises(ImageDecodeError, match="uint8"):
        labeller.label(np.zeros((4, 4, 3), np.float32))


def readme_example() -> str:
    """The first ```python block of the README's "## Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(scene_index, labelled_inputs):
    """The example as written, with its two paths pointed at a reference set built here (tiny-random preset) and
    one of the images labelled above."""
    _, ref_path = scene_index
    _, inputs, _ = labelled_inputs
    code = readme_example()
    for name, value in (("REFERENCE", ref_path), ("PHOTO", inputs / "sub" / "mosaic.png")):
        code, found = re.subn(rf"^{name} = .*$", f"{name} = {str(value)!r}", code, flags=re.M)
        assert found == 1, f"the README example no longer sets {name}"
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    result = namespace["result"]
    assert result.label_map.shape == (150, 200) and printed.getvalue().strip()
