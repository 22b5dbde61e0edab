"""Fixtures of the reliability suite: the bad-input matrix, and the index and label maps made from it (built
once per test process, by the real commands in subprocesses, as users run them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.helpers import build_index_argv, label_argv, run, write_captions
from tests.support.bad_inputs import BadInput, write_bad_inputs


@dataclass(frozen=True)
class Matrix:
    images: Path
    captions: Path
    cases: list[BadInput]


@dataclass(frozen=True)
class Ran:
    output: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def cache_dir(tiny_models) -> str:
    """The tiny-random preset, materialised once (tests/conftest.py), shared by every subprocess."""
    return tiny_models.cache_dir


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> Matrix:
    root = tmp_path_factory.mktemp("matrix")
    cases = write_bad_inputs(root / "images")
    return Matrix(images=root / "images", captions=write_captions(root / "captions.jsonl", cases), cases=cases)


@pytest.fixture(scope="session")
def matrix_index(matrix, cache_dir, tmp_path_factory) -> Ran:
    output = tmp_path_factory.mktemp("matrix-index") / "ref"
    # The matrix is mostly bad files by design: no failure budget (--max_failure_rate 1).
    result = run(build_index_argv(str(matrix.images), str(output), str(matrix.captions), cache_dir,
                                  "--max_failure_rate", "1"))
    return Ran(output, result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def matrix_labels(matrix, matrix_index, cache_dir, tmp_path_factory) -> Ran:
    assert matrix_index.returncode == 0, matrix_index.stderr[-3000:]
    output = tmp_path_factory.mktemp("matrix-labels") / "out"
    result = run(label_argv(str(matrix_index.output), str(matrix.images), str(output), cache_dir, "--overlay",
                            "--max_failure_rate", "1"))
    return Ran(output, result.returncode, result.stdout, result.stderr)
