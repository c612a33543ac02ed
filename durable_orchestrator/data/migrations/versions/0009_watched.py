"""live text only for watched tasks: tasks.watched_until

Revision ID: watched
Revises: fairness
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "watched"
down_revision = "fairness"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("watched_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "watched_until")
