"""The package's shape: no import cycles between its modules, and no oversized source files."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import streamtrain

PACKAGE_DIR = Path(streamtrain.__file__).parent
SRC_DIR = PACKAGE_DIR.parent
MAX_LINES = 560
SOURCE_SUFFIXES = {".py", ".js", ".css", ".html"}

# Files already over MAX_LINES, relative to src/streamtrain. Take a file off once it is split;
# the test says when one no longer needs its place here.
OVERSIZED: set[str] = set()


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(SRC_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere: at the top, under
    ``TYPE_CHECKING`` or inside a function (a lazy import still ties the two together).

    ``from a.b import c`` is module ``a.b.c`` when that is a module, else ``a.b``.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: ``from .`` is the package, each further dot one up
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {name for name in found if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph has none."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path = [root]  # the current chain of imports, depth-first
        on_path = {root}
        branches: list[Iterator[str]] = [iter(sorted(graph[root]))]
        while branches:
            target = next(branches[-1], None)
            if target is None:
                branches.pop()
                finished = path.pop()
                on_path.remove(finished)
                done.add(finished)
                continue
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                path.append(target)
                on_path.add(target)
                branches.append(iter(sorted(graph[target])))
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "streamtrain.cli.main" in graph["streamtrain.__main__"]  # the graph is not empty
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_a_cycle_is_found_and_shown() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": set(), "d": {"b"}}
    assert find_cycle(graph) == ["b", "d", "b"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_resolve_to_modules(tmp_path: Path) -> None:
    modules = {"p": tmp_path / "__init__.py", "p.a": tmp_path / "a.py", "p.b": tmp_path / "b.py"}
    modules["p.a"].write_text(
        "from p import b\n"
        "from p.b import thing\n"
        "import p\n"
        "def lazy():\n"
        "    from . import b\n"
        "    import os\n"
    )
    assert imported_modules("p.a", modules["p.a"], modules) == {"p", "p.b"}
    modules["p.b"].write_text("def lazy():\n    from .a import x\n")
    assert imported_modules("p.b", modules["p.b"], modules) == {"p.a"}


def source_files() -> Iterator[Path]:
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
            yield path


def test_no_source_file_is_oversized() -> None:
    lines = {
        path.relative_to(PACKAGE_DIR).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in source_files()
    }
    over = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not over.keys() - OVERSIZED, f"over {MAX_LINES} lines, split them: {over}"
    shrunk = {name: lines.get(name) for name in OVERSIZED - over.keys()}
    assert not shrunk, f"no longer over {MAX_LINES} lines, take them off OVERSIZED: {shrunk}"
