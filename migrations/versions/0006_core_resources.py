"""core resources API: camera enabled flag, event review notes, the upload record, listing indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

* `cameras.enabled` (existing cameras stay enabled), `events.reviewed_at` and `events.notes`.
* `uploads`: one row per file the watcher accepts (app/models/upload.py), for "no upload left behind".
* Composite indexes matching the filters and the newest-first order (with `id` as the tie-breaker a
  cursor needs) of GET /api/events, /api/detections and /api/batches, carrying the other filter
  columns after those so that counts and offsets are read from the index alone; each replaces an index it
  extends (`events.camera_id`, `detections(camera_id, detected_at)`, `detections.batch_id`,
  `detection_batches.camera_id`), so writers keep the same number of indexes to maintain, plus
  `detections.job_id`, which every detection job looks itself up by.

Self-contained like 0001: the types mirror app/models/base.py without importing it. Runs on SQLite
(ADD/DROP COLUMN are native there since 3.35, no table rebuild) and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# (name, table, columns) created by this revision, and the ones they replace.
NEW_INDEXES = [
    ("ix_events_started", "events", ["started_at", "id", "camera_id", "risk_level", "reviewed", "risk_score"]),
    ("ix_events_camera_started", "events", ["camera_id", "started_at", "id", "risk_level", "reviewed", "risk_score"]),
    ("ix_events_level_started", "events", ["risk_level", "started_at", "id", "camera_id", "reviewed", "risk_score"]),
    ("ix_events_reviewed_started", "events", ["reviewed", "started_at", "id", "camera_id", "risk_level", "risk_score"]),
    ("ix_detections_type_detected", "detections", ["object_type", "detected_at", "id", "camera_id", "confidence"]),
    ("ix_detections_batch_type", "detections", ["batch_id", "object_type"]),
    ("ix_detections_job_id", "detections", ["job_id"]),
    ("ix_detection_batches_camera_closed", "detection_batches", ["camera_id", "closed_at"]),
]
REPLACED_INDEXES = [
    ("ix_events_camera_id", "events", ["camera_id"]),
    ("ix_detections_batch_id", "detections", ["batch_id"]),
    ("ix_detection_batches_camera_id", "detection_batches", ["camera_id"]),
]


def upgrade() -> None:
    op.add_column("cameras", sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("events", sa.Column("reviewed_at", TS, nullable=True))
    op.add_column("events", sa.Column("notes", sa.Text(), nullable=True))

    op.create_table(
        "uploads",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=True),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["camera_id"], ["cameras.id"], name="fk_uploads_camera_id_cameras", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_uploads"),
        sa.UniqueConstraint("path", "size", "mtime_ns", name="uq_uploads_path"),
    )
    op.create_index("ix_uploads_camera_seen", "uploads", ["camera_id", "first_seen_at"])
    op.create_index("ix_uploads_outcome_seen", "uploads", ["outcome", "first_seen_at"])
    op.create_index("ix_uploads_file_hash", "uploads", ["file_hash"])

    for name, table, columns in NEW_INDEXES:
        op.create_index(name, table, columns)
    for name, table, _columns in REPLACED_INDEXES:
        op.drop_index(name, table_name=table)
    # (camera_id, detected_at) gains `id` and the other filter columns: same name, so it is dropped and made again.
    op.drop_index("ix_detections_camera_detected", table_name="detections")
    op.create_index(
        "ix_detections_camera_detected", "detections", ["camera_id", "detected_at", "id", "object_type", "confidence"]
    )


def downgrade() -> None:
    op.drop_index("ix_detections_camera_detected", table_name="detections")
    op.create_index("ix_detections_camera_detected", "detections", ["camera_id", "detected_at"])
    for name, table, columns in REPLACED_INDEXES:
        op.create_index(name, table, columns)
    for name, table, _columns in NEW_INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_table("uploads")
    op.drop_column("events", "notes")
    op.drop_column("events", "reviewed_at")
    op.drop_column("cameras", "enabled")
