"""alert rules, alerts and the cooldown clock per rule and camera (System Operations API "Alert Rules")

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

Self-contained like 0001: the types mirror app/models/base.py without importing it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("risk_threshold", sa.Integer(), nullable=False),
        sa.Column("object_types", JSON, nullable=True),
        sa.Column("camera_ids", JSON, nullable=True),
        sa.Column("schedule", JSON, nullable=True),
        sa.Column("cooldown_seconds", sa.Integer(), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("rule_id", sa.String(36), nullable=True),
        sa.Column("rule_name", sa.String(255), nullable=False),
        sa.Column("event_id", BIGID, nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("risk_score", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("deliveries", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("dismissed_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name="fk_alerts_rule_id_alert_rules", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_alerts_event_id_events", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("rule_id", "event_id", name="uq_alerts_rule_id_event_id"),
    )
    op.create_index("ix_alerts_camera_id", "alerts", ["camera_id"])
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_index("ix_alerts_event_id", "alerts", ["event_id"])
    op.create_index("ix_alerts_status_created", "alerts", ["status", "created_at"])

    op.create_table(
        "alert_cooldowns",
        sa.Column("rule_id", sa.String(36), nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("last_fired_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name="fk_alert_cooldowns_rule_id_alert_rules", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("rule_id", "camera_id", name="pk_alert_cooldowns"),
    )


def downgrade() -> None:
    for table in ("alert_cooldowns", "alerts", "alert_rules"):
        op.drop_table(table)
