"""The package's floors, read from its source: no import circle, and every import goes to a lower floor.

Every ``import`` and ``from ... import`` counts, those inside functions too: a lazy import still ties
one module to another, it only hides the circle until run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "catdog_lightning"
# Floors, lowest first. A module imports its own part and parts on lower floors only; parts sharing a floor
# (data and models) never import each other. The package's own __init__ sits on top (it re-exports lazily).
FLOORS = {
    "errors": 0,
    "classes": 0,
    "allow_list": 1,
    "hardware": 0,
    "progress": 0,
    "numpy_net": 0,
    "storage": 1,
    "data": 2,
    "models": 2,
    "training": 3,
    "inference": 4,
    "serving": 5,
    "sweeps": 5,
    "cli": 6,
    "__init__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import sub" imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def floor_of(name: str) -> tuple[str, int]:
    part = name.split(".")[1] if "." in name else "__init__"
    assert part in FLOORS, f"{name}: a new part of the package; give it a floor in FLOORS (tests/test_layers.py)"
    return part, FLOORS[part]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_the_import_reader_sees_relative_lazy_and_submodule_imports():
    edges = graph()
    assert "catdog_lightning.training.fit" in edges["catdog_lightning.training"]  # from .fit import train
    assert "catdog_lightning.models.schedules" in edges["catdog_lightning.models.classifier"]  # from . import
    assert "catdog_lightning.storage.runs" in edges["catdog_lightning.cli"]  # inside a function
    assert "catdog_lightning.data" in edges["catdog_lightning.training.fit"]  # from ..data import


def test_every_import_goes_down_a_floor_or_stays_in_its_part():
    upward = []
    for name, targets in graph().items():
        part, floor = floor_of(name)
        for target in targets:
            other, other_floor = floor_of(target)
            if other != part and other_floor >= floor:
                upward.append(f"{name} -> {target} ({part} floor {floor}, {other} floor {other_floor})")
    assert upward == []


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_lab_lives_beside_the_package_which_never_imports_it():
    """The lab's programs need a checkout (they write docs/, run scripts/): the installed package holds none of them."""
    assert not (PACKAGE / "lab").exists() and (ROOT / "lab" / "cli.py").is_file()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n == "lab" or n.startswith("lab.") for n in names), name
