"""Approval requests: tell maintainers in chat when an adapter awaits their decision.

The learning loop only writes to the registry (an adapter becomes ``pending``);
:class:`ApprovalAnnouncer` notices that and asks each platform adapter with a
maintainers' channel to post the evaluation summary with Approve / Reject buttons.
Each (platform, version) is announced once across all replicas: the announcement
is claimed in ``processed_events`` before it is posted (and the claim released if
posting fails, so it is retried), and recorded in the audit log with the posted
message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.models import Adapter, AdapterStatus, ProcessedEvent
from storage.repositories import Adapters, Audit, ProcessedEvents

log = logging.getLogger(__name__)

Poster = Callable[[str, str], Awaitable[str]]
"""``post(version, summary) -> platform message id``."""


def summarize(adapter: Adapter) -> str:
    """A short evaluation summary of an adapter for maintainers."""
    lines = [
        f"base model: {adapter.base_model}",
        f"replaces: {adapter.parent_version or 'base'}",
    ]
    if adapter.snapshot_id is not None:
        lines.append(f"dataset snapshot: #{adapter.snapshot_id}")
    for key, value in sorted(adapter.metrics.items()):
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key}: {shown}")
    return "\n".join(lines)


class ApprovalAnnouncer:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        posters: Mapping[str, Poster],
        interval_s: float = 15.0,
    ) -> None:
        self.sessions = sessions
        self.posters = dict(posters)
        self.interval_s = interval_s

    def _claim(self, platform: str, version: str) -> tuple[bool, str]:
        with transaction(self.sessions) as s:
            adapter = Adapters(s).get(version)
            claimed = ProcessedEvents(s).claim(platform, f"approval:{version}")
            return claimed, summarize(adapter)

    def _release(self, platform: str, version: str) -> None:
        with transaction(self.sessions) as s:
            s.execute(
                delete(ProcessedEvent).where(
                    ProcessedEvent.platform == platform,
                    ProcessedEvent.event_id == f"approval:{version}",
                )
            )

    def _record(self, platform: str, version: str, message_id: str) -> None:
        with transaction(self.sessions) as s:
            Audit(s).record(
                actor="bot",
                action="adapter.announced",
                target_type="adapter",
                target_id=version,
                details={"platform": platform, "message_id": message_id},
            )

    def _pending(self) -> list[str]:
        with self.sessions() as s:
            return [a.version for a in Adapters(s).list(statuses=[AdapterStatus.PENDING])]

    async def announce_once(self) -> list[tuple[str, str]]:
        """Post every not-yet-announced pending adapter; returns (platform, version) posted."""
        posted: list[tuple[str, str]] = []
        versions = await asyncio.to_thread(self._pending)
        for version in versions:
            for platform, post in self.posters.items():
                claimed, summary = await asyncio.to_thread(self._claim, platform, version)
                if not claimed:
                    continue
                try:
                    message_id = await post(version, summary)
                except Exception as exc:
                    log.error(
                        "approval request not posted; will retry",
                        extra={"platform": platform, "version": version, "error": str(exc)},
                    )
                    await asyncio.to_thread(self._release, platform, version)
                    continue
                await asyncio.to_thread(self._record, platform, version, message_id)
                posted.append((platform, version))
        return posted

    async def run(self) -> None:
        while True:
            try:
                await self.announce_once()
            except Exception:
                log.exception("approval announcer failed; will retry")
            await asyncio.sleep(self.interval_s)
