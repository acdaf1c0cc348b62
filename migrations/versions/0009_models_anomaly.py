"""model registry usage and per-camera anomaly baselines

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Reserved in the chain so the families can land in any order; filled in by the change that adds the tables.
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
