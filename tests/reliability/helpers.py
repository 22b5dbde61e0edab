"""Running the two user-facing commands as users do (a subprocess each) and reading what they left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.support.bad_inputs import BadInput

REPO = Path(__file__).resolve().parents[2]
CAPTION = "a red wall next to green grass under a blue sky"
CLASSES = "red wall,green grass,blue sky"
RUN_TIMEOUT_S = 600


def base_env(extra: dict | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    env.update(extra or {})
    return env


def reme_command() -> list[str]:
    """The installed console script (what users type), falling back to the module when not on PATH."""
    script = Path(sys.executable).parent / "reme"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def build_index_argv(inputs: str, output: str, captions: str, cache_dir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.build_index", "--input", inputs, "--output", output,
            "--preset", "tiny-random", "--cache_dir", cache_dir, "--label_source", "captions",
            "--captions", captions, "--torch_threads", "1", *extra]


def label_argv(index: str, inputs: str, output: str, cache_dir: str, *extra: str, classes: str = CLASSES) -> list[str]:
    return [*reme_command(), "label", "--index", index, "--classes", classes, "--cache_dir", cache_dir,
            "--torch_threads", "1", "--no_progress", *extra, inputs, output]


def run(argv: list[str], env: dict | None = None, timeout: int = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, env=env or base_env(), capture_output=True, text=True, timeout=timeout)


def write_captions(path: Path, cases: list[BadInput]) -> Path:
    path.write_text("".join(json.dumps({"image": c.name, "caption": CAPTION}) + "\n" for c in cases),
                    encoding="utf-8")
    return path


def read_dir_rows(directory: Path) -> list[dict]:
    parts = sorted(directory.glob("part-*.parquet"))
    return [row for p in parts for row in pq.read_table(p).to_pylist()]


def _split_row(row: dict) -> tuple[str, dict]:
    """(exact part as a sortable key, float part) of a row: floats may differ in the last bits between runs
    (batch composition changes float32 sums), everything else must be identical."""
    exact, floats = {}, {}
    for key, value in row.items():
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            floats[key] = value
        else:
            exact[key] = value.hex() if isinstance(value, bytes) else value
    return json.dumps(exact, sort_keys=True, default=repr), floats


def assert_rows_match(a: list[dict], b: list[dict], what: str, atol: float = 1e-4) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} rows vs {len(b)}"
    sa, sb = sorted(map(_split_row, a), key=lambda r: r[0]), sorted(map(_split_row, b), key=lambda r: r[0])
    for (ka, fa), (kb, fb) in zip(sa, sb, strict=True):
        assert ka == kb, f"{what}: rows differ:\n{ka}\n{kb}"
        assert fa.keys() == fb.keys(), what
        for key in fa:
            va, vb = np.asarray(fa[key], dtype=np.float64), np.asarray(fb[key], dtype=np.float64)
            assert np.allclose(va, vb, atol=atol, rtol=0, equal_nan=True), f"{what}.{key}: {va} vs {vb}"


def assert_same_reference_set(a: Path, b: Path) -> None:
    """Two reference sets hold the same files, rows (floats to 1e-4) and counts, and equivalent FAISS indexes."""
    import faiss

    for sub in ("segments", "dropped", "failures"):
        parts_a = sorted(p.name for p in (a / sub).glob("*.parquet"))
        assert parts_a == sorted(p.name for p in (b / sub).glob("*.parquet")), sub
        for part in parts_a:
            assert_rows_match(pq.read_table(a / sub / part).to_pylist(), pq.read_table(b / sub / part).to_pylist(),
                              f"{sub}/{part}")
    assert_rows_match(pq.read_table(a / "labels.parquet").to_pylist(),
                      pq.read_table(b / "labels.parquet").to_pylist(), "labels")
    assert json.loads((a / "manifest.json").read_text())["counts"] == json.loads(
        (b / "manifest.json").read_text())["counts"]
    assert pq.read_table(a / "index" / "ids.parquet").equals(pq.read_table(b / "index" / "ids.parquet"))
    ia, ib = (faiss.read_index(str(x / "index" / "segments.faiss")) for x in (a, b))
    assert (ia.ntotal, ia.d) == (ib.ntotal, ib.d)
    assert np.allclose(ia.reconstruct_n(0, ia.ntotal), ib.reconstruct_n(0, ib.ntotal), atol=1e-3)


def label_snapshot(output: Path) -> dict:
    """Label maps (bytes), segment tables (rows), overlays, classes.json and failures of a `reme label` output."""
    snap: dict = {}
    for p in sorted(output.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(output).as_posix()
        if rel == "run.json":
            continue
        if p.suffix == ".parquet":
            rows = pq.read_table(p).to_pylist()
            snap[rel] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=repr))
        else:
            snap[rel] = p.read_bytes()
    return snap


def temp_leftovers(root: Path) -> list[str]:
    """Files an interrupted writer may leave: storage's temp prefix, or any partial-looking name."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.name.startswith(".tmp") or p.name.endswith((".tmp", ".partial")))


def tree_state(root: Path) -> dict[str, tuple[int, int]] | None:
    """(size, mtime_ns) of every file under root, None when root does not exist: to prove nothing changed."""
    if not root.exists():
        return None
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def one_line_error(stderr: str) -> str:
    """The stderr of a refused run, which must be a single non-empty line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    return lines[0]
