"""where a task's plan came from, and the lineage of reruns

Revision ID: client_plans
Revises: mcp
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "client_plans"
down_revision = "mcp"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("plan_source", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("parent_task_id", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("rerun_of_step", sa.Integer(), nullable=True))
    op.create_foreign_key(
        "tasks_parent_task_id_fkey",
        "tasks",
        "tasks",
        ["parent_task_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_tasks_parent",
        "tasks",
        ["parent_task_id"],
        unique=False,
        postgresql_where=sa.text("parent_task_id IS NOT NULL"),
    )
    op.add_column("steps", sa.Column("reused_from_task_id", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("steps", "reused_from_task_id")
    op.drop_index("ix_tasks_parent", table_name="tasks")
    op.drop_constraint("tasks_parent_task_id_fkey", "tasks", type_="foreignkey")
    op.drop_column("tasks", "rerun_of_step")
    op.drop_column("tasks", "parent_task_id")
    op.drop_column("tasks", "plan_source")
