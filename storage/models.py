"""The database schema as SQLAlchemy 2.0 typed models.

Tables and what they own:

- ``workspaces``       a Slack team, a Discord guild, the terminal ("console")
- ``users``            a person on a platform, with a role (customer, staff, maintainer)
- ``conversations``    a DM, a channel thread or a terminal session
- ``messages``         what a person wrote: raw text and anonymized text in separate columns
- ``replies``          what the bot answered, with the adapter version, generation settings,
                       latency, token counts and serving replica that produced it
- ``reply_parts``      the platform messages a reply was posted as (a long reply is split
                       into several); a vote on any of them finds the reply
- ``feedback``         one up/down vote per user per reply (last vote wins; 0 = retracted)
- ``flags``            a staff member's "this answer is wrong" with reason and correct answer
- ``adapters``         the adapter registry (version, base model, parent, snapshot, metrics, status)
- ``dataset_snapshots`` immutable training sets (hash, counts, path, selection watermarks)
                       and ``snapshot_sources``, whose users' data each one holds
- ``learning_runs``    one run of the learning loop
- ``eval_items``       the frozen evaluation set maintainers curate (never trained on)
- ``processed_events`` platform event ids already handled (idempotency; unique per platform)
- ``audit_log``        who changed what, when and why (adapter status changes, erasures, ...)
- ``memory_entries``   the answer memory: approved question/answer pairs per workspace, with
                       provenance (source, author, conversation, reply, flag), status and the
                       stored embedding (model id + float32 bytes)

Enumerations are stored as short strings with CHECK constraints, so SQLite and
PostgreSQL hold the same values.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    MAINTAINER = "maintainer"

    @property
    def rank(self) -> int:
        return {"customer": 0, "staff": 1, "maintainer": 2}[self.value]


class ConversationKind(enum.StrEnum):
    DM = "dm"
    CHANNEL = "channel"
    THREAD = "thread"
    CONSOLE = "console"


class AdapterStatus(enum.StrEnum):
    TRAINING = "training"
    CANDIDATE = "candidate"
    REJECTED = "rejected"
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"


class MemorySource(enum.StrEnum):
    """Where an answer-memory entry came from."""

    CORRECTION = "correction"  # a staff flag with the corrected answer
    CURATED = "curated"  # a maintainer added it (chat, CLI, import)
    RATED = "rated"  # a highly rated answer that passed the cleaner's checks


class MemoryStatus(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.CUSTOMER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("platform", "channel_id", "thread_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id"))
    channel_id: Mapped[str] = mapped_column(String(64))
    # "" for a DM or channel without a thread, so the unique constraint holds (NULLs differ)
    thread_id: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[ConversationKind] = mapped_column(_enum(ConversationKind, "conversation_kind"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_user", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    platform_message_id: Mapped[str | None] = mapped_column(String(64))
    # raw and anonymized text are kept apart: training reads only anon_text;
    # retention clears raw_text once anon_text exists; erasure clears both.
    raw_text: Mapped[str | None] = mapped_column(Text)
    anon_text: Mapped[str | None] = mapped_column(Text)
    anonymized_at: Mapped[datetime | None] = mapped_column()
    char_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    replies: Mapped[list[Reply]] = relationship(back_populates="message")


class Reply(Base):
    __tablename__ = "replies"
    __table_args__ = (
        Index("ix_replies_conversation_created", "conversation_id", "created_at"),
        Index("ix_replies_adapter_version", "adapter_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    platform_message_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)
    anon_text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str] = mapped_column(String(16))
    adapter_version: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(200))
    replica_id: Mapped[str] = mapped_column(String(100))
    generation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="replies")


class ReplyPart(Base):
    """One platform message showing (part of) a reply, in posting order.

    Unique per (platform, channel, message id): a Slack ``ts`` is unique only within
    its channel (a Discord snowflake is unique everywhere).
    """

    __tablename__ = "reply_parts"
    __table_args__ = (
        UniqueConstraint("platform", "channel_id", "platform_message_id"),
        UniqueConstraint("reply_id", "part_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reply_id: Mapped[int] = mapped_column(ForeignKey("replies.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str] = mapped_column(String(64))
    platform_message_id: Mapped[str] = mapped_column(String(64))
    part_index: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("reply_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reply_id: Mapped[int] = mapped_column(ForeignKey("replies.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    value: Mapped[int] = mapped_column(SmallInteger)  # +1 up, -1 down, 0 retracted
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # button, reaction, command
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Flag(Base):
    __tablename__ = "flags"

    id: Mapped[int] = mapped_column(primary_key=True)
    reply_id: Mapped[int] = mapped_column(ForeignKey("replies.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str | None] = mapped_column(Text)
    corrected_text: Mapped[str | None] = mapped_column(Text)
    corrected_anon_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetSnapshot(Base):
    __tablename__ = "dataset_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(500))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    since_message_id: Mapped[int | None] = mapped_column(BigInteger)
    until_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # watermarks of late judgements: the newest vote change and the newest flag seen
    # when the snapshot was selected (the next snapshot re-selects replies judged later)
    feedback_until: Mapped[datetime | None] = mapped_column()
    flag_until_id: Mapped[int | None] = mapped_column(BigInteger)
    tainted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SnapshotSource(Base):
    """Which users' data went into a snapshot (so an erasure can taint it)."""

    __tablename__ = "snapshot_sources"
    __table_args__ = (UniqueConstraint("snapshot_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("dataset_snapshots.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    messages: Mapped[int] = mapped_column(Integer, default=0)


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    base_model: Mapped[str] = mapped_column(String(200))
    parent_version: Mapped[str | None] = mapped_column(String(64))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshots.id"))
    path: Mapped[str | None] = mapped_column(String(500))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[AdapterStatus] = mapped_column(
        _enum(AdapterStatus, "adapter_status"), default=AdapterStatus.TRAINING
    )
    canary_percent: Mapped[float] = mapped_column(Float, default=0.0)
    tainted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LearningRun(Base):
    __tablename__ = "learning_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.RUNNING
    )
    trigger: Mapped[str] = mapped_column(String(32))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshots.id"))
    candidate_version: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class EvalItem(Base):
    """A frozen evaluation question curated by maintainers; never used for training."""

    __tablename__ = "eval_items"
    __table_args__ = (UniqueConstraint("content_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    expected_answer: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcessedEvent(Base):
    """A platform event id seen once; the unique constraint is the idempotency guard."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("platform", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class MemoryEntry(Base):
    """An approved question/answer pair of the answer memory.

    Provenance: ``source``, ``created_by`` (principal, e.g. ``slack:U1`` or ``cli:alice``)
    and, where the entry came from a chat, the user, conversation, message, reply and
    flag behind it. The links to people cascade: erasing the person who asked the
    question, wrote the entry or last edited it removes the entry with them.
    ``embedding`` holds float32 little-endian bytes of ``embedding_model``'s vector of
    the entry (question and answer), so an index is rebuilt without re-embedding (and
    re-embedded when the configured model differs).
    """

    __tablename__ = "memory_entries"
    __table_args__ = (
        Index("ix_memory_entries_workspace_status", "workspace_id", "status"),
        Index("ix_memory_entries_question_hash", "question_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    question_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[MemorySource] = mapped_column(_enum(MemorySource, "memory_source"))
    status: Mapped[MemoryStatus] = mapped_column(
        _enum(MemoryStatus, "memory_status"), default=MemoryStatus.ACTIVE
    )
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    asker_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    reply_id: Mapped[int | None] = mapped_column(ForeignKey("replies.id", ondelete="CASCADE"))
    flag_id: Mapped[int | None] = mapped_column(ForeignKey("flags.id", ondelete="SET NULL"))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
