"""GCS for real: `build_index` and `reme label` with gs:// input and output against the GCS emulator on 127.0.0.1.

Inputs are listed and read through Beam's GCS filesystem (google-cloud-storage), outputs are written through
gcsfs (refset.storage); the results must match the same commands run on local disk, and both accountings hold.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.reliability.helpers import assert_rows_match, base_env, build_index_argv, label_argv, run
from tests.support.gcs import gcs_emulator, gcs_prefix  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.slow
BUDGET = ("--max_failure_rate", "1")  # the bad-input matrix is mostly bad files, by design


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def _located(rows: list[dict]) -> list[dict]:
    """Rows with their location-dependent parts (URI, and the segment id and label id that follow from it)
    reduced to the file name."""
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in ("segment_id", "label_id")}
        for key in ("image_uri", "uri", "image"):
            if key in row:
                row[key] = _name(row[key])
        out.append(row)
    return out


def _per_image_count(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[_name(row["image_uri"])] = counts.get(_name(row["image_uri"]), 0) + 1
    return counts


def _candidates(ref) -> list[tuple]:
    rows = pq.read_table(ref / "segments").to_pylist() + pq.read_table(ref / "dropped").to_pylist()
    return sorted((_name(r["image_uri"]), r["mask_rle"], r["label"] or "") for r in rows)


def _maps_by_input(out) -> dict[str, np.ndarray]:
    """Label maps keyed by the input file they label (output names may carry a location-dependent hash)."""
    maps = {}
    for label_map in out.glob("*.png"):
        table = out / "segments" / (label_map.stem + ".parquet")
        images = {_name(r["image"]) for r in pq.read_table(table).to_pylist()} if table.exists() else set()
        key = images.pop() if len(images) == 1 else label_map.name
        assert key not in maps, f"two label maps for {key}"
        maps[key] = np.asarray(Image.open(label_map))
    return maps


@pytest.fixture(scope="module")
def gcs_runs(gcs_emulator, matrix, cache_dir, tmp_path_factory):  # noqa: F811
    fs = gcs_emulator.gcsfs()
    base = gcs_emulator.url("e2e")
    for case in matrix.cases:
        fs.pipe_file(f"{base}/images/{case.name}", (matrix.images / case.name).read_bytes())
    fs.pipe_file(f"{base}/captions.jsonl", matrix.captions.read_bytes())
    env = base_env(gcs_emulator.env)

    index = run(build_index_argv(f"{base}/images", f"{base}/ref", f"{base}/captions.jsonl", cache_dir,
                                 *BUDGET), env=env)
    labels = run(label_argv(f"{base}/ref", f"{base}/images", f"{base}/labels", cache_dir, "--overlay", *BUDGET),
                 env=env)
    local = tmp_path_factory.mktemp("from-gcs")
    fs.get(f"{base}/ref", str(local / "ref"), recursive=True)
    fs.get(f"{base}/labels", str(local / "labels"), recursive=True)
    leftovers = [p for p in fs.find(base) if _name(p).startswith(".tmp")]
    # The same labelling on local disk with the very index built on GCS: the label maps must be identical.
    local_labels = run(label_argv(str(local / "ref"), str(matrix.images), str(local / "local-labels"), cache_dir,
                                  "--overlay", *BUDGET))
    assert local_labels.returncode == 0, local_labels.stderr[-3000:]
    return index, labels, local / "ref", local / "labels", leftovers


def test_index_build_on_gcs_matches_local(gcs_runs, matrix, matrix_index):
    index, _, ref, _, leftovers = gcs_runs
    assert index.returncode == 0, index.stderr[-3000:]
    assert leftovers == []
    assert matrix_index.returncode == 0
    local = matrix_index.output
    assert_rows_match(_located(pq.read_table(ref / "failures").to_pylist()),
                      _located(pq.read_table(local / "failures").to_pylist()), "failures")
    # Same candidate pairs per image, split the same way between kept and dropped. Which of two exact-duplicate
    # segments is kept follows segment ids, which hash the URI, so it may differ between locations.
    for table in ("segments", "dropped"):
        gcs_rows, local_rows = (pq.read_table(x / table).to_pylist() for x in (ref, local))
        assert _per_image_count(gcs_rows) == _per_image_count(local_rows), table
    assert _candidates(ref) == _candidates(local)
    failures = pq.read_table(ref / "failures").to_pylist()
    assert all(r["uri"].startswith("gs://") for r in failures)
    assert {_name(r["uri"]) for r in failures} == {c.name for c in matrix.cases if not c.processed}
    gcs_counts = json.loads((ref / "manifest.json").read_text())["counts"]
    assert gcs_counts == json.loads((local / "manifest.json").read_text())["counts"]
    assert (ref / "index" / "segments.faiss").stat().st_size > 0


def test_labelling_on_gcs_matches_local(gcs_runs, matrix):
    _, result, ref, out, leftovers = gcs_runs
    assert result.returncode == 0, result.stderr[-3000:]
    assert leftovers == []
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    for case in (c for c in matrix.cases if not c.processed):
        row = next((r for r in failures if _name(r["uri"]) == case.name), None)
        assert row is not None and row["stage"] == case.stage, (case.name, row)
        assert re.search(case.reason, row["message"], re.IGNORECASE)
    local_out = ref.parent / "local-labels"
    gcs_maps, local_maps = _maps_by_input(out), _maps_by_input(local_out)
    assert sorted(gcs_maps) == sorted(local_maps)
    assert len(gcs_maps) == sum(c.processed for c in matrix.cases)
    for name in gcs_maps:
        assert (gcs_maps[name] == local_maps[name]).all(), name
    assert json.loads((out / "classes.json").read_text()) == json.loads((local_out / "classes.json").read_text())


def test_gcs_rerun_skips_everything(gcs_emulator, gcs_runs, matrix, cache_dir):  # noqa: F811
    """A second `reme label` into the same gs:// output finds every map done (listing through gcsfs works)."""
    base = gcs_emulator.url("e2e")
    result = run(label_argv(f"{base}/ref", f"{base}/images", f"{base}/labels", cache_dir, "--overlay", *BUDGET),
                 env=base_env(gcs_emulator.env))
    assert result.returncode == 0, result.stderr[-3000:]
    processed = sum(c.processed for c in matrix.cases)
    assert re.search(rf"skipped {processed} ", result.stdout), result.stdout


def test_output_in_a_missing_bucket_is_refused_with_one_line(gcs_emulator, matrix, matrix_index, cache_dir):  # noqa: F811
    from tests.reliability.helpers import one_line_error

    result = run(label_argv(str(matrix_index.output), str(matrix.images), "gs://reme-no-such-bucket/labels",
                            cache_dir), env=base_env(gcs_emulator.env))
    assert result.returncode != 0
    assert re.search(r"bucket|writable|not found", one_line_error(result.stderr), re.IGNORECASE)
    assert not gcs_emulator.gcsfs().exists("reme-no-such-bucket")


def test_captions_written_to_gcs_are_read_back(gcs_emulator, gcs_prefix, matrix):  # noqa: F811
    """The captions reader goes through storage: the same captions from gs:// and from disk."""
    from transforms.captions import read_captions

    gcs_emulator.gcsfs().pipe_file(f"{gcs_prefix}/c.jsonl", matrix.captions.read_bytes())
    assert read_captions(f"{gcs_prefix}/c.jsonl") == read_captions(str(matrix.captions))
