"""The one direction of imports: bot -> serving -> storage, learning -> serving -> storage.

``bot`` never imports ``learning`` and vice versa; ``serving`` imports neither;
``storage`` imports nothing of ours; no package imports the composition root.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"chatloop", "bot", "serving", "learning", "storage", "bench"}
FORBIDDEN = {
    "storage": {"chatloop", "bot", "serving", "learning", "bench"},
    "serving": {"chatloop", "bot", "learning", "bench"},
    "bot": {"chatloop", "learning", "bench"},
    "learning": {"chatloop", "bot", "bench"},
    "bench": {"chatloop"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    if package != "learning":
        assert files, f"{package} has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package])
        for f in files
        if _imports(f) & FORBIDDEN[package]
    }
    assert bad == {}
