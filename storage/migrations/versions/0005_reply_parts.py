"""reply parts: every platform message a reply was posted as

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 20:55:00

A reply longer than one platform message is posted as several; each part's message id
is stored so that a vote, reaction or flag on any part reaches the reply. Replies
stored before this revision keep their one ``replies.platform_message_id`` (the part
with the buttons), which the lookup still reads.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reply_parts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reply_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("platform_message_id", sa.String(length=64), nullable=False),
        sa.Column("part_index", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reply_id"],
            ["replies.id"],
            name=op.f("fk_reply_parts_reply_id_replies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply_parts")),
        sa.UniqueConstraint(
            "platform",
            "channel_id",
            "platform_message_id",
            name=op.f("uq_reply_parts_platform"),
        ),
        sa.UniqueConstraint("reply_id", "part_index", name=op.f("uq_reply_parts_reply_id")),
    )


def downgrade() -> None:
    op.drop_table("reply_parts")
