"""provenance labels for the prompt-injection policy

Revision ID: toolsafety
Revises: money
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "toolsafety"
down_revision = "money"
branch_labels = None
depends_on = None

_COLUMNS = [
    ("tasks", "plan_labels"),
    ("tool_calls", "context_labels"),
    ("tool_calls", "result_labels"),
    ("short_term_memory", "labels"),
]


def upgrade() -> None:
    for table, column in _COLUMNS:
        op.add_column(
            table,
            sa.Column(column, postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        )


def downgrade() -> None:
    for table, column in reversed(_COLUMNS):
        op.drop_column(table, column)
