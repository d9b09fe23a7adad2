"""Sticky canary routing: which conversations go to a candidate adapter.

A conversation is in the canary when a hash of (candidate version, conversation
key) falls below the configured share. The same conversation always gets the same
answer for a given candidate (no flip-flopping mid-thread), different candidates
sample different conversations, and the share of conversations routed converges
on the configured percentage. Requests without a conversation key never join a
canary.
"""

from __future__ import annotations

import hashlib

_BUCKETS = 10_000


def bucket(version: str, conversation_key: str) -> int:
    digest = hashlib.blake2b(f"{version}\x00{conversation_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


def in_canary(version: str, conversation_key: str, percent: float) -> bool:
    """True when this conversation should be answered by the canary ``version``."""
    if percent <= 0 or not conversation_key:
        return False
    if percent >= 100:
        return True
    return bucket(version, conversation_key) < percent * _BUCKETS / 100
