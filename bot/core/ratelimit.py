"""Per-user message rate limit (a sliding one-minute window, per replica).

Each replica counts on its own: with N replicas behind a load balancer a user gets
at most N times the limit, which is the intent (protect each replica's engine).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(self, *, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def check(self, key: str) -> float:
        """0 when ``key`` may go on (and counts it), else seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        window = self._seen.setdefault(key, deque())
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return max(0.5, 60 - (now - window[0]))
        window.append(now)
        if len(self._seen) > 10_000:  # forget idle users
            for k in [k for k, w in self._seen.items() if not w or now - w[-1] >= 60]:
                del self._seen[k]
        return 0.0
