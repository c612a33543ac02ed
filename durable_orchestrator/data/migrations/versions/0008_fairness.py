"""per-user running bound: tasks.max_running, tasks.admitted_at, api_keys.max_running_tasks

Revision ID: fairness
Revises: client_plans
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "fairness"
down_revision = "client_plans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("max_running", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("max_running_tasks", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "max_running_tasks")
    op.drop_column("tasks", "admitted_at")
    op.drop_column("tasks", "max_running")
