"""AI monitoring rollups, metric alert rules and alerts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Self-contained like 0001: the types mirror app/models/monitoring.py without importing it. New tables only,
so it runs on SQLite and PostgreSQL alike; rollups start empty and fill as jobs are archived.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    big = sa.BigInteger()
    op.create_table(
        "monitoring_rollups",
        sa.Column("span", sa.Integer(), nullable=False),
        sa.Column("bucket", big, nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("requests", big, nullable=False),
        sa.Column("successes", big, nullable=False),
        sa.Column("failures", big, nullable=False),
        sa.Column("latency_sum_ms", sa.Float(), nullable=False),
        sa.Column("latency_max_ms", sa.Float(), nullable=False),
        sa.Column("input_tokens", big, nullable=False),
        sa.Column("output_tokens", big, nullable=False),
        sa.Column("err_timeout", big, nullable=False),
        sa.Column("err_rate_limit", big, nullable=False),
        sa.Column("err_model_error", big, nullable=False),
        sa.Column("err_rejected", big, nullable=False),
        sa.Column("err_other", big, nullable=False),
        sa.Column("h0", sa.BigInteger(), nullable=False),
        sa.Column("h1", sa.BigInteger(), nullable=False),
        sa.Column("h2", sa.BigInteger(), nullable=False),
        sa.Column("h3", sa.BigInteger(), nullable=False),
        sa.Column("h4", sa.BigInteger(), nullable=False),
        sa.Column("h5", sa.BigInteger(), nullable=False),
        sa.Column("h6", sa.BigInteger(), nullable=False),
        sa.Column("h7", sa.BigInteger(), nullable=False),
        sa.Column("h8", sa.BigInteger(), nullable=False),
        sa.Column("h9", sa.BigInteger(), nullable=False),
        sa.Column("h10", sa.BigInteger(), nullable=False),
        sa.Column("h11", sa.BigInteger(), nullable=False),
        sa.Column("h12", sa.BigInteger(), nullable=False),
        sa.Column("h13", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("span", "bucket", "agent_id", "model", name="pk_monitoring_rollups"),
    )
    op.create_index("ix_monitoring_rollups_span_bucket", "monitoring_rollups", ["span", "bucket"])
    op.create_table(
        "monitoring_alert_rules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(8), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("duration_minutes", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("recipients", JSON, nullable=False),
        sa.Column("auto_remediate", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitoring_alert_rules"),
    )
    op.create_table(
        "monitoring_alerts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("rule_id", sa.String(36), nullable=True),
        sa.Column("rule_name", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(8), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("current", sa.Float(), nullable=True),
        sa.Column("triggered_at", TS, nullable=False),
        sa.Column("last_occurrence", TS, nullable=False),
        sa.Column("occurrence_count", sa.Integer(), nullable=False),
        sa.Column("acknowledged_by", sa.String(255), nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.String(255), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("root_cause", sa.Text(), nullable=True),
        sa.Column("remediation_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitoring_alerts"),
    )
    op.create_index("ix_monitoring_alerts_status", "monitoring_alerts", ["status"])
    op.create_index("ix_monitoring_alerts_agent_rule", "monitoring_alerts", ["agent_id", "rule_id"])


def downgrade() -> None:
    op.drop_index("ix_monitoring_alerts_agent_rule", table_name="monitoring_alerts")
    op.drop_index("ix_monitoring_alerts_status", table_name="monitoring_alerts")
    op.drop_table("monitoring_alerts")
    op.drop_table("monitoring_alert_rules")
    op.drop_index("ix_monitoring_rollups_span_bucket", table_name="monitoring_rollups")
    op.drop_table("monitoring_rollups")
