"""notification preferences, per-camera notification settings and quiet hours

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

New tables only. No row is written: without a preferences row the defaults apply
(enabled, every risk level), a camera without a row notifies, and there are no quiet hours, so an
upgrade changes nothing about delivery. `held_notifications` lists alerts whose deliveries quiet
hours held back until they end (`VIGIL_QUIET_HOURS_HELD=send`).

Self-contained like 0001: the types mirror app/models/base.py without importing it. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notification_preferences",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("sound", sa.String(16), nullable=False),
        sa.Column("risk_filters", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notification_preferences"),
    )
    op.create_table(
        "camera_notification_settings",
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("risk_threshold", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.id"],
            name="fk_camera_notification_settings_camera_id_cameras",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("camera_id", name="pk_camera_notification_settings"),
    )
    op.create_table(
        "quiet_hours_periods",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("start_time", sa.String(8), nullable=False),
        sa.Column("end_time", sa.String(8), nullable=False),
        sa.Column("days", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quiet_hours_periods"),
    )
    op.create_table(
        "held_notifications",
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("held_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_held_notifications_alert_id_alerts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("alert_id", name="pk_held_notifications"),
    )
    op.create_index("ix_held_notifications_held_at", "held_notifications", ["held_at"])


def downgrade() -> None:
    op.drop_index("ix_held_notifications_held_at", table_name="held_notifications")
    op.drop_table("held_notifications")
    op.drop_table("quiet_hours_periods")
    op.drop_table("camera_notification_settings")
    op.drop_table("notification_preferences")
