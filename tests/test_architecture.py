"""Every "never" of the intended shape, checked by reading the imports of every module.

The arrows point one way: ``bot -> serving -> storage``, ``learning -> serving ->
storage`` (docs/ARCHITECTURE.md). The rules below are the "nevers" behind them:

- the core (``bot.core``) never imports a platform (``bot.platforms``), and a
  platform never imports another platform;
- ``serving`` never imports ``bot`` or ``learning``;
- ``storage`` imports nothing of ours;
- ``bot`` and ``learning`` never import each other (they meet in the database);
- the runtime packages (``bot``, ``serving``, ``learning``, ``storage``) never
  import the benchmark programs (``bench``), which may import any of them;
- nothing imports the composition root (``chatloop``) but itself.

Every ``import`` and ``from ... import`` counts, wherever it stands (inside a
function, under ``TYPE_CHECKING``); relative imports are resolved against the
module's package. ``from bot import platforms`` counts as importing
``bot.platforms``. The checker is a plain function over a directory, so its own
test runs it on a small synthetic tree that breaks each rule.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "serving", "learning", "storage", "bench", "chatloop")
RUNTIME = ("bot", "serving", "learning", "storage")
PLATFORMS = ("console", "discord", "slack", "web")


@dataclass(frozen=True)
class Rule:
    """Modules under ``importer`` never import modules under ``imported``."""

    importer: str
    imported: str
    why: str


def _rules() -> list[Rule]:
    rules = [
        Rule("bot.core", "bot.platforms", "the core knows no platform"),
        Rule("serving", "bot", "serving knows nothing of the bot"),
        Rule("serving", "learning", "serving knows nothing of the learning loop"),
        Rule("bot", "learning", "bot and learning meet only in storage"),
        Rule("learning", "bot", "bot and learning meet only in storage"),
    ]
    rules += [
        Rule("storage", other, "storage imports nothing of ours")
        for other in PACKAGES
        if other != "storage"
    ]
    rules += [Rule(runtime, "bench", "benchmarks stay outside the runtime") for runtime in RUNTIME]
    rules += [
        Rule(package, "chatloop", "nothing imports the composition root")
        for package in PACKAGES
        if package != "chatloop"
    ]
    rules += [
        Rule(f"bot.platforms.{a}", f"bot.platforms.{b}", "a platform only translates its own")
        for a in PLATFORMS
        for b in PLATFORMS
        if a != b
    ]
    return rules


RULES = _rules()


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    """The dotted name of ``path`` under ``root``, and whether it is a package's __init__."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def imported_names(root: Path, path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute, relative ones resolved)."""
    name, is_package = module_name(root, path)
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module:
                found.add(module)
                found |= {f"{module}.{alias.name}" for alias in node.names if alias.name != "*"}
    return found


def violations(root: Path, rules: list[Rule] = RULES) -> list[str]:
    """``"<module> imports <name>: <why>"`` for every broken rule in the tree at ``root``."""
    broken: set[str] = set()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name, _ = module_name(root, path)
            imports = imported_names(root, path)
            for rule in rules:
                if not _under(name, rule.importer):
                    continue
                for target in sorted(imports):
                    if _under(target, rule.imported):
                        broken.add(f"{name} imports {target}: {rule.why}")
                        break
    return sorted(broken)


def test_every_package_exists() -> None:
    for package in (*PACKAGES, "bot.core", "bot.platforms"):
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), package


def test_the_code_keeps_every_never() -> None:
    assert violations(ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("", encoding="utf-8")
        path.write_text(source, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("bot/core/handler.py", "from bot.platforms.slack import adapter\n", "the core knows"),
        ("bot/core/handler.py", "from bot import platforms\n", "the core knows"),
        ("bot/core/handler.py", "from ..platforms import slack\n", "the core knows"),
        ("bot/core/handler.py", "def f():\n    import bot.platforms.discord\n", "the core"),
        ("serving/engine.py", "import bot.core\n", "serving knows nothing of the bot"),
        ("serving/engine.py", "from learning.errors import X\n", "serving knows nothing"),
        ("storage/models.py", "from serving import types\n", "storage imports nothing"),
        ("storage/models.py", "from ..bot import core\n", "storage imports nothing"),
        ("bot/platforms/slack/x.py", "import learning.cycle\n", "meet only in storage"),
        ("learning/cycle.py", "from bot.core.events import E\n", "meet only in storage"),
        ("learning/cycle.py", "import bench.train\n", "benchmarks stay outside"),
        ("serving/engine.py", "import chatloop.settings\n", "composition root"),
        ("bench/train.py", "from chatloop import app\n", "composition root"),
        ("bot/platforms/slack/x.py", "from ..discord import ui\n", "only translates its own"),
    ],
)
def test_the_checker_reports_each_broken_rule(
    tmp_path: Path, relative: str, source: str, expected: str
) -> None:
    root = _tree(tmp_path, {relative: source, "storage/db.py": "import sqlalchemy\n"})
    found = violations(root)
    assert len(found) == 1 and expected in found[0], found


def test_the_checker_accepts_the_allowed_arrows(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "bot/platforms/slack/adapter.py": "from bot.core import Core\nimport serving.types\n",
            "bot/core/handler.py": "from serving.types import R\nfrom . import events\n",
            "serving/engine.py": "from storage.db import x\n",
            "learning/cycle.py": "from serving import prompt\nfrom storage import models\n",
            "bench/train.py": "import learning.cycle, serving.engine, bot.core, storage.db\n",
            "chatloop/app.py": "import bot, serving, learning, storage, bench\n",
            "storage/models.py": "import sqlalchemy\nfrom .db import Base\n",
        },
    )
    assert violations(root) == []


