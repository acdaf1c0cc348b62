"""Notification preferences (System Operations API "Notification Preferences"): the global switch and risk filters,
per-camera settings, quiet-hours periods, and the alerts held back until quiet hours end."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow

PREFERENCES_ROW = 1


class NotificationPreferences(Base):
    """One row (id 1), absent until an operator stores preferences: until then the defaults apply
    (enabled, sound `default`, every risk level), so an upgrade changes nothing about delivery."""

    __tablename__ = "notification_preferences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    sound: Mapped[str] = mapped_column(String(16), default="default")
    risk_filters: Mapped[list] = mapped_column(JSONType, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class CameraNotificationSetting(Base):
    """A camera's override; a camera without a row notifies (enabled, threshold 0). Deleted with its camera."""

    __tablename__ = "camera_notification_settings"

    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    risk_threshold: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class QuietHoursPeriod(Base):
    """A period in site time (`VIGIL_SITE_TIMEZONE`): `days` are mon..sun, times HH:MM:SS; an end at
    or before the start wraps midnight and belongs to the day it starts on (as alert rule schedules)."""

    __tablename__ = "quiet_hours_periods"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    label: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[str] = mapped_column(String(8))
    end_time: Mapped[str] = mapped_column(String(8))
    days: Mapped[list] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HeldNotification(Base):
    """An alert whose deliveries quiet hours held back, to be sent once they end
    (`VIGIL_QUIET_HOURS_HELD=send`); the service host's `held_releaser` works through these rows."""

    __tablename__ = "held_notifications"

    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
