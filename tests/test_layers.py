"""The architecture stays as drawn: the layers contract holds, no import cycle, no import of the package façade.

``lint-imports`` checks the contracts in ``pyproject.toml`` (``[tool.importlinter]``).
The walk below reads every module of ``geostp`` with :mod:`ast` (imports inside
functions included, as import-linter counts them) and looks for cycles between
modules, which a layers contract only catches between layers.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "geostp"

#: Imports that still close a cycle, each with the work that removes it.  The test fails when one
#: of them is gone (remove it here and from ``ignore_imports`` in pyproject.toml) or a new one appears.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()  # none: the one-call forecast lives in geostp.api


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _known(name: str) -> str | None:
    """The longest prefix of a dotted name that is a geostp module (``geostp.x.f`` -> ``geostp.x``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> dict[str, int]:
    """geostp modules imported by ``module`` (at any depth of its code), with the first line of each."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            if target == "geostp" or target.startswith("geostp."):
                resolved = _known(target)
                if resolved is not None and resolved != module:
                    found.setdefault(resolved, node.lineno)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_function_level_imports():
    # geostp.cli imports the recipes only inside its command functions
    assert "geostp.recipes.schema" in GRAPH["geostp.cli"]
    assert "geostp.store" in GRAPH["geostp.stream.dataset"]


def test_no_import_cycle_between_modules():
    edges = {m: set(targets) for m, targets in GRAPH.items()}
    for a, b in KNOWN_CYCLE_EDGES:
        assert b in edges[a], f"{a} no longer imports {b}: remove it from KNOWN_CYCLE_EDGES and ignore_imports"
        edges[a].discard(b)
    cycles = _cycles(edges)
    shown = "; ".join(" <-> ".join(c) for c in cycles)
    assert not cycles, f"import cycles between geostp modules: {shown}"


def test_no_module_imports_the_package_facade():
    """``geostp/__init__.py`` is for users; inside the package import the module that holds a name."""
    offenders = []
    for module, path in MODULES.items():
        if module == "geostp":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "geostp" for a in node.names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: import geostp")
            elif isinstance(node, ast.ImportFrom) and node.module == "geostp" and not node.level:
                names = [a.name for a in node.names if f"geostp.{a.name}" not in MODULES]
                if names:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: from geostp import {', '.join(names)}")
    assert not offenders, "modules importing the package façade: " + "; ".join(offenders)


def test_reading_recipes_does_not_import_torch():
    code = "import sys, geostp.recipes; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_import_linter_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    result = subprocess.run([*command, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_module_over_750_lines_and_long_functions_say_why():
    """The size rules of the architecture page: modules stay under 750 lines; a function over 80 lines has a
    one-line ``#`` reason right above it (above its decorators or between them and the ``def``)."""
    big = [f"{p.relative_to(REPO)} ({n})" for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 750]
    assert not big, f"modules over 750 lines: {big}"
    silent = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                top = min([d.lineno for d in node.decorator_list] + [node.lineno])
                above = lines[top - 2:node.lineno - 1]  # the line above the decorators, and the decorator lines
                if not any(line.strip().startswith("#") for line in above):
                    silent.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not silent, f"functions over 80 lines without a reason above them: {silent}"
