"""An interrupted run resumes to exactly the rows of an uninterrupted one, without redoing committed shards."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline import build_index
from pipeline.command import UsageError
from refset import staging

from .helpers import make_annotated_dataset, make_captions, snapshot


def run_job(tiny_models, output, root, *flags, source="annotations"):
    labels = (["--label_source", "annotations", "--annotations", str(root), "--ignore_index", "0"]
              if source == "annotations" else
              ["--input", str(root / "images"), "--captions", str(root / "captions.jsonl"), "--max_side", "48"])
    argv = ["--output", str(output), "--preset", "tiny-random", "--cache_dir", tiny_models.cache_dir, *labels,
            "--min_label_count", "2", "--torch_threads", "1", *flags]
    return build_index.run(argv, save_main_session=False)


class Interrupted(RuntimeError):
    pass


@pytest.mark.parametrize("source", ["annotations", pytest.param("captions", marks=pytest.mark.slow)])
def test_killed_after_some_shard_commits_resumes_to_identical_rows(tiny_models, tmp_path, monkeypatch, source):
    root = make_annotated_dataset(tmp_path / "data", n_images=16, seed=1)
    make_captions(root)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG truncated")
    uninterrupted = tmp_path / "uninterrupted"
    run_job(tiny_models, uninterrupted, root, "--num_shards", "5", source=source)

    # Interrupt: the third shard commit dies half-way (pairs staged, no marker) and the run stops.
    interrupted = tmp_path / "interrupted"
    real_write = staging.write_staged_shard
    commits = []

    def dying_write(output, shard, rows_by_kind, generation=0):
        if len(commits) == 2:
            staging.write_rows(staging.staging_path(output, "pairs", shard), [], staging.pairs_staging_schema())
            raise Interrupted(f"killed while committing shard {shard}")
        real_write(output, shard, rows_by_kind, generation)
        commits.append(shard)

    monkeypatch.setattr(staging, "write_staged_shard", dying_write)
    with pytest.raises(Exception, match="killed while committing"):
        run_job(tiny_models, interrupted, root, source=source)  # 5 shards from --images_per_shard (fixture below)
    monkeypatch.undo()

    assert staging.done_shards(str(interrupted)) == sorted(commits) and len(commits) == 2
    assert not (interrupted / "segments").exists() and not (interrupted / "manifest.json").exists()

    manifest = run_job(tiny_models, interrupted, root, source=source)
    assert snapshot(interrupted)["segments"] == snapshot(uninterrupted)["segments"]
    assert snapshot(interrupted) == snapshot(uninterrupted)
    # committed shards were not read again: only the images of the other shards went through the models, and the
    # committed shards' failures (broken.png, when its shard was committed), which a re-run tries again
    done_images = sum(1 for p in (root / "images").iterdir() if staging.shard_of(str(p), 5) in commits)
    broken_committed = int(staging.shard_of(str(root / "images" / "broken.png"), 5) in commits)
    metrics = manifest["run_metrics"]
    assert manifest["run"]["images_retried"] == broken_committed
    assert metrics["images_read"] + metrics.get("images_failed_decode", 0) == 17 - done_images + broken_committed
    assert manifest["run"]["resumed_shards"] == 2
    # a third run over a complete output redoes no image and changes nothing
    manifest = run_job(tiny_models, interrupted, root, source=source)
    assert manifest["run_metrics"].get("images_read", 0) == 0
    assert snapshot(interrupted) == snapshot(uninterrupted)


@pytest.fixture(autouse=True)
def five_shards(monkeypatch):
    """Runs without --num_shards must pick 5 shards here, as the uninterrupted run did (17 images / 4 per shard)."""
    real_prepare = build_index.prepare

    def prepare(config):
        return real_prepare(config if config.num_shards else dataclasses.replace(config, images_per_shard=4))

    monkeypatch.setattr(build_index, "prepare", prepare)


def test_rerun_with_conflicting_shards_or_inputs_stops_with_one_line(tiny_models, tmp_path):
    root = make_annotated_dataset(tmp_path / "data", n_images=3)
    output = tmp_path / "out"
    run_job(tiny_models, output, root, "--num_shards", "2", "--skip_index")
    assert json.loads((output / "_run.json").read_text())["num_shards"] == 2
    with pytest.raises(UsageError, match="--num_shards 3 conflicts with 2"):
        run_job(tiny_models, output, root, "--num_shards", "3")
    with pytest.raises(UsageError, match="settings differ"):
        run_job(tiny_models, output, root, "--max_side", "32")
    make_annotated_dataset(tmp_path / "data", n_images=4)  # one more image appears
    with pytest.raises(UsageError, match="inputs differ"):
        run_job(tiny_models, output, root)
    manifest = run_job(tiny_models, output, root, "--overwrite", "--num_shards", "3", "--skip_index")
    assert manifest["counts"]["images_in"] == 4 and manifest["params"]["num_shards"] == 3
