"""pipeline tables (issue 4)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Reserved slot in the revision chain so the pipeline, worker-operations and observability work can
land independently; filled in by that work.
"""
from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
