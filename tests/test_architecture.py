"""Imports follow the layer order that docs/architecture.md writes down: the graph is built from the
source (function-level imports included, `if TYPE_CHECKING:` blocks not), and every import must go to a
layer left of the importing one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PKG = ROOT / "src" / "robustlab"


def layer_order() -> list[str]:
    """The ```layers block of docs/architecture.md, read left to right and top to bottom, lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, flags=re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return block.group(1).split()


def unit_of(path: Path) -> str:
    """The top-level module or package a source file belongs to."""
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported robustlab unit, line) for every import in the file outside `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    package = list(path.relative_to(PKG).parent.parts)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                targets = [base + node.module.split(".")] if node.module else [base + [a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "robustlab":
                targets = [node.module.split(".")[1:]]
            else:
                targets = []
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "robustlab"]
        else:
            continue
        for t in targets:
            if t and t[0] != "__init__" and ((PKG / t[0]).is_dir() or (PKG / f"{t[0]}.py").exists()):
                found.append((t[0], node.lineno))
    return found


def test_every_import_goes_to_a_lower_layer():
    rank = {unit: i for i, unit in enumerate(layer_order())}
    files = sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)
    units = {unit_of(p) for p in files}
    assert not units - set(rank), f"top-level modules missing from docs/architecture.md's layers: {sorted(units - set(rank))}"
    wrong = [f"{p.relative_to(PKG)}:{line} imports {target}, which comes after {unit_of(p)} in the order"
             for p in files for target, line in imports(p)
             if target != unit_of(p) and rank[target] >= rank[unit_of(p)]]
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


@pytest.mark.parametrize("line", ["from ..report import plots", "from robustlab.report import plots"])
def test_the_check_catches_an_import_against_the_flow(tmp_path, line):
    """The graph builder sees both relative and absolute imports, inside functions too."""
    probe = PKG / "analysis" / "_architecture_probe.py"
    probe.write_text(f"def f():\n    {line}\n")
    try:
        assert ("report", 2) in imports(probe)
    finally:
        probe.unlink()
