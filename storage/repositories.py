"""Repositories: the queries and writes the bot and the learning loop need.

Each repository wraps one :class:`~sqlalchemy.orm.Session` and owns one aggregate.
They never commit: the caller decides the transaction
(``with storage.db.transaction(factory) as s: Users(s).upsert(...)``), so a chat
turn's writes land together or not at all.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.errors import NotFound, StorageError
from storage.models import (
    Adapter,
    AdapterStatus,
    AuditEntry,
    Conversation,
    ConversationKind,
    DatasetSnapshot,
    Feedback,
    Flag,
    LearningRun,
    Message,
    ProcessedEvent,
    Reply,
    Role,
    RunStatus,
    SnapshotSource,
    User,
    Workspace,
    utcnow,
)


class InvalidTransition(StorageError):
    """An adapter status change that the lifecycle does not allow."""


ADAPTER_CHANNEL = "chatloop_adapters"
"""PostgreSQL NOTIFY channel: every registry change is announced on it at commit."""


class Workspaces:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get_or_create(self, platform: str, external_id: str, name: str | None = None) -> Workspace:
        def find() -> Workspace | None:
            return self.s.scalar(
                select(Workspace).filter_by(platform=platform, external_id=external_id)
            )

        row = find()
        if row is None:
            row = _add_unique(
                self.s, Workspace(platform=platform, external_id=external_id, name=name), find
            )
        elif name and row.name != name:
            row.name = name
        return row


T = TypeVar("T")


def _add_unique(session: Session, row: T, find: Callable[[], T | None]) -> T:
    """Insert ``row``; if a concurrent transaction inserted the same unique key first,
    return that row instead (two first messages of one person at once, on any replica)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing
    return row


class Users:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, platform: str, external_id: str) -> User | None:
        return self.s.scalar(select(User).filter_by(platform=platform, external_id=external_id))

    def upsert(
        self,
        platform: str,
        external_id: str,
        *,
        display_name: str | None = None,
        role: Role | None = None,
    ) -> User:
        """Create the user or refresh its name and role (roles come from configuration)."""
        row = self.get(platform, external_id)
        if row is None:
            new = User(
                platform=platform,
                external_id=external_id,
                display_name=display_name,
                role=role or Role.CUSTOMER,
            )
            row = _add_unique(self.s, new, lambda: self.get(platform, external_id))
            if row is new:
                return row
        if display_name and row.display_name != display_name:
            row.display_name = display_name
        if role is not None and row.role != role:
            row.role = role
        return row


