"""observability tables: log exports, and an index for the platform API's log search by user

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Self-contained like 0001: the types mirror app/models/base.py without importing it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "log_exports",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("file_name", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_log_exports"),
    )
    op.create_index("ix_log_exports_created_at", "log_exports", ["created_at"])
    op.create_index("ix_logs_user_id", "logs", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_logs_user_id", table_name="logs")
    op.drop_index("ix_log_exports_created_at", table_name="log_exports")
    op.drop_table("log_exports")
