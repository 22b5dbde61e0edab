"""What the quality benches share: which hard worlds to run (tests/worlds/hard.py) and where to keep them."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.worlds import hard


def add_world_args(ap: argparse.ArgumentParser) -> None:
    """--seeds/--held_out/--n_train/--n_test/--workdir, as every quality bench takes them."""
    ap.add_argument("--seeds", default=",".join(map(str, hard.DEV_SEEDS)), help="dev world seeds")
    ap.add_argument("--held_out", action="store_true", help="evaluate the held-out variant instead (run it last)")
    ap.add_argument("--n_train", type=int, default=64)
    ap.add_argument("--n_test", type=int, default=32)
    ap.add_argument("--workdir", default=None,
                    help="keep the worlds and reference sets here, and reuse those already built (default: a temp dir)")


def chosen_worlds(args: argparse.Namespace) -> list[tuple[str, int, object]]:
    """[(tag, seed, style)]: the held-out variant alone, or the dev seeds."""
    if args.held_out:
        return [("held_out", hard.HELD_OUT["seed"], hard.HELD_OUT["style"])]
    return [("dev", int(s), hard.DEFAULT_STYLE) for s in args.seeds.split(",")]


@contextlib.contextmanager
def work_dir(workdir: str | None, prefix: str) -> Iterator[Path]:
    """The bench's working directory: `workdir` (kept), or a temporary one removed afterwards. Offline models."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if not workdir:
            shutil.rmtree(work, ignore_errors=True)
