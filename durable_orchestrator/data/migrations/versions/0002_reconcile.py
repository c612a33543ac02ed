"""events numbered per task in commit order; tasks remember their task queue

Revision ID: reconcile
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "reconcile"
down_revision = "0001"
branch_labels = None
depends_on = None

_UNFINISHED = "status NOT IN ('completed', 'failed', 'cancelled')"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("task_queue", sa.Text(), nullable=True))
    op.add_column(
        "tasks", sa.Column("last_event_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_index(
        "ix_tasks_unfinished",
        "tasks",
        ["task_queue", "updated_at"],
        postgresql_where=sa.text(_UNFINISHED),
    )
    op.add_column("events", sa.Column("seq", sa.BigInteger(), nullable=True))
    # Existing events keep their order: numbered by id within each task.
    op.execute(
        "UPDATE events e SET seq = n.seq FROM (SELECT id, row_number() OVER "
        "(PARTITION BY task_id ORDER BY id) AS seq FROM events) n WHERE e.id = n.id"
    )
    op.execute(
        "UPDATE tasks t SET last_event_seq = m.seq FROM (SELECT task_id, max(seq) AS seq "
        "FROM events GROUP BY task_id) m WHERE t.id = m.task_id"
    )
    op.alter_column("events", "seq", nullable=False)
    op.drop_index("ix_events_task_id", table_name="events")
    op.create_unique_constraint("uq_events_task_seq", "events", ["task_id", "seq"])
    op.drop_column("events", "writer_xid")


def downgrade() -> None:
    op.execute(
        "ALTER TABLE events ADD COLUMN writer_xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
    )
    op.drop_constraint("uq_events_task_seq", "events", type_="unique")
    op.create_index("ix_events_task_id", "events", ["task_id", "id"], unique=False)
    op.drop_column("events", "seq")
    op.drop_index("ix_tasks_unfinished", table_name="tasks")
    op.drop_column("tasks", "last_event_seq")
    op.drop_column("tasks", "task_queue")
