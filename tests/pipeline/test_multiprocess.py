"""The job on the DirectRunner's multi_processing mode (2 worker processes) writes what in_memory writes; a
`kill -9` of the whole job process group at a random point resumes to the same rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import build_index
from refset import staging

from .helpers import make_annotated_dataset, snapshot

REPO = Path(__file__).resolve().parents[2]


def cli(tiny_models, root, output, *flags):
    return [sys.executable, "-m", "pipeline.build_index", "--output", str(output), "--preset", "tiny-random",
            "--cache_dir", tiny_models.cache_dir, "--label_source", "annotations", "--annotations", str(root),
            "--ignore_index", "0", "--min_label_count", "2", "--num_shards", "4", "--torch_threads", "1", *flags]


def in_memory(tiny_models, root, output):
    argv = cli(tiny_models, root, output)[3:]
    return build_index.run(argv, save_main_session=False)


@pytest.mark.slow
def test_multi_processing_two_workers_matches_in_memory(tiny_models, tmp_path):
    root = make_annotated_dataset(tmp_path / "data", n_images=10, seed=2)
    in_memory(tiny_models, root, tmp_path / "reference")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cli(tiny_models, root, tmp_path / "mp", "--direct_running_mode=multi_processing",
                       "--direct_num_workers=2"), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    assert snapshot(tmp_path / "mp") == snapshot(tmp_path / "reference")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_then_resume_matches_uninterrupted(tiny_models, tmp_path, seed):
    import random

    root = make_annotated_dataset(tmp_path / "data", n_images=16, seed=seed)
    in_memory(tiny_models, root, tmp_path / "reference")
    output = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(cli(tiny_models, root, output), cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill once the run has committed some shards (or at a random moment before), whichever comes first
    deadline = time.monotonic() + random.Random(seed).uniform(4.0, 12.0)
    while time.monotonic() < deadline and process.poll() is None and len(staging.done_shards(str(output))) < 2:
        time.sleep(0.05)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    subprocess.run(cli(tiny_models, root, output), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    assert snapshot(output) == snapshot(tmp_path / "reference")
    assert not list(output.rglob(".tmp-*"))
