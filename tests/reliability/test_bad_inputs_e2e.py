"""Both commands over the bad-input matrix: exit 0, every input accounted for exactly once, every bad file in
failures with its stage and reason, every good-but-odd file processed at its true (upright) size."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from models.rle import decode_rle
from tests.reliability.helpers import read_dir_rows, temp_leftovers


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def test_index_job_accounts_for_every_bad_input(matrix, matrix_index):
    assert matrix_index.returncode == 0, matrix_index.stderr[-3000:]
    out = matrix_index.output
    segments = read_dir_rows(out / "segments")
    dropped = read_dir_rows(out / "dropped")
    failures = read_dir_rows(out / "failures")

    failed = {_name(r["uri"]): r for r in failures}
    assert len(failed) == len(failures), "an input failed twice"
    with_rows = {_name(r["image_uri"]) for r in segments + dropped}
    inputs = {c.name for c in matrix.cases}

    # inputs = (written or dropped) + failed, with no overlap and nothing unknown
    assert with_rows | set(failed) == inputs
    assert not with_rows & set(failed)
    for case in matrix.cases:
        if case.processed:
            assert case.name in with_rows, f"{case.name} vanished"
        else:
            row = failed.get(case.name)
            assert row is not None, f"{case.name} should be in failures"
            assert row["stage"] == case.stage, (case.name, row)
            assert re.search(case.reason, row["message"], re.IGNORECASE), (case.name, row["message"])
            assert row["error_type"] and "\n" not in row["message"]
            assert row["kind"] == "bad_input", (case.name, row)  # unusable files: nothing to retry

    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["images_in"] == len(inputs)
    assert counts["images_failed"] == sum(not c.processed for c in matrix.cases)
    assert counts["images_processed"] + counts["images_failed"] == counts["images_in"]
    assert counts["segments_kept"] == len(segments) and counts["dropped"] == len(dropped)
    assert temp_leftovers(out) == []


def test_index_rows_carry_the_upright_image_size(matrix, matrix_index):
    """Width/height recorded per segment are the decoded, EXIF-rotated size (masks are stored at that size)."""
    rows = read_dir_rows(matrix_index.output / "segments") + read_dir_rows(matrix_index.output / "dropped")
    for case in (c for c in matrix.cases if c.processed):
        sizes = {(r["height"], r["width"]) for r in rows if _name(r["image_uri"]) == case.name}
        assert sizes == {case.shape}, (case.name, sizes)
    exif_masks = [decode_rle(r["mask_rle"], r["height"], r["width"]) for r in rows
                  if _name(r["image_uri"]) == "exif-rotated.jpg"]
    _assert_split_top_bottom(exif_masks)


def _assert_split_top_bottom(masks) -> None:
    """Upright, the EXIF case is red on top and blue below: some segment must be (mostly) the top half and none may
    straddle the boundary the way a sideways (unrotated) image's left/right split would."""
    assert masks, "no segments for the EXIF-rotated image"
    tops = []
    for m in masks:
        m = np.asarray(m, dtype=bool)
        assert m.shape == (64, 32), m.shape
        top, bottom = m[:32].mean(), m[32:].mean()
        left, right = m[:, :16].mean(), m[:, 16:].mean()
        tops.append(top > 0.8 and bottom < 0.2)
        assert not (left > 0.8 and right < 0.2 and abs(top - bottom) < 0.2), "segment follows the sideways image"
    assert any(tops), "no segment covers the red top half"


def test_label_job_accounts_for_every_bad_input(matrix, matrix_labels):
    assert matrix_labels.returncode == 0, matrix_labels.stderr[-3000:]
    out = matrix_labels.output
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    failed = {_name(r["uri"]): r for r in failures}
    for case in (c for c in matrix.cases if not c.processed):
        row = failed.get(case.name)
        assert row is not None, f"{case.name} should be in failures"
        assert row["stage"] == case.stage and re.search(case.reason, row["message"], re.IGNORECASE), row
        assert row["kind"] == "bad_input", row

    segments = pq.read_table(out / "segments").to_pylist()
    labelled = {}
    for row in segments:
        labelled.setdefault(_name(row["image"]), set()).add((row["height"], row["width"]))
    maps = sorted(p for p in out.glob("*.png"))
    processed = [c for c in matrix.cases if c.processed]
    # inputs = written + failed; one label map per processed input, none overwritten by another's
    assert len(failed) + len(processed) == len(matrix.cases)
    assert set(failed).isdisjoint(c.name for c in processed)
    assert len(maps) == len(processed), (
        f"{len(processed)} processed inputs but {len(maps)} label maps: {[p.name for p in maps]}")
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == len(processed)
    assert temp_leftovers(out) == []


def test_label_maps_have_the_upright_input_size(matrix, matrix_labels):
    """Each processed input's segment table names it, and its label map has the input's upright size (the EXIF
    image is labelled portrait, with its segments split top/bottom)."""
    out = matrix_labels.output
    segments = pq.read_table(out / "segments").to_pylist()
    sizes_by_input = {}
    for row in segments:
        sizes_by_input.setdefault(_name(row["image"]), set()).add((row["height"], row["width"]))
    for case in (c for c in matrix.cases if c.processed):
        if case.shape == (1, 1):
            continue  # a 1x1 image may have no segment at all (below min_area); its map is checked below
        assert sizes_by_input.get(case.name) == {case.shape}, (case.name, sizes_by_input.get(case.name))
    exif = [r for r in segments if _name(r["image"]) == "exif-rotated.jpg"]
    _assert_split_top_bottom([decode_rle(r["mask_rle"], r["height"], r["width"]) for r in exif])
    map_shapes = sorted(np.asarray(Image.open(p)).shape for p in out.glob("*.png"))
    assert map_shapes.count((64, 32)) == 1 and (1, 1) in map_shapes
