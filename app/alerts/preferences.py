"""Notification preferences (System Operations API "Notification Preferences"): what the operator set, and the
delivery decision that follows it.

An alert is always recorded; its deliveries are decided once, when it is dispatched
(app/alerts/alerts.py), at the alert's own creation time, so a retried dispatch decides as the first one
did. The checks, in order, and the reason a held-back delivery records (`suppressed` on the alert):

1. `disabled`: the global switch is off.
2. `camera_disabled`: the alert's camera has notifications off.
3. `below_camera_threshold`: the event's risk score is below the camera's `risk_threshold`.
4. `risk_filtered`: the event's risk level (low / medium / high / critical, the scale of
   GET /api/system/severity) is not among `risk_filters`.
5. `quiet_hours`: the alert was raised inside a quiet-hours period, read in `VIGIL_SITE_TIMEZONE`
   with the alert rule schedules' semantics (an end at or before the start wraps midnight and belongs to
   the day it starts on; equal start and end cover the whole day; overlapping periods are allowed).
   A critical alert (its rule's severity or its event's risk level is `critical`) breaks through when
   `VIGIL_QUIET_HOURS_CRITICAL_BREAKTHROUGH` is on (the default): a break-in at 03:00 must wake someone.

The first four are the operator saying "not this one": nothing is ever sent for it. Quiet hours only say
"not now": with `VIGIL_QUIET_HOURS_HELD=drop` (the default: a morning flood of night alerts helps nobody,
and every one of them is in the console) nothing is sent either; with `send`, the alert is listed in
`held_notifications` and the service host's `held_releaser` (workers/host/services/held_releaser.py)
dispatches it once no period covers the current time, deciding again then (preferences changed in between
still count; an alert acknowledged or dismissed meanwhile is not sent).

Why SQL and not Redis: the notification workers that decide, the API that changes preferences and the
service host that releases must share one truth that survives restarts, next to the alerts it governs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.alerts.rules import DAYS, TIME_OF_DAY, DayName, Name, Severity, in_schedule, site_zone
from app.core.db import session_scope
from app.core.errors import Conflict, NotFound, checked
from app.core.settings import Settings
from app.core.time import iso_utc
from app.models import Camera, CameraNotificationSetting, NotificationPreferences, QuietHoursPeriod, utcnow
from app.models.notification_prefs import PREFERENCES_ROW
from app.observability import audit
from app.observability.audit import Audit

Sound = Literal["none", "default", "alert", "chime", "urgent"]
Reason = Literal["quiet_hours", "disabled", "camera_disabled", "below_camera_threshold", "risk_filtered"]
RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")
FULL_DAY = {
    "mon": "monday",
    "tue": "tuesday",
    "wed": "wednesday",
    "thu": "thursday",
    "fri": "friday",
    "sat": "saturday",
    "sun": "sunday",
}
DEFAULTS: dict[str, Any] = {"enabled": True, "sound": "default", "risk_filters": list(RISK_LEVELS)}
MAX_PERIODS = 100


# ---- inputs ---------------------------------------------------------------------------------------------------
class PreferencesUpdate(BaseModel):
    """Fields left out keep their value."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = Field(None, description="The global switch: false sends no alert notification")
    sound: Sound | None = Field(None, description="The sound a client plays for a notification")
    risk_filters: list[Severity] | None = Field(
        None, max_length=4, description="Risk levels that notify ([] notifies none)"
    )

    @field_validator("risk_filters")
    @classmethod
    def _ordered(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [level for level in RISK_LEVELS if level in set(v)]


class CameraSettingUpdate(BaseModel):
    """Fields left out keep their value (a camera without a setting: enabled, threshold 0)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = Field(None, description="false: this camera's alerts send nothing")
    risk_threshold: int | None = Field(
        None, ge=0, le=100, description="Events of this camera below this risk score send nothing"
    )


class QuietHoursCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Name
    start_time: Annotated[str, Field(pattern=TIME_OF_DAY, description="HH:MM or HH:MM:SS (site time), inclusive")]
    end_time: Annotated[
        str,
        Field(
            pattern=TIME_OF_DAY,
            description="HH:MM or HH:MM:SS (site time), exclusive; at or before start_time: wraps midnight; "
            "equal: the whole day",
        ),
    ]
    days: list[DayName] = Field(
        default_factory=lambda: list(DAYS),
        min_length=1,
        max_length=7,
        description="monday..sunday (or mon..sun, any case); default every day",
    )

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return v.strip()

    @field_validator("start_time", "end_time")
    @classmethod
    def _seconds(cls, v: str) -> str:
        return v if len(v) == 8 else f"{v}:00"

    @field_validator("days")
    @classmethod
    def _week_order(cls, v: list[str]) -> list[str]:
        named = {d.strip().lower()[:3] for d in v}
        return [d for d in DAYS if d in named]


# ---- the decision ---------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """What the decision reads, loaded in one transaction."""

    enabled: bool = True
    risk_filters: list[str] = field(default_factory=lambda: list(RISK_LEVELS))
    cameras: dict[str, CameraNotificationSetting] = field(default_factory=dict)
    periods: list[QuietHoursPeriod] = field(default_factory=list)


@dataclass
class Decision:
    deliver: bool
    reason: Reason | None = None
    detail: str | None = None
    hold: bool = False  # quiet hours with VIGIL_QUIET_HOURS_HELD=send: sent once they end
    breakthrough: bool = False  # a critical alert sent inside quiet hours
    quiet_hours: list[str] = field(default_factory=list)  # labels of the periods covering the time

    def as_dict(self) -> dict[str, Any]:
        return {
            "would_notify": self.deliver,
            "suppressed": self.reason,
            "detail": self.detail,
            "held_until_quiet_hours_end": self.hold,
            "critical_breakthrough": self.breakthrough,
            "quiet_hours": self.quiet_hours,
        }


def snapshot(session: Session, camera_ids: list[str] | None = None) -> Snapshot:
    """The preferences, the given cameras' settings (every camera's when None) and the quiet hours."""
    row = session.get(NotificationPreferences, PREFERENCES_ROW)
    query = select(CameraNotificationSetting)
    if camera_ids is not None:
        query = query.where(CameraNotificationSetting.camera_id.in_(camera_ids))
    cameras = {c.camera_id: c for c in session.execute(query).scalars()}
    periods = list(session.execute(select(QuietHoursPeriod).order_by(QuietHoursPeriod.created_at)).scalars())
    if row is None:
        return Snapshot(cameras=cameras, periods=periods)
    return Snapshot(enabled=row.enabled, risk_filters=list(row.risk_filters), cameras=cameras, periods=periods)


def active_periods(periods: list[QuietHoursPeriod], at: datetime, tz: ZoneInfo) -> list[str]:
    """Labels of the periods covering `at` (site time)."""
    return [
        p.label
        for p in periods
        if in_schedule({"days": p.days, "start_time": p.start_time, "end_time": p.end_time}, at, tz)
    ]


def decide(
    settings: Settings,
    prefs: Snapshot,
    *,
    camera_id: str,
    risk_score: int,
    risk_level: str,
    severity: str,
    at: datetime,
) -> Decision:
    """Whether an alert of this camera, risk and severity raised at `at` is delivered, and if not why
    (the order of the checks is the module docstring's)."""
    if not prefs.enabled:
        return Decision(False, "disabled", "notifications are disabled (PUT /api/notification-preferences)")
    camera = prefs.cameras.get(camera_id)
    if camera is not None and not camera.enabled:
        return Decision(False, "camera_disabled", f"notifications are disabled for camera {camera_id}")
    if camera is not None and risk_score < camera.risk_threshold:
        return Decision(
            False,
            "below_camera_threshold",
            f"risk score {risk_score} is below camera {camera_id}'s threshold {camera.risk_threshold}",
        )
    if risk_level not in prefs.risk_filters:
        shown = ", ".join(prefs.risk_filters) or "none"
        return Decision(False, "risk_filtered", f"risk level {risk_level} is not among the risk filters ({shown})")
    quiet = active_periods(prefs.periods, at, site_zone(settings))
    if not quiet:
        return Decision(True)
    critical = "critical" in (severity, risk_level)
    if critical and settings.quiet_hours_critical_breakthrough:
        return Decision(True, breakthrough=True, quiet_hours=quiet)
    hold = settings.quiet_hours_held == "send"
    return Decision(
        False,
        "quiet_hours",
        f"inside quiet hours ({', '.join(quiet)}); " + ("sent when they end" if hold else "not sent"),
        hold=hold,
        quiet_hours=quiet,
    )


def suppressed_reason(deliveries: dict[str, dict[str, Any]]) -> str | None:
    """Why the preferences held an alert's deliveries back (the `suppressed` of the alert), or None."""
    for entry in deliveries.values():
        if entry.get("status") in ("suppressed", "held"):
            return entry.get("reason")
    return None


def decide_now(settings: Settings) -> dict[str, Any]:
    """What the preferences do to an alert raised now, before camera and risk are known: the global
    switch and the quiet hours (for GET /api/notification/config and POST /api/notification/test)."""
    with session_scope(settings) as session:
        prefs = snapshot(session, [])
    quiet = active_periods(prefs.periods, datetime.now(UTC), site_zone(settings))
    reason = "disabled" if not prefs.enabled else ("quiet_hours" if quiet else None)
    return {
        "alerts_would_notify": reason is None,
        "suppressed": reason,
        "quiet_hours_active": quiet,
        "critical_breakthrough": settings.quiet_hours_critical_breakthrough,
        "held_deliveries": settings.quiet_hours_held,
        "enabled": prefs.enabled,
        "risk_filters": prefs.risk_filters,
    }


# ---- global preferences ---------------------------------------------------------------------------------------
def _prefs_dict(row: NotificationPreferences | None) -> dict[str, Any]:
    if row is None:
        return {**DEFAULTS, "risk_filters": list(RISK_LEVELS), "updated_at": None, "updated_by": None}
    return {
        "enabled": row.enabled,
        "sound": row.sound,
        "risk_filters": list(row.risk_filters),
        "updated_at": iso_utc(row.updated_at),
        "updated_by": row.updated_by,
    }


def get_preferences(settings: Settings) -> dict[str, Any]:
    with session_scope(settings) as session:
        return _prefs_dict(session.get(NotificationPreferences, PREFERENCES_ROW))


def _once_more_on_conflict(write: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Two first writes of one row at once: the loser's INSERT fails on the key; run it again, when it
    finds the winner's row and updates it."""
    try:
        return write()
    except IntegrityError:
        return write()


def update_preferences(settings: Settings, values: PreferencesUpdate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Store the given fields (audited with each changed field's old and new value)."""
    changes = checked(PreferencesUpdate, values).model_dump(exclude_none=True)
    return _once_more_on_conflict(lambda: _write_preferences(settings, changes, who))


def _write_preferences(settings: Settings, changes: dict[str, Any], who: Audit) -> dict[str, Any]:
    with session_scope(settings) as session:
        row = session.get(NotificationPreferences, PREFERENCES_ROW, with_for_update=True)
        before = _prefs_dict(row)
        if row is None:
            row = NotificationPreferences(
                id=PREFERENCES_ROW, enabled=True, sound="default", risk_filters=list(RISK_LEVELS)
            )
            session.add(row)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at, row.updated_by = utcnow(), who.actor
        session.flush()
        after = _prefs_dict(row)
        diff = {k: {"from": before[k], "to": after[k]} for k in DEFAULTS if before[k] != after[k]}
        session.add(audit.entry("notification_preferences_updated", "notification_preferences", None, who, diff))
        return after


# ---- per camera -----------------------------------------------------------------------------------------------
def _camera_dict(camera: Camera, row: CameraNotificationSetting | None) -> dict[str, Any]:
    return {
        "camera_id": camera.id,
        "camera_name": camera.name,
        "enabled": True if row is None else row.enabled,
        "risk_threshold": 0 if row is None else row.risk_threshold,
        "configured": row is not None,
        "updated_at": None if row is None else iso_utc(row.updated_at),
    }


def _camera(session: Session, camera_id: str) -> Camera:
    camera = session.get(Camera, camera_id)
    if camera is None:
        raise NotFound(f"No camera with id '{camera_id}'", code="camera_not_found")
    return camera


def list_camera_settings(settings: Settings) -> list[dict[str, Any]]:
    """Every camera's setting, the default for those without one (a site has tens of cameras)."""
    with session_scope(settings) as session:
        rows = {r.camera_id: r for r in session.execute(select(CameraNotificationSetting)).scalars()}
        cameras = session.execute(select(Camera).order_by(Camera.id)).scalars()
        return [_camera_dict(c, rows.get(c.id)) for c in cameras]


def get_camera_setting(settings: Settings, camera_id: str) -> dict[str, Any]:
    with session_scope(settings) as session:
        camera = _camera(session, camera_id)
        return _camera_dict(camera, session.get(CameraNotificationSetting, camera_id))


def update_camera_setting(
    settings: Settings, camera_id: str, values: CameraSettingUpdate | dict[str, Any], who: Audit
) -> dict[str, Any]:
    changes = checked(CameraSettingUpdate, values).model_dump(exclude_none=True)
    return _once_more_on_conflict(lambda: _write_camera_setting(settings, camera_id, changes, who))


def _write_camera_setting(settings: Settings, camera_id: str, changes: dict[str, Any], who: Audit) -> dict[str, Any]:
    with session_scope(settings) as session:
        camera = _camera(session, camera_id)
        row = session.get(CameraNotificationSetting, camera_id, with_for_update=True)
        before = _camera_dict(camera, row)
        if row is None:
            row = CameraNotificationSetting(camera_id=camera_id, enabled=True, risk_threshold=0)
            session.add(row)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at, row.updated_by = utcnow(), who.actor
        session.flush()
        after = _camera_dict(camera, row)
        diff = {k: {"from": before[k], "to": after[k]} for k in ("enabled", "risk_threshold") if before[k] != after[k]}
        session.add(audit.entry("camera_notification_updated", "camera", camera_id, who, diff))
        return after


# ---- quiet hours ----------------------------------------------------------------------------------------------
def _period_dict(p: QuietHoursPeriod, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "id": p.id,
        "label": p.label,
        "start_time": p.start_time,
        "end_time": p.end_time,
        "days": [FULL_DAY[d] for d in p.days],
        "wraps_midnight": p.end_time <= p.start_time and p.end_time != p.start_time,
        "active_now": bool(active_periods([p], now, tz)),
        "created_at": iso_utc(p.created_at),
    }


def list_quiet_hours(settings: Settings) -> dict[str, Any]:
    now, tz = datetime.now(UTC), site_zone(settings)
    with session_scope(settings) as session:
        periods = list(session.execute(select(QuietHoursPeriod).order_by(QuietHoursPeriod.created_at)).scalars())
        return {
            "quiet_hours": [_period_dict(p, now, tz) for p in periods],
            "count": len(periods),
            "timezone": settings.site_timezone,
            "active_now": active_periods(periods, now, tz),
        }


def create_quiet_hours(settings: Settings, values: QuietHoursCreate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Periods may overlap (a weekday night and a holiday both covering 23:00); at most MAX_PERIODS."""
    body = checked(QuietHoursCreate, values)
    with session_scope(settings) as session:
        count = len(list(session.execute(select(QuietHoursPeriod.id)).scalars()))
        if count >= MAX_PERIODS:
            raise Conflict(f"At most {MAX_PERIODS} quiet-hours periods", code="too_many_periods")
        period = QuietHoursPeriod(
            label=body.label, start_time=body.start_time, end_time=body.end_time, days=body.days, created_at=utcnow()
        )
        session.add(period)
        session.flush()
        out = _period_dict(period, datetime.now(UTC), site_zone(settings))
        session.add(audit.entry("quiet_hours_created", "quiet_hours", period.id, who, body.model_dump()))
        return out


def delete_quiet_hours(settings: Settings, period_id: str, who: Audit) -> dict[str, Any]:
    with session_scope(settings) as session:
        period = session.get(QuietHoursPeriod, period_id)
        if period is None:
            raise NotFound(f"No quiet-hours period with id '{period_id}'", code="quiet_hours_not_found")
        details = {"label": period.label, "start_time": period.start_time, "end_time": period.end_time}
        session.execute(delete(QuietHoursPeriod).where(QuietHoursPeriod.id == period_id))
        session.add(audit.entry("quiet_hours_deleted", "quiet_hours", period_id, who, details))
        return {"id": period_id, "label": details["label"], "deleted": True}
