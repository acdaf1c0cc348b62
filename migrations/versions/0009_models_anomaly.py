"""model registry usage and per-camera anomaly baselines

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Anomaly detection: `anomaly_baselines`, one row per (camera, hour of the week, metric)
holding an exponentially weighted mean and variance; each event's `anomaly_score` and `is_anomaly`;
an alert rule's `anomaly_only` criterion. Existing events are not anomalous and existing rules match
as before (server defaults false). Model usage (inference counts, latencies) lives in Redis and needs
no table.

Self-contained like 0001: the types mirror app/models/base.py without importing it. Runs on SQLite
and PostgreSQL (new columns with server defaults and a new table).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("events", sa.Column("anomaly_score", sa.Float(), nullable=True))
    op.add_column("events", sa.Column("is_anomaly", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("alert_rules", sa.Column("anomaly_only", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "anomaly_baselines",
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("variance", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_anomaly_baselines_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("camera_id", "slot", "metric", name="pk_anomaly_baselines"),
    )


def downgrade() -> None:
    op.drop_table("anomaly_baselines")
    op.drop_column("alert_rules", "anomaly_only")
    op.drop_column("events", "is_anomaly")
    op.drop_column("events", "anomaly_score")
