"""Bad arguments stop both commands before any work: non-zero exit, ONE line on stderr naming the problem, and
the output directory neither created nor modified. Each case runs the real command in a subprocess, because
what a user sees on stderr (log noise included) is the thing under test."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    build_index_argv,
    label_argv,
    reme_command,
    run,
    tree_state,
)


def _check_refusal(argv: list[str], output: Path, expected: str) -> None:
    """Run a command that must be refused; report every broken promise at once (status, one line, no output)."""
    before = tree_state(output)
    result = run(argv)
    problems = []
    if result.returncode == 0:
        problems.append("exit status 0")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr instead of one")
    elif not re.search(expected, lines[0], re.IGNORECASE):
        problems.append(f"message does not say what is wrong (/{expected}/): {lines[0]}")
    if tree_state(output) != before:
        problems.append(f"{output} was {'created' if before is None else 'modified'} by a refused run")
    assert not problems, "; ".join(problems) + "\n--- stderr ---\n" + result.stderr[-3000:]


# ------------------------------------------------------------------------------------------------------------
# build_index
# ------------------------------------------------------------------------------------------------------------
INDEX_CASES = {
    # name: (how to make argv from (matrix, cache, tmp) -> (argv, output), expected message regex)
    "missing-input": r"no input|not found|does not exist|cannot list",
    "empty-match": r"no input|matched|empty",
    "unwritable-output": r"writable|not a directory|cannot|exists",
    "conflicting-label-flags": r"conflict",
    "captions-missing": r"captions|not found|no such|cannot read",
    "missing-output-flag": r"--output",
}


def _index_case(name: str, matrix, cache_dir: str, tmp: Path) -> tuple[list[str], Path]:
    out = tmp / "ref"
    images, captions = str(matrix.images), str(matrix.captions)
    if name == "missing-input":
        return build_index_argv(str(tmp / "no-such-dir"), str(out), captions, cache_dir), out
    if name == "empty-match":
        (tmp / "empty").mkdir()
        return build_index_argv(str(tmp / "empty" / "*.jpg"), str(out), captions, cache_dir), out
    if name == "unwritable-output":
        (tmp / "a-file").write_text("not a directory")
        out = tmp / "a-file" / "ref"
        return build_index_argv(images, str(out), captions, cache_dir), out
    if name == "conflicting-label-flags":
        return build_index_argv(images, str(out), captions, cache_dir, "--annotations", str(tmp)), out
    if name == "captions-missing":
        return build_index_argv(images, str(out), str(tmp / "no-captions.jsonl"), cache_dir), out
    if name == "missing-output-flag":
        argv = build_index_argv(images, str(out), captions, cache_dir)
        i = argv.index("--output")
        return argv[:i] + argv[i + 2:], out
    raise AssertionError(name)


FAST = {"missing-input", "duplicate-classes"}  # the rest run with -m slow (each is a cold subprocess)


def _marks(name: str):
    return () if name in FAST else (pytest.mark.slow,)


@pytest.mark.parametrize("case", [pytest.param(n, marks=_marks(n)) for n in INDEX_CASES])
def test_build_index_refuses_bad_arguments_with_one_line(case, matrix, cache_dir, tmp_path):
    argv, output = _index_case(case, matrix, cache_dir, tmp_path)
    _check_refusal(argv, output, INDEX_CASES[case])


# ------------------------------------------------------------------------------------------------------------
# reme label
# ------------------------------------------------------------------------------------------------------------
LABEL_CASES = {
    "missing-input": r"no input|not found|does not exist",
    "empty-match": r"no input|matched",
    "unwritable-output": r"writable|not a directory|cannot",
    "empty-classes": r"class",
    "blank-classes": r"class",
    "duplicate-classes": r"duplicate|twice|repeated",
    "duplicate-classes-case": r"duplicate|twice|repeated",
    "classes-and-classes-file": r"not allowed with|conflict|mutually exclusive|only one",
    "other-visual-encoder-in-manifest": r"encoder|model",
    "other-text-encoder-in-manifest": r"encoder|model",
    "visual-model-override": r"encoder|model",
    "missing-index": r"index|not found|no such|manifest",
    "truncated-faiss-index": r"index|corrupt|truncat|read",
    "corrupt-manifest": r"manifest|corrupt|json|parse",
    "truncated-labels": r"labels|corrupt|parquet|read",
    "existing-output-other-classes": r"other classes|classes",
}


def _edit_manifest(index: Path, edit) -> None:
    manifest = json.loads((index / "manifest.json").read_text())
    edit(manifest)
    (index / "manifest.json").write_text(json.dumps(manifest))


def _label_case(name: str, matrix, index: Path, cache_dir: str, tmp: Path) -> tuple[list[str], Path]:
    out = tmp / "labels"
    images = str(matrix.images)

    def copied_index() -> Path:
        return Path(shutil.copytree(index, tmp / "index-copy"))

    if name == "missing-input":
        return label_argv(str(index), str(tmp / "no-such-dir"), str(out), cache_dir), out
    if name == "empty-match":
        (tmp / "empty").mkdir()
        return label_argv(str(index), str(tmp / "empty"), str(out), cache_dir), out
    if name == "unwritable-output":
        (tmp / "a-file").write_text("not a directory")
        out = tmp / "a-file" / "labels"
        return label_argv(str(index), images, str(out), cache_dir), out
    if name == "empty-classes":
        return label_argv(str(index), images, str(out), cache_dir, classes=""), out
    if name == "blank-classes":
        return label_argv(str(index), images, str(out), cache_dir, classes=" , ,"), out
    if name == "duplicate-classes":
        return label_argv(str(index), images, str(out), cache_dir, classes="cat,dog,cat"), out
    if name == "duplicate-classes-case":
        return label_argv(str(index), images, str(out), cache_dir, classes="Cat, dog,cat "), out
    if name == "classes-and-classes-file":
        (tmp / "classes.txt").write_text("cat\ndog\n")
        return label_argv(str(index), images, str(out), cache_dir, "--classes-file", str(tmp / "classes.txt")), out
    if name == "other-visual-encoder-in-manifest":
        copy = copied_index()
        _edit_manifest(copy, lambda m: _set_model(m, "visual", "facebook/dinov2-large"))
        return label_argv(str(copy), images, str(out), cache_dir), out
    if name == "other-text-encoder-in-manifest":
        copy = copied_index()
        _edit_manifest(copy, lambda m: _set_model(m, "text", "sentence-transformers/all-mpnet-base-v2"))
        return label_argv(str(copy), images, str(out), cache_dir), out
    if name == "visual-model-override":
        return label_argv(str(index), images, str(out), cache_dir, "--visual_model", "facebook/dinov2-large"), out
    if name == "missing-index":
        return label_argv(str(tmp / "no-index"), images, str(out), cache_dir), out
    if name == "truncated-faiss-index":
        copy = copied_index()
        faiss_file = copy / "index" / "segments.faiss"
        faiss_file.write_bytes(faiss_file.read_bytes()[: faiss_file.stat().st_size // 2])
        return label_argv(str(copy), images, str(out), cache_dir), out
    if name == "corrupt-manifest":
        copy = copied_index()
        (copy / "manifest.json").write_text('{"schema_version": 1, "models": ')
        return label_argv(str(copy), images, str(out), cache_dir), out
    if name == "truncated-labels":
        copy = copied_index()
        labels = copy / "labels.parquet"
        labels.write_bytes(labels.read_bytes()[: labels.stat().st_size // 2])
        return label_argv(str(copy), images, str(out), cache_dir), out
    if name == "existing-output-other-classes":
        out.mkdir()
        (out / "classes.json").write_text(json.dumps({"0": "zebra", "1": "giraffe"}))
        (out / "keep.png").write_bytes(b"an earlier result")
        return label_argv(str(index), images, str(out), cache_dir), out
    raise AssertionError(name)


def _set_model(manifest: dict, role: str, model_id: str) -> None:
    """Record another encoder in every place a manifest may keep it (model info and the models config)."""
    found = False
    for key in ("model_info", "models_info", "encoders"):
        if isinstance(manifest.get(key), dict) and isinstance(manifest[key].get(role), dict):
            manifest[key][role]["model_id"] = model_id
            found = True
    models = manifest.get("models")
    if isinstance(models, dict):
        for candidate in (models, models.get("config", {})):
            if isinstance(candidate, dict) and isinstance(candidate.get(role), dict):
                candidate[role]["model_id"] = model_id
                found = True
    assert found, f"manifest has no {role} model record: {sorted(manifest)}"


@pytest.mark.parametrize("case", [pytest.param(n, marks=_marks(n)) for n in LABEL_CASES])
def test_label_refuses_bad_arguments_with_one_line(case, matrix, matrix_index, cache_dir, tmp_path):
    assert matrix_index.returncode == 0, matrix_index.stderr[-2000:]
    argv, output = _label_case(case, matrix, matrix_index.output, cache_dir, tmp_path)
    if case == "classes-and-classes-file":
        assert "--classes" in argv and "--classes-file" in argv
    _check_refusal(argv, output, LABEL_CASES[case])


def test_reme_without_subcommand_is_one_line():
    result = run([*reme_command()])
    assert result.returncode != 0
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 1, result.stderr
