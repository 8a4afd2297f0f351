"""Module boundaries that keep the serving side independent of the trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import streamtrain.serving

SERVING = Path(streamtrain.serving.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = "streamtrain.serving"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against streamtrain.serving
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_serving_never_imports_the_trainer() -> None:
    sources = sorted(SERVING.rglob("*.py"))
    assert sources, "no serving modules found"
    offenders = {
        str(path.relative_to(SERVING)): sorted(
            m
            for m in _imported_modules(path)
            if m == "streamtrain.train" or m.startswith("streamtrain.train.")
        )
        for path in sources
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import streamtrain.train.trainer\n"
        "from streamtrain import train\n"
        "from ..train import telemetry\n"
    )
    found = _imported_modules(module)
    assert "streamtrain.train.trainer" in found
    assert "streamtrain.train" in found
    assert "streamtrain.train.telemetry" in found
