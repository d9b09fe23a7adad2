"""chatloop: the composition root.

Settings (``chatloop.settings``), logging set-up, the command line (``chatloop.cli``)
and the wiring that builds the real parts (database, model, engine, platforms) from
settings (``chatloop.app``). The packages ``bot``, ``serving``, ``learning`` and
``storage`` never import this package: they receive what they need as arguments.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chatloop")  # one source: pyproject.toml's [project] version
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    __version__ = "0+unknown"
