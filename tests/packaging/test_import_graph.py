"""The dependency rule of docs/ARCHITECTURE.md, read from the source: which package may import
which, and no import cycle between modules (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "robot_compress"
ALLOWED = {  # package -> the packages it may import (besides itself and robot_compress/__init__)
    "runtime": set(),
    "edge": {"runtime"},
    "sim": {"runtime"},
    "compress": {"runtime"},
    "ros": {"runtime", "sim"},
    # the fault harness starts edge servers and Triton, and scores detections with COCO mAP
    # (compress/detection/coco_eval, which needs pycocotools, not torch)
    "faults": {"runtime", "ros", "edge", "compress"},
    "demo": {"runtime", "faults", "sim"},  # sim.rendering: can the world render, before anything starts
    "doctor": {"runtime", "sim", "ros"},  # ros.vision_msgs_build: why the typed messages are missing
    "cli": {"runtime", "compress", "demo", "edge", "faults", "ros", "sim", "doctor"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, modules: set[str]) -> Iterator[str]:
    """Every robot_compress module an import statement names (`from a import b` may name module a.b)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("robot_compress."):
                yield name


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: set(imported(ast.parse(path.read_text()), modules)) - {name} for name, path in paths.items()}


def package_of(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_packages_import_only_what_the_dependency_rule_allows():
    graph = import_graph()
    packages = {package_of(module) for module in graph} - {""}
    assert packages <= set(ALLOWED), f"a package the rule does not name yet: {packages - set(ALLOWED)}"
    breaking = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                      if package_of(target) not in {package_of(module), "", *ALLOWED.get(package_of(module), ())})
    assert breaking == []


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
