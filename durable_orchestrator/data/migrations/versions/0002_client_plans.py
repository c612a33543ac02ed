"""where a task's plan came from

Revision ID: client_plans
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "client_plans"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("plan_source", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "plan_source")
