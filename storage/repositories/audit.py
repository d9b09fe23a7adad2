"""The audit log: who changed what, when and why (adapters, memory entries, erasure).

Rows are only added, and on erasure their actor pseudonymized; never edited otherwise.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import AuditEntry


class Audit:
    def __init__(self, session: Session) -> None:
        self.s = session

    def record(
        self,
        *,
        actor: str,
        action: str,
        target_type: str,
        target_id: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        row = AuditEntry(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            details=details or {},
        )
        self.s.add(row)
        self.s.flush()
        return row

    def pseudonymize_actor(self, actor: str, *, replacement: str = "erased-user") -> int:
        """Replace ``actor`` in every audit row it wrote (erasure); returns the rows changed."""
        result = self.s.execute(
            update(AuditEntry).where(AuditEntry.actor == actor).values(actor=replacement)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def for_target(self, target_type: str, target_id: str) -> list[AuditEntry]:
        return list(
            self.s.scalars(
                select(AuditEntry)
                .filter_by(target_type=target_type, target_id=target_id)
                .order_by(AuditEntry.id)
            )
        )
