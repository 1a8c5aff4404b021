"""The core never names a plugin: no built-in attack or defense name appears in ``harness/``
outside registration — as a string constant in code, nor as a word in comments and docstrings.
Item kinds ``harmful``/``benign`` are the core's own vocabulary (a benchmark item's kind),
``none`` is the null plugin the grid defaults to, and "prefill" is also the core's word for the
start of an assistant turn (``GenerationRequest.prefix``): as a word it is allowed, as a string
constant it is not. The organism's package (``harness/organism``, the test subject whose world
supplies each attack's organism data) is left out."""

from __future__ import annotations

import ast
import re

from ftsafety.harness.registry import attacks, defenses
from tests.harness.helpers import REPO

#: Names the core may use for its own meaning: the null plugin and the item kinds.
CORE_WORDS = {"none", "harmful", "benign"}
#: Plugin names that are also ordinary words of the core's prose.
CORE_PROSE = {"prefill"}
#: (file, name): a use that is not the plugin (matplotlib's layout engine is called "constrained").
ALLOWED = {("figures.py", "constrained")}


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def test_no_builtin_plugin_name_in_the_core():
    names = {n for reg in (attacks, defenses) for n, cls in reg.items() if cls.__module__.startswith("ftsafety.")}
    names -= CORE_WORDS
    assert {"noice", "prefill", "output-guard", "moderation"} <= names
    hits = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        if "organism" in path.relative_to(REPO / "harness").parts:
            continue
        text = path.read_text(encoding="utf-8")
        for const in _string_constants(ast.parse(text)):
            if const.value.strip().lower() in names and (path.name, const.value) not in ALLOWED:
                hits.append(f"{path.relative_to(REPO)}:{const.lineno}: '{const.value}' in code")
        for name in names - CORE_PROSE:
            # the name as a word (``prefill`` the plugin, not ``prefilled`` or ``enable_chunked_prefill``)
            for m in re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, flags=re.IGNORECASE):
                if (path.name, name) in ALLOWED:
                    continue
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{path.relative_to(REPO)}:{line}: {name}")
    assert not hits, "plugin names in the core:\n" + "\n".join(hits)