def test_relative_imports_resolve_against_the_package(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"bot/core/__init__.py": "from .handler import Core\n"})
    (root / "bot/core/handler.py").write_text("from ..platforms.slack import a\n")
    assert imported_names(root, root / "bot/core/__init__.py") >= {"bot.core.handler"}
    assert "bot.platforms.slack" in imported_names(root, root / "bot/core/handler.py")


# docs/ARCHITECTURE.md is true ------------------------------------------------------------

DOC = ROOT / "docs" / "ARCHITECTURE.md"
_HEADER = re.compile(r"^( {0,2})([a-z_]+/)(?: +(.*))?$")


def _without_parentheses(text: str) -> str:
    while True:
        stripped = re.sub(r"\([^()]*\)", " ", text)
        if stripped == text:
            return stripped
        text = stripped


def package_list(doc: str) -> dict[str, list[str]]:
    """The package list's names per directory: ``{"serving": ["types", ...], ...}``."""
    block = doc.split("## Packages", 1)[1].split("```", 2)[1]
    sections: dict[str, str] = {}
    current: list[str] = []
    top = ""
    for line in block.splitlines():
        header = _HEADER.match(line)
        if header and len(header.group(1)) <= 2 and not line.startswith("    "):
            name = header.group(2).rstrip("/")
            if header.group(1):
                directory = f"{top}/{name}"
            else:
                top = directory = name
            current = [directory]
            sections[directory] = header.group(3) or ""
        elif line.strip() and current:
            sections[current[0]] += " " + line.strip()
    names: dict[str, list[str]] = {}
    for directory, text in sections.items():
        items = re.split(r"[,;]", _without_parentheses(text))
        names[directory] = [
            piece.strip() for item in items for piece in item.split("+") if piece.strip()
        ]
    return names


def test_every_module_in_the_package_list_exists() -> None:
    listed = package_list(DOC.read_text(encoding="utf-8"))
    assert {"chatloop", "bot/core", "bot/platforms", "serving", "learning", "storage"} <= set(
        listed
    )
    missing = []
    for directory, names in listed.items():
        for name in names:
            assert re.fullmatch(r"[\w.-]+/?|[\w-]+/[\w.-]+", name), f"{directory}: {name!r}"
            base = ROOT / directory / name.rstrip("/")
            if not (base.with_suffix(".py").is_file() or base.exists()):
                missing.append(f"{directory}/{name}")
    assert missing == []


def test_every_runtime_module_is_in_the_package_list() -> None:
    listed = package_list(DOC.read_text(encoding="utf-8"))
    unlisted = []
    for directory in ("chatloop", "bot/core", "serving", "learning", "storage"):
        names = {name.rstrip("/") for name in listed[directory]}
        for path in sorted((ROOT / directory).iterdir()):
            name = path.stem if path.suffix == ".py" else path.name
            if name.startswith("_") or (path.is_dir() and not (path / "__init__.py").exists()):
                continue
            if name not in names:
                unlisted.append(f"{directory}/{path.name}")
    assert unlisted == []


def test_the_doc_points_nowhere_outside_the_repository() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert "../" not in doc and "/work/" not in doc and "shared/guide" not in doc


def test_every_dotted_name_in_the_doc_exists() -> None:
    doc = DOC.read_text(encoding="utf-8")
    unknown = []
    for name in sorted(set(re.findall(r"`([a-z_]+(?:\.[A-Za-z_]\w*)+)", doc))):
        parts = name.split(".")
        if parts[0] not in PACKAGES:
            continue
        for cut in range(len(parts), 0, -1):
            base = ROOT.joinpath(*parts[:cut])
            module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base
            if module.is_dir():
                module = module / "__init__.py"
            if module.is_file():
                rest = parts[cut:]
                source = module.read_text(encoding="utf-8")
                if rest and not re.search(rf"\b{re.escape(rest[0])}\b", source):
                    unknown.append(name)
                break
        else:
            unknown.append(name)
    assert unknown == []


def test_the_cli_map_lists_every_command() -> None:
    import typer

    from chatloop.cli import app

    def paths(command: Any, prefix: tuple[str, ...] = ()) -> set[str]:
        found = {" ".join(prefix)} if prefix else set()
        for name, sub in (getattr(command, "commands", None) or {}).items():
            if not sub.hidden:
                found |= paths(sub, (*prefix, name))
        return found

    doc = DOC.read_text(encoding="utf-8")
    cli_map = doc.split("## CLI map", 1)[1]
    documented: set[str] = set()
    for row in cli_map.splitlines():
        if not row.startswith("| `chatloop"):
            continue
        tokens = re.findall(r"`([^`]+)`", row.split("|")[1])
        words = [w for w in tokens[0].split()[1:] if not w.startswith(("-", "["))]
        documented.add(" ".join(words))
        group = words[0]
        for token in tokens[1:]:
            token = token.split()[0] if token.startswith("-") else token
            documented.add(token if token.split()[0] == group else f"{group} {token}")
    actual = paths(typer.main.get_command(app))
    groups = {p.split()[0] for p in actual if " " in p}
    assert sorted(actual - documented - groups) == []
    assert sorted(documented - actual - {"learn --now"}) == []
