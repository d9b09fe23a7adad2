"""chatloop: the composition root.

Settings (``chatloop.settings``), logging set-up, the command line (``chatloop.cli``)
and the wiring that builds the real parts (database, model, engine, platforms) from
settings (``chatloop.app``). The packages ``bot``, ``serving``, ``learning`` and
``storage`` never import this package: they receive what they need as arguments.
"""

__version__ = "0.1.0"
