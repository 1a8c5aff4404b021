"""The project's import structure: no import cycle among its modules, one top-level import name
(``ftsafety``), and a packaging list that names every package folder.

Which imports count for cycles: every import statement, in a function too, except those under
``if TYPE_CHECKING:`` (they never run). A function-level import is how heavy libraries (torch,
vllm) are deferred; it is no licence for two modules to import each other (``report`` ↔
``report_html`` and ``harness.organism`` ↔ ``evals`` were such pairs): dependencies point one
way. Plugins that the registries import by name (``importlib``) are not static imports and do
not count: the core reaches them only through the registries.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Folder at the repository root → its import name.
PACKAGES = {"harness": "ftsafety.harness", "attacks": "ftsafety.attacks", "defenses": "ftsafety.defenses",
            "evals": "ftsafety.evals"}


def project_modules() -> dict[str, Path]:
    """Every module of the four packages by import name (``ftsafety.harness.plugins``); a
    package by its own name (its ``__init__.py``)."""
    modules = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((name, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that can run (see the module docstring)."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skipped]


def import_graph() -> dict[str, set[str]]:
    """Project module → the project modules it imports. ``from p import x``
    names the submodule ``p.x`` when there is one, else the module ``p``."""
    modules = project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert not node.level, f"{path}:{node.lineno}: a relative import (the project imports ftsafety.*)"
                base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_the_project():
    graph = import_graph()
    assert len(graph) > 50
    assert graph["ftsafety.defenses.none"] >= {"ftsafety.harness.plugins", "ftsafety.harness.registry"}
    assert "ftsafety.harness.registry" in graph["ftsafety.harness.sampling"]  # a function-level import
    assert "ftsafety.harness.config" not in graph["ftsafety.harness.plugins"]  # TYPE_CHECKING only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_plain_evals_is_not_this_project(tmp_path):
    """``import evals`` (OpenAI's package has that name) must not find this project: it installs
    under ``ftsafety`` only. Run from an empty directory, so the repository root is not on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name in ("evals", "harness", "attacks", "defenses"):
        code = ("import importlib.util, sys\n"
                f"spec = importlib.util.find_spec({name!r})\n"
                "print(spec.origin if spec and spec.origin else (list(spec.submodule_search_locations) if spec else ''))")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        assert str(ROOT) not in out, f"`import {name}` finds this project: {out}"
    # and the project is importable under its own name from there
    subprocess.run([sys.executable, "-c", "import ftsafety.evals.metrics, ftsafety.harness.plugins"], cwd=tmp_path,
                   env=env, check=True)


def test_packaging_lists_every_package_folder():
    """``[tool.setuptools] packages`` must name every folder with an ``__init__.py`` under the four
    package folders (a missing one is left out of a wheel, and fails only after install)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {name for name, path in project_modules().items() if path.name == "__init__.py"}
    assert found - listed == set(), f"package folders missing from pyproject's packages: {sorted(found - listed)}"
    assert listed - found == set(), f"pyproject names packages that do not exist: {sorted(listed - found)}"
