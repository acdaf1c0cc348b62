"""pipeline tables: detection_batches

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

A closed detection batch's durable record (camera, window, close reason, stage timestamps, the
analysis job and the event it became). Self-contained like 0001: no imports from `app`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "detection_batches",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("close_reason", sa.String(16), nullable=False),
        sa.Column("detection_count", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", TS, nullable=True),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("last_detection_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=False),
        sa.Column("analysis_job_id", sa.String(64), nullable=True),
        sa.Column("analysis_started_at", TS, nullable=True),
        sa.Column("analysed_at", TS, nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_detection_batches_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_detection_batches"),
    )
    op.create_index("ix_detection_batches_camera_id", "detection_batches", ["camera_id"])
    op.create_index("ix_detection_batches_closed_at", "detection_batches", ["closed_at"])


def downgrade() -> None:
    op.drop_table("detection_batches")
