"""alert destinations: e-mail recipients and webhook URL, global or per rule, changed at run time

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

One row per scope (`global`, or a rule's id with `rule_id` set, deleted with its rule). No row is
written here: until an operator stores destinations, the environment's (`VIGIL_ALERT_EMAIL_RECIPIENTS`,
`VIGIL_ALERT_WEBHOOK_URL`) are the global ones (app/alerts/destinations.py), so an upgrade changes
nothing about where alerts go.

Self-contained like 0001: the types mirror app/models/base.py without importing it. Runs on SQLite and
PostgreSQL (a new table only).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "alert_destinations",
        sa.Column("scope", sa.String(36), nullable=False),
        sa.Column("rule_id", sa.String(36), nullable=True),
        sa.Column("email_recipients", JSON, nullable=True),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name="fk_alert_destinations_rule_id_alert_rules", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("scope", name="pk_alert_destinations"),
    )


def downgrade() -> None:
    op.drop_table("alert_destinations")
