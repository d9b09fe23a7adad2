"""The learning loop's records: dataset snapshots (with whose data they hold, for
erasure) and learning runs.

It stores what the loop hands in; selecting, anonymizing and training live in ``learning``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import DatasetSnapshot, LearningRun, RunStatus, SnapshotSource, utcnow
from storage.repositories.adapters import Adapters


class Snapshots:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        content_hash: str,
        path: str,
        counts: dict[str, Any],
        since_message_id: int | None,
        until_message_id: int | None,
        users: dict[int, int],
        feedback_until: datetime | None = None,
        flag_until_id: int | None = None,
    ) -> DatasetSnapshot:
        row = DatasetSnapshot(
            content_hash=content_hash,
            path=path,
            counts=counts,
            since_message_id=since_message_id,
            until_message_id=until_message_id,
            feedback_until=feedback_until,
            flag_until_id=flag_until_id,
        )
        self.s.add(row)
        self.s.flush()
        for user_id, n in sorted(users.items()):
            self.s.add(SnapshotSource(snapshot_id=row.id, user_id=user_id, messages=n))
        self.s.flush()
        return row

    def latest(self) -> DatasetSnapshot | None:
        return self.s.scalar(select(DatasetSnapshot).order_by(DatasetSnapshot.id.desc()).limit(1))

    def get_by_hash(self, content_hash: str) -> DatasetSnapshot | None:
        return self.s.scalar(select(DatasetSnapshot).filter_by(content_hash=content_hash))

    def taint_for_user(
        self, user_id: int, *, actor: str = "privacy", reason: str = "erasure"
    ) -> list[int]:
        """Mark every snapshot holding ``user_id``'s data, the adapters trained on them
        and every adapter descended from those (:meth:`Adapters.taint_trained_on`)."""
        ids = sorted(self.s.scalars(select(SnapshotSource.snapshot_id).filter_by(user_id=user_id)))
        if ids:
            self.s.execute(
                update(DatasetSnapshot).where(DatasetSnapshot.id.in_(ids)).values(tainted=True)
            )
            Adapters(self.s).taint_trained_on(ids, actor=actor, reason=reason)
        return ids

    def forget_user(self, user_id: int) -> int:
        """Delete the records of which snapshots held ``user_id``'s data (after tainting)."""
        result = self.s.execute(delete(SnapshotSource).where(SnapshotSource.user_id == user_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class LearningRuns:
    def __init__(self, session: Session) -> None:
        self.s = session

    def start(self, *, trigger: str) -> LearningRun:
        row = LearningRun(trigger=trigger, status=RunStatus.RUNNING)
        self.s.add(row)
        self.s.flush()
        return row

    def finish(
        self,
        run_id: int,
        *,
        status: RunStatus,
        report: dict[str, Any] | None = None,
        error: str | None = None,
        snapshot_id: int | None = None,
        candidate_version: str | None = None,
    ) -> LearningRun:
        row = self.s.get(LearningRun, run_id)
        if row is None:
            raise NotFound(f"learning run {run_id} does not exist")
        row.status = status
        row.report = report or {}
        row.error = error
        row.snapshot_id = snapshot_id
        row.candidate_version = candidate_version
        row.finished_at = utcnow()
        return row
