"""notification preferences, per-camera notification settings and quiet hours

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Reserved in the chain so the families can land in any order; filled in by the change that adds the tables.
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
