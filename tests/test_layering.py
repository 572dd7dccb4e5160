"""Imports between top-level packages run one way, bottom to top: kernel -> storage_plugins,
catalogue -> transfers -> rules -> wms -> productions -> cairn; dataio (the user's process) needs
only catalogue, transfers, storage_plugins and kernel. storage_plugins and catalogue import no
project package but kernel; kernel none. No product module imports itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernel", "catalogue", "transfers", "rules", "storage_plugins", "wms", "productions", "dataio", "cairn")
ALLOWED = {
    "kernel": set(),
    "storage_plugins": {"kernel"},
    "catalogue": {"kernel"},
    "transfers": {"kernel", "catalogue", "storage_plugins"},
    "rules": {"kernel", "catalogue", "transfers", "storage_plugins"},
    "wms": {"kernel", "catalogue", "transfers", "rules", "storage_plugins"},
    "productions": {"kernel", "catalogue", "transfers", "rules", "storage_plugins", "wms"},
    "dataio": {"kernel", "catalogue", "transfers", "storage_plugins"},
    "cairn": set(PACKAGES) - {"cairn"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


def test_imports_follow_the_layers() -> None:
    wrong = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for target in imported_packages(path) - ALLOWED[package] - {package}:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "\n".join(wrong)


def module_imports() -> dict[str, set[str]]:
    """Each product module's imports of other product modules (TYPE_CHECKING ones included)."""
    paths = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.update(name for name in [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                             if name in paths)
        graph[module] = found - {module}
    return graph


def test_no_import_cycles() -> None:
    graph = module_imports()
    done: set[str] = set()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" -> ".join([*path[path.index(module):], module]))
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)
