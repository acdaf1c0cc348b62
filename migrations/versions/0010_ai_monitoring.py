"""AI monitoring rollups, metric alert rules and alerts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Reserved in the chain so the families can land in any order; filled in by the change that adds the tables.
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
