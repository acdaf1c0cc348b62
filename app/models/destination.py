"""Where alerts are sent (runtime configuration, PUT /api/alerts/destinations and .../rules/{id}/destinations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow

GLOBAL_SCOPE = "global"


class AlertDestination(Base):
    """The e-mail recipients and webhook URL of one scope: `global` (every rule) or one rule's id.

    Stored in SQL rather than read from the environment so that an operator changes them at run time
    and every process (the API that warns about a rule, the notification workers that dispatch its
    alerts) sees the same truth at once. The global row is absent until an operator stores one; until
    then the environment's `VIGIL_ALERT_EMAIL_RECIPIENTS` / `VIGIL_ALERT_WEBHOOK_URL` are the global
    destinations. In the global row a null field means "none"; in a rule's row it means "the global
    one". `rule_id` repeats a rule scope's key so that deleting the rule deletes its row (ON DELETE
    CASCADE) without the service having to remember to.
    """

    __tablename__ = "alert_destinations"

    scope: Mapped[str] = mapped_column(String(36), primary_key=True)  # "global" or the rule's id
    rule_id: Mapped[str | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=True)
    email_recipients: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
