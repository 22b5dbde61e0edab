"""Every command ends the same way: a usage error exits 2, a failed run exits 1, each with one line on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.command import RunFailure, UsageError, exit_code_of

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raised, status", [
    ("UsageError('no input matched: x/*.jpg')", 2),
    ("RunFailure('3 of 4 images failed, above --max_failure_rate 0.5')", 1),
    ("UsageError('a bad flag', prog='reme label')", 2),
])
def test_run_command_prints_one_line_and_exits_with_the_kind_s_status(raised, status):
    code = ("from pipeline.command import RunFailure, UsageError, run_command\n"
            f"def main():\n    raise {raised}\n"
            "run_command(main, 'prog')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    prog = "reme label" if "prog=" in raised else "prog"
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr


def test_messages_are_folded_to_one_line():
    assert str(UsageError("two\nlines   here")) == "two lines here"
    assert exit_code_of(RunFailure("x")) == (1, "x") and exit_code_of(UsageError("y")) == (2, "y")
    assert exit_code_of(SystemExit(0)) == (0, None) and exit_code_of(KeyError("k"))[0] == 1
