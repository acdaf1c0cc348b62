"""initial schema: cameras, detections, events, jobs, logs, runtime config, audit log

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Self-contained on purpose: it does not import the models, so later model changes cannot rewrite
history. The types mirror app/models/base.py (aware UTC datetimes, JSONB on PostgreSQL, 64-bit ids
that still autoincrement on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("folder_path", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cameras"),
    )

    op.create_table(
        "detections",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("file_path", sa.String(1024), nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=True),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("bbox_x", sa.Integer(), nullable=False),
        sa.Column("bbox_y", sa.Integer(), nullable=False),
        sa.Column("bbox_width", sa.Integer(), nullable=False),
        sa.Column("bbox_height", sa.Integer(), nullable=False),
        sa.Column("thumbnail_path", sa.String(1024), nullable=True),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("seen_at", TS, nullable=True),
        sa.Column("detected_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_detections_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_detections"),
    )
    op.create_index("ix_detections_batch_id", "detections", ["batch_id"])
    op.create_index("ix_detections_camera_detected", "detections", ["camera_id", "detected_at"])
    op.create_index("ix_detections_detected_at", "detections", ["detected_at"])

    op.create_table(
        "events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("risk_score", sa.Integer(), nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=False),
        sa.Column("detection_ids", JSON, nullable=False),
        sa.Column("detection_count", sa.Integer(), nullable=False),
        sa.Column("analyser", sa.String(64), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("reviewed", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["camera_id"], ["cameras.id"], name="fk_events_camera_id_cameras", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("batch_id", name="uq_events_batch_id"),
    )
    op.create_index("ix_events_camera_id", "events", ["camera_id"])
    op.create_index("ix_events_created_at", "events", ["created_at"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("kwargs", JSON, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_idempotency_key", "jobs", ["idempotency_key"])
    op.create_index("ix_jobs_queue_state_finished", "jobs", ["queue", "state", "finished_at"])
    op.create_index("ix_jobs_state_finished", "jobs", ["state", "finished_at"])
    op.create_index("ix_jobs_task_name", "jobs", ["task_name"])

    op.create_table(
        "logs",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("extra", JSON, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_logs"),
    )
    for column in ("camera_id", "component", "job_id", "level", "request_id", "timestamp"):
        op.create_index(f"ix_logs_{column}", "logs", [column])

    op.create_table(
        "runtime_config",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_runtime_config"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("details", JSON, nullable=True),
        sa.Column("ip_address", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_timestamp", "audit_log", ["timestamp"])


def downgrade() -> None:
    for table in ("audit_log", "runtime_config", "logs", "jobs", "events", "detections", "cameras"):
        op.drop_table(table)
