"""kill -9 at seeded points of a running `build_index` and `reme label`, then the same command again: the outputs
equal an uninterrupted run's exactly (same files, same rows, same bytes where deterministic), with no partial,
duplicate or temporary files left behind.

Kill points are file-system events (the k-th commit marker, the first final part, the k-th label map), found by
polling the output directory in a bounded loop — no sleeps standing in for timing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.reliability.helpers import (
    REPO,
    assert_same_reference_set,
    base_env,
    build_index_argv,
    label_argv,
    label_snapshot,
    run,
    temp_leftovers,
    write_captions,
)
from tests.support.bad_inputs import BadInput, write_bad_inputs

pytestmark = pytest.mark.slow

NUM_SHARDS = 4
BUDGET = ("--max_failure_rate", "1")  # the inputs are mostly the bad-input matrix, by design
SEEDS = (4, 19, 23)  # index: first final part (phase B), 3rd marker, 2nd marker; label: map 8, 2, 10


def _index_kill_point(seed: int) -> tuple[str, int]:
    rng = random.Random(seed)
    return rng.choice([("marker", rng.randint(1, NUM_SHARDS - 1)), ("final-part", 1), ("marker", 1)])


def _label_kill_point(seed: int) -> int:
    return random.Random(seed).randint(1, 20)


def _count(directory: Path, pattern: str) -> int:
    return sum(1 for _ in directory.glob(pattern)) if directory.exists() else 0


def kill_when(argv: list[str], ready: Callable[[], bool], log: Path, timeout: float = 600) -> int:
    """Start argv, SIGKILL its whole process group as soon as `ready()` holds; returns the exit status."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, cwd=REPO, env=base_env(), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)  # polling interval of a bounded loop, not a timing assumption
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.returncode


def _all_parquet_readable(root: Path) -> None:
    for p in root.rglob("*.parquet"):
        pq.read_table(p)  # a partial file would not parse


def _relative_files(root: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() not in ignore)


def _without_retries(files: list[str]) -> list[str]:
    return [f for f in files if not re.fullmatch(r"_staging/.*part-\d+\.r\d+(\.parquet)?", f)]


# ------------------------------------------------------------------------------------------------------------
# build_index
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resume_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-inputs")
    cases = write_bad_inputs(root / "images")
    # The name-collision case is left out here: it is a labeller bug of its own (test_bad_inputs_e2e), and an
    # overwritten output would make the comparison depend on processing order.
    (root / "images" / "with_space.jpg").unlink()
    cases = [c for c in cases if c.name != "with_space.jpg"]
    # More ordinary images, so a run lasts long enough to be killed at several points.
    for i in range(16):
        shutil.copy(root / "images" / "cmyk.jpg", root / "images" / f"extra-{i:02d}.jpg")
    extras = [BadInput(f"extra-{i:02d}.jpg", "processed") for i in range(16)]
    captions = write_captions(root / "captions.jsonl", cases + extras)
    return root / "images", captions


@pytest.fixture(scope="module")
def uninterrupted_index(resume_inputs, cache_dir, tmp_path_factory):
    images, captions = resume_inputs
    out = tmp_path_factory.mktemp("uninterrupted") / "ref"
    result = run(build_index_argv(str(images), str(out), str(captions), cache_dir, "--num_shards", str(NUM_SHARDS),
                            *BUDGET))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_build_index_killed_then_rerun_equals_uninterrupted(seed, resume_inputs, uninterrupted_index, cache_dir,
                                                           tmp_path):
    images, captions = resume_inputs
    out = tmp_path / "ref"
    argv = build_index_argv(str(images), str(out), str(captions), cache_dir, "--num_shards", str(NUM_SHARDS),
                            *BUDGET)
    kind, k = _index_kill_point(seed)
    if kind == "marker":
        ready = lambda: _count(out / "_staging" / "_done", "part-*") >= k  # noqa: E731
    else:
        ready = lambda: _count(out / "segments", "part-*.parquet") >= k  # noqa: E731

    status = kill_when(argv, ready, tmp_path / "killed.log")
    assert status == -signal.SIGKILL, f"run ended ({status}) before the kill point {kind}#{k}: " + (
        tmp_path / "killed.log").read_text(errors="replace")[-2000:]
    assert not (out / "manifest.json").exists(), "a killed run must not look finished"

    result = run(argv)
    assert result.returncode == 0, result.stderr[-3000:]

    assert_same_reference_set(out, uninterrupted_index)
    # The same files, except the staging generations of the failures the re-run tried again (refset.staging).
    assert _without_retries(_relative_files(out)) == _relative_files(uninterrupted_index)
    _all_parquet_readable(out)
    assert temp_leftovers(out) == []


# ------------------------------------------------------------------------------------------------------------
# reme label
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted_labels(resume_inputs, uninterrupted_index, cache_dir, tmp_path_factory):
    images, _ = resume_inputs
    out = tmp_path_factory.mktemp("uninterrupted-labels") / "out"
    result = run(label_argv(str(uninterrupted_index), str(images), str(out), cache_dir, "--overlay",
                            "--label_batch_size", "4", *BUDGET))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_label_killed_then_rerun_equals_uninterrupted(seed, resume_inputs, uninterrupted_index, uninterrupted_labels,
                                                      cache_dir, tmp_path):
    images, _ = resume_inputs
    out = tmp_path / "out"
    argv = label_argv(str(uninterrupted_index), str(images), str(out), cache_dir, "--overlay",
                      "--label_batch_size", "4", *BUDGET)
    k = _label_kill_point(seed)
    status = kill_when(argv, lambda: _count(out, "*.png") >= k, tmp_path / "killed.log")
    assert status == -signal.SIGKILL, f"run ended ({status}) before label map #{k}: " + (
        tmp_path / "killed.log").read_text(errors="replace")[-2000:]

    result = run(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped" in result.stdout

    assert label_snapshot(out) == label_snapshot(uninterrupted_labels)
    assert _relative_files(out) == _relative_files(uninterrupted_labels)
    _all_parquet_readable(out)
    assert temp_leftovers(out) == []


def test_label_rerun_of_a_finished_output_does_no_work_and_changes_nothing(resume_inputs, uninterrupted_index,
                                                                           uninterrupted_labels, cache_dir, tmp_path):
    images, _ = resume_inputs
    out = Path(shutil.copytree(uninterrupted_labels, tmp_path / "out"))
    before = label_snapshot(out)
    result = run(label_argv(str(uninterrupted_index), str(images), str(out), cache_dir, "--overlay",
                            "--label_batch_size", "4", *BUDGET))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"labelled 0 images", result.stdout), result.stdout
    assert label_snapshot(out) == before
