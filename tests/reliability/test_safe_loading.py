"""Safe loading: nothing a user points us at (checkpoints, reference sets, class files, input names) can run code
or write outside the output directory."""

from __future__ import annotations

import ast
import os
import pickle
import posixpath
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "transforms", "pipeline", "inference")

# Calls that unpickle (run arbitrary code from data) and are never acceptable on user-supplied bytes.
UNPICKLERS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
    ("cloudpickle", "load"), ("cloudpickle", "loads"), ("dill", "load"), ("dill", "loads"),
    ("joblib", "load"), ("pd", "read_pickle"), ("pandas", "read_pickle"), ("marshal", "loads"),
    ("shelve", "open"), ("yaml", "load"), ("yaml", "unsafe_load"),
}


def _source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expr>")  # model.eval() is not eval()
    return tuple(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.relative_to(root)}:{node.lineno}"
        if name[-2:] in UNPICKLERS or name in {("eval",), ("exec",)}:
            problems.append(f"{where} calls {'.'.join(name)}")
        if name[-2:] == ("torch", "load"):
            if not _is_true(_keyword(node, "weights_only")):
                problems.append(f"{where} torch.load without weights_only=True")
        if name[-1:] == ("load",) and name[:1] in {("np",), ("numpy",)}:
            if _is_true(_keyword(node, "allow_pickle")):
                problems.append(f"{where} numpy load with allow_pickle=True")
        if name[-1:] in {("loads",), ("load",)} and name[:1] == ("json",):
            if _keyword(node, "object_hook") is not None or _keyword(node, "object_pairs_hook") is not None:
                problems.append(f"{where} json with an object hook")
    return problems


def test_the_code_never_unpickles_or_evaluates_data():
    files = _source_files()
    assert len(files) > 20, "the packages were not found"
    problems = [p for f in files for p in unsafe_calls(f)]
    assert problems == []


def test_the_scanner_catches_what_it_looks_for(tmp_path):
    """The AST scan above must flag each forbidden form (otherwise an empty result proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, torch, numpy as np, json\n"
        "pickle.loads(b'')\n"
        "torch.load('x')\n"
        "torch.load('x', weights_only=False)\n"
        "np.load('x', allow_pickle=True)\n"
        "json.loads('{}', object_hook=dict)\n"
        "torch.load('x', weights_only=True)\n"  # fine
    )
    found = unsafe_calls(bad, root=tmp_path)
    assert len(found) == 5, found


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_booby_trapped_sam_checkpoint_is_refused_without_running(tmp_path):
    from models.weights import WeightsUnavailable, load_sam

    proof = tmp_path / "payload-ran"
    checkpoint = tmp_path / "sam_evil.pth"
    checkpoint.write_bytes(pickle.dumps({"image_encoder.weight": _Payload(str(proof))}, protocol=2))
    with pytest.raises(WeightsUnavailable) as info:
        load_sam("tiny", str(checkpoint))
    assert "\n" not in str(info.value) and "weights_only" in str(info.value)
    assert not proof.exists()


@pytest.mark.parametrize("member", ["manifest.json", "labels.parquet", "index/segments.faiss", "index/ids.parquet"])
def test_a_reference_set_file_holding_a_pickle_is_refused_without_running(member, matrix_index, tmp_path):
    """Replace one file of a real reference set with a pickle whose loading would run code: the reader refuses it
    with a clear error and the code never runs."""
    import shutil

    from refset.reader import ReferenceSet

    assert matrix_index.returncode == 0, matrix_index.stderr[-2000:]
    index = Path(shutil.copytree(matrix_index.output, tmp_path / "ref"))
    proof = tmp_path / "payload-ran"
    (index / member).write_bytes(pickle.dumps(_Payload(str(proof))))
    with pytest.raises(Exception) as info:  # noqa: PT011 - any clear refusal; the point is what did NOT happen
        ref = ReferenceSet.open(str(index))
        _ = ref.index, ref.labels if hasattr(ref, "labels") else None
    assert str(info.value).strip()
    assert not proof.exists()


ADVERSARIAL = [
    "/data/../../etc/passwd.jpg",
    "/data/a/../../../x.jpg",
    "/data/..jpg",
    "/data/...jpg",
    "/data/.hidden.jpg",
    "/data/.tmp-photo.jpg",
    "/data/a\\..\\..\\evil.jpg",
    "/data/" + "x" * 400 + ".jpg",
    "gs://bucket/../../escape.jpg",
    "/data/sub/../../../../root.png",
    "/data/\u202eevil\u202d.jpg",
    "/data/nul\x00byte.jpg",
    "/data/.jpg",
    "/data/..",
]


# Inputs whose path cannot name an output under the rule (stems verbatim; only separators, control characters, the
# temp-file prefix and over-long parts are refused): each is refused with a one-line reason, never renamed.
REFUSED = {"/data/a\\..\\..\\evil.jpg", "/data/" + "x" * 400 + ".jpg", "/data/nul\x00byte.jpg", "/data/.tmp-photo.jpg",
           "/data/.."}


@pytest.mark.parametrize("uri", ADVERSARIAL)
@pytest.mark.parametrize("root", ["", "/data", "/data/sub"])
def test_output_names_cannot_escape_the_output_directory(uri, root):
    from inference import outputs
    from refset import storage

    [name] = outputs.output_names([uri], [root])
    if uri in REFUSED:
        assert name is None
        with pytest.raises(outputs.UnsafeName) as info:
            outputs.collision_key(uri, [root])
        assert "\n" not in str(info.value)
        return
    assert name and not name.startswith("/")
    for part in name.split("/"):
        assert part not in ("", ".", "..") and "\\" not in part and "\x00" not in part, name
        assert not part.startswith(storage.TMP_PREFIX), name  # never taken for a temporary file
        assert len(part.encode("utf-8")) <= 255 - len(".parquet")  # fits a file name with its extension
    for path in (outputs.label_map_path("/out", name), outputs.overlay_path("/out", name),
                 outputs.segments_path("/out", name), storage.join("gs://b/out", name + ".png")):
        normal = posixpath.normpath(path.split("://", 1)[-1])
        assert normal.startswith(("/out/", "b/out/")), (uri, path)
        assert normal == path.split("://", 1)[-1], path  # nothing for normpath to resolve: no '..' or '.' parts
