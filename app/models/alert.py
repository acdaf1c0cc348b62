"""Alert rules, the alerts they raise, and the cooldown clock per rule and camera (System Operations API
"Alert Rules")."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


def new_id() -> str:
    return str(uuid.uuid4())


class AlertRule(Base):
    """When an event deserves a notification. `object_types`, `camera_ids` and `schedule` are null
    for "any"; the schedule is `{days, start_time, end_time}` and may wrap midnight."""

    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    severity: Mapped[str] = mapped_column(String(16))  # low | medium | high | critical
    risk_threshold: Mapped[int] = mapped_column(Integer)
    object_types: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    camera_ids: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    schedule: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    cooldown_seconds: Mapped[int] = mapped_column(Integer, default=300)
    # Only events marked `is_anomaly` match (app/pipeline/anomaly.py).
    anomaly_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    channels: Mapped[list] = mapped_column(JSONType, default=list)  # email | webhook | push
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Alert(Base):
    """One rule fired for one event. Unique per (rule, event), so a retried or repeated evaluation
    never raises a second alert. `deliveries` holds one entry per channel (`status`: queued,
    delivered, failed, unavailable; the notification `job_id`; `error`). The alert outlives its
    rule (`rule_id` becomes null, `rule_name` stays) but not its event (retention deletes both)."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("rule_id", "event_id", name="uq_alerts_rule_id_event_id"),
        Index("ix_alerts_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    rule_id: Mapped[str | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"), nullable=True)
    rule_name: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("events.id", ondelete="CASCADE"), index=True)
    camera_id: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    risk_score: Mapped[int] = mapped_column(Integer)
    # pending | delivered | acknowledged | dismissed | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    channels: Mapped[list] = mapped_column(JSONType, default=list)
    deliveries: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    dismissed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AlertCooldown(Base):
    """The event time of the last alert a rule raised for a camera; app/alerts/alerts.py claims
    it with one conditional UPDATE, which is what makes the cooldown hold across workers."""

    __tablename__ = "alert_cooldowns"

    rule_id: Mapped[str] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_fired_at: Mapped[datetime] = mapped_column(UTCDateTime)
