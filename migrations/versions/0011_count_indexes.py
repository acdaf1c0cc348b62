"""narrow count indexes for the events and detections listings on PostgreSQL

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

An exact `count` comes with every page of GET /api/events and /api/detections. On PostgreSQL a count
of one camera's (or one object type's, or the review queue's) rows reads a narrow index faster than
the wide listing indexes of 0006: B-tree deduplication keeps each distinct key once with its row ids.
SQLite has no deduplication and counts the wide indexes fast enough, so nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_detections_camera_count", "detections", ["camera_id"]),
    ("ix_detections_type_count", "detections", ["object_type"]),
    ("ix_events_reviewed_level_count", "events", ["reviewed", "risk_level"]),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
