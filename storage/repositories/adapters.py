"""The adapter registry: lifecycle, canary share, rollback, taint after erasure.

Every change is an audit row and, on PostgreSQL, a NOTIFY on :data:`ADAPTER_CHANNEL`
at commit. It knows versions and statuses, not weights: the adapter store on disk and
loading belong to ``serving``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from storage.errors import InvalidTransition, NotFound
from storage.models import Adapter, AdapterStatus, AuditEntry, utcnow
from storage.repositories.audit import Audit

ADAPTER_CHANNEL = "chatloop_adapters"
"""PostgreSQL NOTIFY channel: every registry change is announced on it at commit."""


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """What :meth:`Adapters.withdraw_tainted` changed."""

    retired: str | None
    """The tainted adapter that was active and is now retired (None: none was)."""
    now_active: str | None
    """What serves instead: a version or "base" (None: nothing changed)."""
    canaries_stopped: list[str]


_TRANSITIONS: dict[AdapterStatus, frozenset[AdapterStatus]] = {
    AdapterStatus.TRAINING: frozenset({AdapterStatus.CANDIDATE, AdapterStatus.FAILED}),
    AdapterStatus.CANDIDATE: frozenset({AdapterStatus.PENDING, AdapterStatus.REJECTED}),
    AdapterStatus.PENDING: frozenset({AdapterStatus.ACTIVE, AdapterStatus.REJECTED}),
    AdapterStatus.ACTIVE: frozenset({AdapterStatus.RETIRED}),
    AdapterStatus.RETIRED: frozenset({AdapterStatus.ACTIVE}),
    AdapterStatus.REJECTED: frozenset(),
    AdapterStatus.FAILED: frozenset(),
}


class Adapters:
    """The adapter registry: lifecycle training -> candidate -> rejected | pending ->
    active -> retired, and rollback (retired -> active). Every change is audited."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def register(
        self,
        *,
        version: str,
        base_model: str,
        parent_version: str | None = None,
        snapshot_id: int | None = None,
        path: str | None = None,
        weights_sha256: str | None = None,
        actor: str = "learning",
    ) -> Adapter:
        row = Adapter(
            version=version,
            base_model=base_model,
            parent_version=parent_version,
            snapshot_id=snapshot_id,
            path=path,
            weights_sha256=weights_sha256,
            status=AdapterStatus.TRAINING,
        )
        self.s.add(row)
        self.s.flush()
        Audit(self.s).record(
            actor=actor,
            action="adapter.register",
            target_type="adapter",
            target_id=version,
        )
        return row

    def get(self, version: str) -> Adapter:
        row = self.s.scalar(select(Adapter).filter_by(version=version))
        if row is None:
            raise NotFound(f"adapter {version!r} does not exist")
        return row

    def list(self, *, statuses: Sequence[AdapterStatus] | None = None) -> list[Adapter]:
        q = select(Adapter).order_by(Adapter.id)
        if statuses:
            q = q.where(Adapter.status.in_(list(statuses)))
        return list(self.s.scalars(q))

    def active(self) -> Adapter | None:
        return self.s.scalar(select(Adapter).filter_by(status=AdapterStatus.ACTIVE))

    def set_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        row = self.get(version)
        row.metrics = {**row.metrics, **metrics}
        row.updated_at = utcnow()

    def transition(
        self, version: str, to: AdapterStatus, *, actor: str, reason: str | None = None
    ) -> Adapter:
        """Move an adapter along its lifecycle; activating retires the active one."""
        row = self.get(version)
        if to not in _TRANSITIONS[row.status]:
            raise InvalidTransition(
                f"adapter {version} is {row.status.value}; it cannot become {to.value}"
            )
        if to is AdapterStatus.ACTIVE:
            if row.tainted:
                raise InvalidTransition(
                    f"adapter {version} was trained on erased data and can never be activated"
                )
            current = self.active()
            if current is not None:
                self._set(
                    current,
                    AdapterStatus.RETIRED,
                    actor=actor,
                    reason=f"replaced by {version}",
                )
        self._set(row, to, actor=actor, reason=reason)
        return row

    def set_canary(self, version: str, percent: float, *, actor: str) -> Adapter:
        """Route ``percent`` of conversations to a pending adapter (0 stops the canary)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"a canary share is between 0 and 100 percent, not {percent}")
        row = self.get(version)
        if row.status is not AdapterStatus.PENDING:
            raise InvalidTransition(
                f"only an adapter awaiting approval can be a canary; "
                f"{version} is {row.status.value}"
            )
        if row.tainted:
            raise InvalidTransition(f"adapter {version} was trained on erased data")
        if percent > 0:
            for other in self.list(statuses=[AdapterStatus.PENDING]):
                if other.id != row.id and other.canary_percent > 0:
                    raise InvalidTransition(
                        f"{other.version} is already the canary; set it to 0 first"
                    )
        before = row.canary_percent
        row.canary_percent = float(percent)
        details = {"from": before, "to": float(percent)}
        self._changed(row, actor=actor, action="adapter.canary", details=details)
        return row

    def canary(self) -> Adapter | None:
        return self.s.scalar(
            select(Adapter).where(
                Adapter.status == AdapterStatus.PENDING, Adapter.canary_percent > 0
            )
        )

    def history(self) -> builtins.list[str]:
        """The activation stack, oldest first: approvals push, rollbacks pop.

        Rebuilt from the audit log, so every replica and every process agrees.
        """
        stack: builtins.list[str] = []
        rows = self.s.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == "adapter")
            .where(AuditEntry.action.in_(["adapter.status", "adapter.rollback"]))
            .order_by(AuditEntry.id)
        )
        for e in rows:
            if e.action == "adapter.rollback":
                if stack and stack[-1] == e.target_id:
                    stack.pop()
            elif e.details.get("to") == AdapterStatus.ACTIVE.value and not e.details.get(
                "rollback"
            ):
                stack.append(e.target_id)
        return stack

    def rollback(self, *, actor: str, reason: str | None = None) -> Adapter | None:
        """Go back to the adapter that served before the current one (or to "base").

        Repeated rollbacks walk further back (v3 -> v2 -> v1 -> base); adapters
        tainted by an erasure are skipped. Returns the adapter now active, or None
        when the base model serves.
        """
        current = self.active()
        if current is None:
            raise InvalidTransition("nothing to roll back: the base model is serving")
        stack = self.history()
        if stack and stack[-1] == current.version:
            stack.pop()
        target: Adapter | None = None
        while stack:
            candidate = self.get(stack.pop())
            if candidate.status is AdapterStatus.RETIRED and not candidate.tainted:
                target = candidate
                break
        why = reason or "rollback"
        self._set(current, AdapterStatus.RETIRED, actor=actor, reason=why)
        Audit(self.s).record(
            actor=actor,
            action="adapter.rollback",
            target_type="adapter",
            target_id=current.version,
            reason=why,
            details={"to": target.version if target else "base"},
        )
        if target is not None:
            self._set(target, AdapterStatus.ACTIVE, actor=actor, reason=why, rollback=True)
        return target

    def taint_trained_on(
        self, snapshot_ids: Sequence[int], *, actor: str, reason: str
    ) -> builtins.list[Adapter]:
        """Taint every adapter trained on these snapshots and all their descendants.

        "Trained on" means the adapter's ``snapshot_id`` or any id in its
        ``metrics["snapshots"]`` (the learning loop trains on every untainted snapshot).
        A descendant is an adapter whose ``parent_version`` chain leads to a tainted
        one: it started from weights that learned the erased data. Returns every
        adapter of the chain (oldest first), tainted before or now; each newly
        tainted one gets an audit row.
        """
        if not snapshot_ids:
            return []
        found: dict[str, Adapter] = {
            a.version: a
            for a in self.s.scalars(select(Adapter).where(Adapter.snapshot_id.in_(snapshot_ids)))
        }
        # an adapter trained on several snapshots lists them all in metrics["snapshots"]
        wanted = set(snapshot_ids)
        for a in self.s.scalars(select(Adapter).where(Adapter.version.not_in(sorted(found)))):
            if wanted & set((a.metrics or {}).get("snapshots") or ()):
                found[a.version] = a
        frontier = set(found)
        while frontier:
            children = self.s.scalars(
                select(Adapter).where(
                    Adapter.parent_version.in_(sorted(frontier)),
                    Adapter.version.not_in(sorted(found)),
                )
            ).all()
            frontier = {c.version for c in children}
            found.update((c.version, c) for c in children)
        chain = sorted(found.values(), key=lambda a: a.id)
        for row in chain:
            if row.tainted:
                continue
            row.tainted = True
            self._changed(
                row,
                actor=actor,
                action="adapter.taint",
                reason=reason,
                details={"snapshot_id": row.snapshot_id, "parent_version": row.parent_version},
            )
        return chain

    def withdraw_tainted(self, *, actor: str, reason: str) -> Withdrawal:
        """Take tainted adapters out of service, all in the caller's transaction.

        A tainted canary loses its share (0 %); a tainted active adapter is retired
        and the newest untainted adapter that served before it becomes active again,
        or the base model when there is none: exactly a :meth:`rollback`, audited as one.
        """
        stopped: builtins.list[str] = []
        for row in self.list(statuses=[AdapterStatus.PENDING]):
            if row.tainted and row.canary_percent > 0:
                before = row.canary_percent
                row.canary_percent = 0.0
                self._changed(
                    row,
                    actor=actor,
                    action="adapter.canary",
                    reason=reason,
                    details={"from": before, "to": 0.0},
                )
                stopped.append(row.version)
        current = self.active()
        if current is None or not current.tainted:
            return Withdrawal(retired=None, now_active=None, canaries_stopped=stopped)
        target = self.rollback(actor=actor, reason=reason)
        return Withdrawal(
            retired=current.version,
            now_active=target.version if target else "base",
            canaries_stopped=stopped,
        )

    def _notify(self, version: str) -> None:
        """Tell listening replicas (PostgreSQL only; SQLite replicas poll)."""
        if self.s.get_bind().dialect.name == "postgresql":
            self.s.execute(text("SELECT pg_notify(:c, :v)"), {"c": ADAPTER_CHANNEL, "v": version})

    def _set(
        self,
        row: Adapter,
        to: AdapterStatus,
        *,
        actor: str,
        reason: str | None,
        rollback: bool = False,
    ) -> None:
        before = row.status
        row.status = to
        if to is not AdapterStatus.PENDING:
            row.canary_percent = 0.0
        self._changed(
            row,
            actor=actor,
            action="adapter.status",
            reason=reason,
            details={
                "from": before.value,
                "to": to.value,
                **({"rollback": True} if rollback else {}),
            },
        )

    def _changed(
        self,
        row: Adapter,
        *,
        actor: str,
        action: str,
        details: dict[str, Any],
        reason: str | None = None,
    ) -> None:
        """After a change of ``row``: stamp it, write the audit row, tell the replicas."""
        row.updated_at = utcnow()
        self.s.flush()
        Audit(self.s).record(
            actor=actor,
            action=action,
            target_type="adapter",
            target_id=row.version,
            reason=reason,
            details=details,
        )
        self._notify(row.version)
