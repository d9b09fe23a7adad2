"""snapshot watermarks for late votes and flags

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("flag_until_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_snapshots", schema=None) as batch_op:
        batch_op.drop_column("flag_until_id")
        batch_op.drop_column("feedback_until")
