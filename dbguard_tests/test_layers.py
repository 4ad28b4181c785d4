"""The layers of dbguard_pipeline, read from the source with ``ast`` (no import is executed).

* the core (everything but the entry points: ``defs/``, ``commands/``, ``cli.py``, ``devtools/``,
  ``pytest_plugin.py``) never imports Dagster nor an entry point;
* only ``defs/`` and ``devtools/`` import Dagster (the CLI and the pytest plugin stay light);
* ``model/``, ``semantics/``, ``policy/`` and ``rules/`` never import the database layer (``psycopg``,
  ``dbguard_pipeline.pg``): they judge data, they do not fetch it;
* no import cycle between the top-level packages and modules of ``dbguard_pipeline`` (function-level imports
  count; imports under ``if TYPE_CHECKING:`` do not, they never run), nor between modules through the
  imports that run when a module is loaded.

Every import counts wherever it is written (module level or inside a function).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "dbguard_pipeline"

ENTRY_POINTS = (f"{PKG}.defs", f"{PKG}.commands", f"{PKG}.cli", f"{PKG}.devtools", f"{PKG}.pytest_plugin")
DAGSTER_ALLOWED = (f"{PKG}.defs", f"{PKG}.devtools")
PURE = (f"{PKG}.model", f"{PKG}.semantics", f"{PKG}.policy", f"{PKG}.rules")
DATABASE_LAYER = ("psycopg", "psycopg2", f"{PKG}.pg")
# Imports that only type-checkers read, allowed where the runtime import is not: (importer, imported).
TYPE_ONLY_ALLOWED = ((f"{PKG}.rules", f"{PKG}.pg.metrics"),)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    path: str  # the importer's file, relative to the repository
    target: str  # dotted name of the imported module (resolved: ``from pkg import mod`` -> ``pkg.mod``)
    line: int
    at_load: bool  # runs when the importer is loaded (module level, not in a function, not TYPE_CHECKING)
    type_only: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        return f"{self.path}:{self.line}: imports {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, in_function, True
                yield from _walk(stmt, in_function, True)
            for stmt in child.orelse:
                yield stmt, in_function, type_only
                yield from _walk(stmt, in_function, type_only)
            continue
        nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, in_function, type_only
        yield from _walk(child, nested, type_only)


def _imports_of(path: Path) -> Iterator[Import]:
    name, rel = _module_name(path), str(path.relative_to(ROOT))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node, in_function, type_only in _walk(tree, False, False):
        at_load = not in_function and not type_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, rel, alias.name, node.lineno, at_load, type_only)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if base.startswith(PKG) and _exists(sub) else base
                yield Import(name, rel, target, node.lineno, at_load, type_only)


def _all_imports() -> list[Import]:
    return [imp for path in sorted((ROOT / PKG).rglob("*.py")) for imp in _imports_of(path)]


IMPORTS = _all_imports()


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _unit(name: str) -> str:
    """The top-level package or module of dbguard_pipeline a module belongs to."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else name


def _components(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def _shortest_cycle(start: str, members: set[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, {})):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"{start} is on no cycle of its component")


def _cycle_report(edges: dict[str, dict[str, Import]]) -> list[str]:
    """Per component: its members, then the shortest cycle through each member (each cycle once), every
    step with the import that makes it."""
    out = []
    for comp in _components(edges):
        seen: set[frozenset[tuple[str, str]]] = set()
        lines = [f"cycle among {', '.join(comp)}:"]
        for start in comp:
            cycle = _shortest_cycle(start, set(comp), edges)
            steps = list(zip(cycle, cycle[1:], strict=False))
            if frozenset(steps) in seen:
                continue
            seen.add(frozenset(steps))
            lines.append("  " + " -> ".join(cycle))
            lines.extend(f"    {a} -> {b}: {edges[a][b].where()}" for a, b in steps)
        out.append("\n".join(lines))
    return out


def _fail(what: str, lines: list[str]) -> None:
    if lines:
        pytest.fail(f"{what}:\n" + "\n".join(sorted(set(lines))), pytrace=False)


def test_the_source_is_read():
    importers = {imp.importer for imp in IMPORTS}
    assert {f"{PKG}.cli", f"{PKG}.services", f"{PKG}.report.render", f"{PKG}.rules"} <= importers


def test_the_core_never_imports_dagster_or_an_entry_point():
    bad = [
        imp.where()
        for imp in IMPORTS
        if not _within(imp.importer, ENTRY_POINTS) and _within(imp.target, ("dagster", *ENTRY_POINTS))
    ]
    _fail("the core imports Dagster or an entry point (defs, commands, cli, devtools, pytest_plugin)", bad)


def test_only_the_dagster_definitions_import_dagster():
    bad = [
        imp.where()
        for imp in IMPORTS
        if _within(imp.target, ("dagster", "dagster_slack", "dagster_postgres"))
        and not _within(imp.importer, DAGSTER_ALLOWED)
    ]
    _fail("Dagster imported outside defs/ and devtools/", bad)


def test_judgments_never_import_the_database_layer():
    bad = [
        imp.where()
        for imp in IMPORTS
        if _within(imp.importer, PURE)
        and _within(imp.target, DATABASE_LAYER)
        and not (
            imp.type_only
            and any(_within(imp.importer, (a,)) and _within(imp.target, (b,)) for a, b in TYPE_ONLY_ALLOWED)
        )
    ]
    _fail("model/, semantics/, policy/ or rules/ import the database layer (psycopg, dbguard_pipeline.pg)", bad)


def test_no_import_cycle_between_packages():
    edges: dict[str, dict[str, Import]] = {}
    for imp in IMPORTS:
        if imp.type_only or not _within(imp.target, (PKG,)):
            continue
        a, b = _unit(imp.importer), _unit(imp.target)
        if a != b and b != PKG:  # everyone may read dbguard_pipeline.__version__
            edges.setdefault(a, {}).setdefault(b, imp)
    _fail("import cycles between the packages of dbguard_pipeline", _cycle_report(edges))


def test_no_import_cycle_when_modules_load():
    edges: dict[str, dict[str, Import]] = {}
    for imp in IMPORTS:
        if imp.at_load and _within(imp.target, (PKG,)) and imp.target != imp.importer:
            edges.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    _fail("import cycles at load time", _cycle_report(edges))


def test_the_entry_points_analyze_through_services():
    """``services.analyze`` is the one door to the performance analysis: the CLI and the Dagster asset import
    its report types and renderers, never the function that runs it."""
    runs_it = (f"{PKG}.analyze.run", f"{PKG}.analyze.prove", f"{PKG}.analyze.measure", f"{PKG}.analyze.session")
    wrong = []
    for path in sorted((ROOT / PKG).rglob("*.py")):
        name = _module_name(path)
        if not _within(name, ENTRY_POINTS):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module in runs_it or (
                node.module == f"{PKG}.analyze" and any(a.name in ("analyze", "Options") for a in node.names)
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports from {node.module}")
    _fail("entry points that run the analysis without services.analyze", wrong)
