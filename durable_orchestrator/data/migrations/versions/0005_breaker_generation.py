"""circuit breaker generation

A breaker's verdicts (success, failure) count only for the state their permit was issued
under; the generation, bumped on every transition, is how a late verdict is recognised.

Revision ID: breaker_generation
Revises: toolsafety
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "breaker_generation"
down_revision = "toolsafety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "circuit_breakers",
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("circuit_breakers", "generation")
