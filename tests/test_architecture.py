"""The layering of the packages, checked on the source: no cycles, no upward imports, no hidden ones.

    models  <  refset  <  inference  <  transforms  <  pipeline

models: weights and model wrappers (pure torch/numpy). refset: the reference set's on-disk contract. inference: the
pure labelling logic. transforms: Beam shells over the layers below. pipeline: the jobs, their configs and CLIs.
A package may import its own layer and the layers below it, never above. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("models", "refset", "inference", "transforms", "pipeline")


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def package_graph() -> dict[str, set[str]]:
    return {pkg: {top(name) for f in package_files(pkg) for name, _, _ in imports_of(f)
                  if top(name) in LAYERS and top(name) != pkg} for pkg in LAYERS}


def test_every_package_imports_only_its_own_layer_and_below():
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in package_files(package):
            for name, line, _ in imports_of(path):
                if top(name) in LAYERS and LAYERS.index(top(name)) > rank:
                    upward.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle_between_packages():
    graph = package_graph()
    state: dict[str, str] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path + [node, nxt]
            if nxt not in state and (found := cycle_from(nxt, path + [node])):
                return found
        state[node] = "done"
        return None

    for package in LAYERS:
        if package not in state:
            assert (found := cycle_from(package, [])) is None, " -> ".join(found)


# Our own modules imported inside a function, each with its reason: the module pulls in a heavy dependency that
# only one configuration needs. Anything else of ours is imported at the top, where the dependency is visible.
DEFERRED_OWN_IMPORTS = {
    ("models/maskers.py", "models.sam_fast"): "segment-anything and torchvision, needed only with --masker sam",
}


def test_own_modules_are_imported_at_module_level():
    """A deferred import of our own code hides a dependency (and usually a cycle)."""
    deferred = [f"{path.relative_to(REPO)}:{line} defers an import of {name}"
                for package in LAYERS for path in package_files(package)
                for name, line, in_function in imports_of(path)
                if in_function and top(name) in LAYERS
                and (str(path.relative_to(REPO)), name) not in DEFERRED_OWN_IMPORTS]
    assert not deferred, "\n".join(deferred)


@pytest.mark.parametrize("package", LAYERS)
def test_the_checker_sees_imports_inside_functions(package, tmp_path):
    """The walker itself: an import inside a function is found and marked as deferred."""
    source = tmp_path / "probe.py"
    source.write_text(f"import os\n\ndef f():\n    from {package}.sub import x\n")
    assert imports_of(source) == [("os", 1, False), (f"{package}.sub", 4, True)]


# ---------------------------------------------------------------------------------------------------------------
# refset.index is used through its facade (refset/index/__init__.py) only


def _files_outside_the_index_package() -> list[Path]:
    roots = [REPO / p for p in (*LAYERS, "bench", "tests")]
    return [f for root in roots for f in sorted(root.rglob("*.py")) if (REPO / "refset" / "index") not in f.parents]


def private_index_uses(path: Path) -> list[str]:
    """Imports of refset.index's submodules or private names, and `alias._name` on a module alias of it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("refset.index."):
                found.append(f"{node.lineno}: from {node.module} import ...")
            elif node.module == "refset.index":
                found += [f"{node.lineno}: from refset.index import {a.name}" for a in node.names if a.name.startswith("_")]
            elif node.module == "refset":
                aliases |= {a.asname or a.name for a in node.names if a.name == "index"}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("refset.index."):
                    found.append(f"{node.lineno}: import {a.name}")
                elif a.name == "refset.index" and a.asname:
                    aliases.add(a.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_")):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_refset_index_is_used_only_through_its_facade():
    """Callers, benches and tests name only what refset/index/__init__.py exports: the package's modules and
    private helpers can change without touching them."""
    bad = [f"{path.relative_to(REPO)}:{use}" for path in _files_outside_the_index_package()
           for use in private_index_uses(path)]
    assert not bad, "\n".join(bad)


def test_the_facade_checker_sees_private_uses(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("from refset.index import build_index, _train\nfrom refset.index.tune import tune\n"
                      "from refset import index as fi\nfi._set_search_params(1, {})\nfi.search\n")
    assert private_index_uses(source) == ["1: from refset.index import _train", "2: from refset.index.tune import ...",
                                          "4: fi._set_search_params"]
