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
