"""Repositories: the queries and writes the bot and the learning loop need.

Each repository wraps one :class:`~sqlalchemy.orm.Session` and owns one aggregate.
They never commit: the caller decides the transaction
(``with storage.db.transaction(factory) as s: Users(s).upsert(...)``), so a chat
turn's writes land together or not at all.

One module per thing owned; every public name is importable from here:

- ``conversations``: workspaces, users, conversations, messages, replies and the
  platform messages they were posted as, processed event ids (the live path)
- ``feedback``: votes and staff flags on replies
- ``audit``: the audit log
- ``adapters``: the adapter registry (lifecycle, canary, rollback, taint)
- ``data``: dataset snapshots (and whose data they hold) and learning runs
- ``_base``: what they share

The answer memory's repository is :mod:`storage.memory`.
"""

from __future__ import annotations

from storage.errors import InvalidTransition
from storage.repositories.adapters import ADAPTER_CHANNEL, Adapters, Withdrawal
from storage.repositories.audit import Audit
from storage.repositories.conversations import (
    Conversations,
    Messages,
    ProcessedEvents,
    Replies,
    ReplyParts,
    Turn,
    Users,
    Workspaces,
)
from storage.repositories.data import LearningRuns, Snapshots
from storage.repositories.feedback import FeedbackRepo, Flags

__all__ = [
    "ADAPTER_CHANNEL",
    "Adapters",
    "Audit",
    "Conversations",
    "FeedbackRepo",
    "Flags",
    "InvalidTransition",
    "LearningRuns",
    "Messages",
    "ProcessedEvents",
    "Replies",
    "ReplyParts",
    "Snapshots",
    "Turn",
    "Users",
    "Withdrawal",
    "Workspaces",
]
