"""Benchmark programs: each prints JSON with both sides of a comparison measured in one run.

They live outside the runtime packages (``bot``, ``serving``, ``learning``, ``storage``)
so that a production install never imports them; the ``chatloop bench ...`` commands
load them on demand. A benchmark may import any package of ours but ``chatloop``.
"""
