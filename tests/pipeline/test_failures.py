"""Failures in the jobs, with injected faults: transient reads are retried, a bug on one image costs that image
only (one failure row of kind `bug`), a re-run tries the failed images of committed shards again and ends with the
rows of a run that never failed, and a run over nothing but broken files exits 1 with one line (both jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.io import fileio

from pipeline import build_index
from refset import staging
from tests.reliability.helpers import base_env, build_index_argv, label_argv, run
from transforms.embed import VisualModelHandler

from .helpers import make_annotated_dataset, rows, snapshot

NUM_SHARDS = "3"


def run_job(tiny_models, output: Path, root: Path, *flags: str) -> dict:
    argv = ["--output", str(output), "--preset", "tiny-random", "--cache_dir", tiny_models.cache_dir,
            "--torch_threads", "1", "--label_source", "annotations", "--annotations", str(root), "--ignore_index",
            "0", "--num_shards", NUM_SHARDS, "--min_label_count", "2", "--retry_backoff", "0", "--no_progress",
            *flags]
    return build_index.run(argv, save_main_session=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_annotated_dataset(tmp_path_factory.mktemp("data"), n_images=12, seed=3)


@pytest.fixture(scope="module")
def clean(tiny_models, dataset, tmp_path_factory) -> Path:
    """The reference set of a run in which nothing failed."""
    output = tmp_path_factory.mktemp("clean") / "ref"
    manifest = run_job(tiny_models, output, dataset)
    assert manifest["counts"]["images_failed"] == 0 and manifest["counts"]["images_in"] == 12
    return output


def test_a_reader_that_fails_twice_per_image_then_succeeds_loses_nothing(tiny_models, dataset, clean, tmp_path,
                                                                          monkeypatch):
    reads: dict[str, int] = {}
    real_read = fileio.ReadableFile.read

    def flaky_read(self, *args, **kwargs):
        path = self.metadata.path
        reads[path] = reads.get(path, 0) + 1
        if reads[path] <= 2:
            raise OSError(f"503 Service Unavailable reading {path}")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(fileio.ReadableFile, "read", flaky_read)
    output = tmp_path / "ref"
    manifest = run_job(tiny_models, output, dataset, "--retry_attempts", "3")
    assert sorted(reads.values()) == [3] * 12  # every image: two failures, then the read that worked
    assert manifest["counts"]["images_failed"] == 0 and rows(output / "failures") == []
    assert snapshot(output) == snapshot(clean)


def test_a_bug_on_one_image_is_one_failure_and_reruns_retry_it_to_the_clean_rows(tiny_models, dataset, clean,
                                                                                 tmp_path, monkeypatch):
    bad = str(dataset / "images" / "img_005.png")
    real_apply = VisualModelHandler.apply

    def buggy_apply(self, items, encoder):
        if any(item["uri"] == bad for item in items):
            raise TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'")
        return real_apply(self, items, encoder)

    monkeypatch.setattr(VisualModelHandler, "apply", buggy_apply)
    output = tmp_path / "ref"
    manifest = run_job(tiny_models, output, dataset)
    failures = rows(output / "failures")
    assert [(f["uri"], f["stage"], f["kind"], f["error_type"]) for f in failures] == [
        (bad, "embed", "bug", "TypeError")]
    assert manifest["counts"]["images_processed"] == 11 and manifest["counts"]["failed_by_kind"] == {"bug": 1}
    segments_of = {r["image_uri"] for r in rows(output / "segments") + rows(output / "dropped")}
    assert len(segments_of) == 11 and bad not in segments_of
    assert len(staging.done_shards(str(output))) == int(NUM_SHARDS)  # committed with its shard

    # Re-run with the bug still there: only the failed image is tried again, and fails again.
    manifest = run_job(tiny_models, output, dataset)
    assert manifest["run"]["images_retried"] == 1 and manifest["run_metrics"]["images_read"] == 1
    assert [f["uri"] for f in rows(output / "failures")] == [bad]

    # Bug fixed: the same command again retries it; the output is that of a run that never failed.
    monkeypatch.setattr(VisualModelHandler, "apply", real_apply)
    manifest = run_job(tiny_models, output, dataset)
    assert manifest["run"]["images_retried"] == 1 and manifest["run_metrics"]["images_read"] == 1
    assert snapshot(output) == snapshot(clean)

    # Nothing left to retry: a further run reads no image and changes nothing.
    manifest = run_job(tiny_models, output, dataset)
    assert manifest["run"]["images_retried"] == 0 and manifest["run_metrics"].get("images_read", 0) == 0
    assert snapshot(output) == snapshot(clean)


def test_a_folder_of_broken_jpegs_exits_1_with_one_line_from_both_jobs(tiny_models, clean, tmp_path):
    images = tmp_path / "broken"
    images.mkdir()
    lines = []
    for i in range(4):
        (images / f"photo{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated JPEG " + bytes([i]))
        lines.append(f'{{"image": "photo{i}.jpg", "caption": "a cat on a mat"}}\n')
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(lines))
    env = base_env()

    index = run(build_index_argv(str(images), str(tmp_path / "ref"), str(captions), tiny_models.cache_dir,
                                 "--no_progress"), env)
    assert index.returncode == 1, index.stderr[-2000:]
    error_lines = [line for line in index.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, index.stderr[-2000:]
    assert "4 of 4 images failed" in error_lines[0] and "4 bad_input" in error_lines[0]

    label = run(label_argv(str(clean), str(images), str(tmp_path / "labels"), tiny_models.cache_dir), env)
    assert label.returncode == 1, label.stderr[-2000:]
    error_lines = [line for line in label.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1 and error_lines[0].startswith("reme label: error: 4 of 4 images failed"), \
        label.stderr[-2000:]
