"""worker operations tables: GPU samples, supervisor restart history, performance snapshots

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Self-contained like 0001 (no imports from `app`): the types mirror app/models/base.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gpu_stats",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("gpu_name", sa.String(255), nullable=True),
        sa.Column("utilization", sa.Float(), nullable=True),
        sa.Column("memory_used", sa.Integer(), nullable=True),
        sa.Column("memory_total", sa.Integer(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("power_usage", sa.Float(), nullable=True),
        sa.Column("inference_fps", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_gpu_stats"),
    )
    op.create_index("ix_gpu_stats_recorded_at", "gpu_stats", ["recorded_at"])
    op.create_index("ix_gpu_stats_gpu_recorded", "gpu_stats", ["gpu_index", "recorded_at"])

    op.create_table(
        "worker_restart_events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("worker_name", sa.String(64), nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_worker_restart_events"),
    )
    op.create_index("ix_worker_restart_events_timestamp", "worker_restart_events", ["timestamp"])
    op.create_index("ix_worker_restart_events_worker_ts", "worker_restart_events", ["worker_name", "timestamp"])

    op.create_table(
        "performance_snapshots",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_performance_snapshots"),
    )
    op.create_index("ix_performance_snapshots_timestamp", "performance_snapshots", ["timestamp"])


def downgrade() -> None:
    for table in ("performance_snapshots", "worker_restart_events", "gpu_stats"):
        op.drop_table(table)