class Conversations:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get_or_create(
        self,
        platform: str,
        channel_id: str,
        *,
        thread_id: str = "",
        kind: ConversationKind,
        workspace_id: int | None = None,
    ) -> Conversation:
        def find() -> Conversation | None:
            return self.s.scalar(
                select(Conversation).filter_by(
                    platform=platform, channel_id=channel_id, thread_id=thread_id
                )
            )

        row = find()
        if row is None:
            new = Conversation(
                platform=platform,
                channel_id=channel_id,
                thread_id=thread_id,
                kind=kind,
                workspace_id=workspace_id,
            )
            row = _add_unique(self.s, new, find)
        return row


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of stored history: ``role`` is "user" or "assistant"."""

    role: str
    text: str


class Messages:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        conversation_id: int,
        user_id: int,
        raw_text: str,
        platform_message_id: str | None = None,
    ) -> Message:
        row = Message(
            conversation_id=conversation_id,
            user_id=user_id,
            raw_text=raw_text,
            platform_message_id=platform_message_id,
            char_count=len(raw_text),
        )
        self.s.add(row)
        self.s.flush()
        return row

    def get(self, message_id: int) -> Message:
        row = self.s.get(Message, message_id)
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        return row

    def recent_turns(
        self,
        conversation_id: int,
        *,
        max_turns: int,
        before_message_id: int | None = None,
    ) -> list[Turn]:
        """The last answered exchanges of a conversation, oldest first.

        Each stored message with a completed reply gives a user turn and an
        assistant turn; messages that got no reply (rejected input) are skipped.
        At most ``max_turns`` turns are returned.
        """
        if max_turns <= 0:
            return []
        q = (
            select(Message.raw_text, Reply.text)
            .join(Reply, Reply.message_id == Message.id)
            .where(Message.conversation_id == conversation_id)
            .where(Message.raw_text.is_not(None), Reply.text.is_not(None))
            .order_by(Message.id.desc(), Reply.id.desc())
        )
        if before_message_id is not None:
            q = q.where(Message.id < before_message_id)
        pairs = self.s.execute(q.limit((max_turns + 1) // 2)).all()
        turns: list[Turn] = []
        for raw, reply in reversed(pairs):
            turns += [Turn("user", raw or ""), Turn("assistant", reply or "")]
        return turns[-max_turns:]

    def count(self) -> int:
        return int(self.s.scalar(select(func.count()).select_from(Message)) or 0)


class Replies:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        message_id: int,
        conversation_id: int,
        text: str,
        finish_reason: str,
        adapter_version: str,
        model_id: str,
        replica_id: str,
        latency_ms: float,
        ttft_ms: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        generation: dict[str, Any] | None = None,
        platform_message_id: str | None = None,
    ) -> Reply:
        row = Reply(
            message_id=message_id,
            conversation_id=conversation_id,
            text=text,
            finish_reason=finish_reason,
            adapter_version=adapter_version,
            model_id=model_id,
            replica_id=replica_id,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            generation=generation or {},
            platform_message_id=platform_message_id,
        )
        self.s.add(row)
        self.s.flush()
        return row

    def get(self, reply_id: int) -> Reply:
        row = self.s.get(Reply, reply_id)
        if row is None:
            raise NotFound(f"reply {reply_id} does not exist")
        return row

    def set_platform_message_id(self, reply_id: int, platform_message_id: str) -> None:
        self.get(reply_id).platform_message_id = platform_message_id

    def by_platform_message_id(self, platform: str, platform_message_id: str) -> Reply | None:
        return self.s.scalar(
            select(Reply)
            .join(Conversation, Conversation.id == Reply.conversation_id)
            .where(Conversation.platform == platform)
            .where(Reply.platform_message_id == platform_message_id)
        )

    def last_in_conversation(self, conversation_id: int) -> Reply | None:
        return self.s.scalar(
            select(Reply)
            .where(Reply.conversation_id == conversation_id)
            .order_by(Reply.id.desc())
            .limit(1)
        )


class FeedbackRepo:
    VALUES = (-1, 0, 1)

    def __init__(self, session: Session) -> None:
        self.s = session

    def vote(
        self,
        *,
        reply_id: int,
        user_id: int,
        value: int,
        source: str,
        reason: str | None = None,
    ) -> Feedback:
        """Record a vote; a later vote by the same user on the same reply replaces it.

        ``value`` is +1, -1, or 0 (retracted). A reason given with an earlier
        down-vote is kept unless a new one is given. A retraction only undoes a
        vote cast the same way: removing a 👍 reaction does not cancel a 👍 button.
        """
        if value not in self.VALUES:
            raise ValueError(f"a vote is -1, 0 or +1, not {value!r}")
        Replies(self.s).get(reply_id)
        row = self.s.scalar(select(Feedback).filter_by(reply_id=reply_id, user_id=user_id))
        if row is None:
            row = Feedback(
                reply_id=reply_id,
                user_id=user_id,
                value=value,
                source=source,
                reason=reason,
            )
            self.s.add(row)
        elif value == 0 and row.source != source:
            return row
        else:
            row.value = value
            row.source = source
            row.updated_at = utcnow()
            if reason is not None or value != -1:
                row.reason = reason
        self.s.flush()
        return row

    def for_reply(self, reply_id: int) -> list[Feedback]:
        return list(self.s.scalars(select(Feedback).filter_by(reply_id=reply_id)))

    def tally(self, reply_id: int) -> tuple[int, int]:
        votes = [f.value for f in self.for_reply(reply_id)]
        return votes.count(1), votes.count(-1)


class Flags:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        reply_id: int,
        user_id: int,
        reason: str | None,
        corrected_text: str | None,
    ) -> Flag:
        Replies(self.s).get(reply_id)
        row = Flag(
            reply_id=reply_id,
            user_id=user_id,
            reason=reason,
            corrected_text=corrected_text,
        )
        self.s.add(row)
        self.s.flush()
        return row

    def for_reply(self, reply_id: int) -> list[Flag]:
        return list(self.s.scalars(select(Flag).filter_by(reply_id=reply_id)))


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


class ProcessedEvents:
    """Platform event ids already handled; the database's unique constraint decides."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def claim(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for every redelivery.

        Safe across replicas: two concurrent claims race on the unique constraint
        and exactly one wins.
        """
        try:
            with self.s.begin_nested():
                self.s.add(ProcessedEvent(platform=platform, event_id=event_id))
        except IntegrityError:
            return False
        return True
