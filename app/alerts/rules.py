"""Alert rules (004 `/api/alerts/rules`): their validation, storage, and the matching criteria.

A rule matches an event when it is enabled, the event's risk score is at least its threshold, one
of the event's object types is among its `object_types` (null: any), the event's camera is among
its `camera_ids` (null: all), and the event's time falls in its `schedule` (null: always). The
cooldown, the last criterion of the spec's flow, needs shared state and lives in
app/alerts/alerts.py.

Schedules are read in the site's time zone (`VIGIL_SITE_TIMEZONE`, UTC by default): "22:00-06:00"
means the cameras' night, wherever the server runs. A window whose end is not after its start wraps
midnight and belongs to the day it starts on, so `fri 22:00-06:00` covers Saturday 03:00 and not
Friday 03:00. Equal start and end cover the whole day.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.models import AlertRule, utcnow
from app.observability import audit
from app.observability.audit import Audit
from app.core.errors import NotFound, checked
from app.jobs.enqueue import CAMERA_ID
from app.observability.logs import iso
from app.core.settings import Settings

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {name: day for day in DAYS for name in (day, {"mon": "monday", "tue": "tuesday",
              "wed": "wednesday", "thu": "thursday", "fri": "friday", "sat": "saturday", "sun": "sunday"}[day])}
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
MAX_COOLDOWN = 7 * 86400
Severity = Literal["low", "medium", "high", "critical"]
Channel = Literal["email", "webhook", "push"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULE_FIELDS = ("name", "enabled", "severity", "risk_threshold", "object_types", "camera_ids", "schedule",
               "cooldown_seconds", "channels")


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


class Schedule(BaseModel):
    """When a rule is active: on `days`, from `start_time` to `end_time` (site time)."""

    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1, max_length=7,
                            description="mon..sun (full names accepted); default every day")
    start_time: str = Field(pattern=TIME_OF_DAY, description="HH:MM (or HH:MM:SS), inclusive")
    end_time: str = Field(pattern=TIME_OF_DAY,
                          description="HH:MM (or HH:MM:SS), exclusive; at or before start_time: wraps midnight")

    @field_validator("days", mode="before")
    @classmethod
    def _day_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [_DAY_NAMES.get(d.strip().lower(), d) if isinstance(d, str) else d for d in v]
        return v

    @field_validator("days")
    @classmethod
    def _week_order(cls, v: list[str]) -> list[str]:
        return [d for d in DAYS if d in v]


class _RuleFields(BaseModel):
    """Rules shared by create and update; strict types, so `"75"` or `true` is not a threshold."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("object_types", check_fields=False)
    @classmethod
    def _object_types(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _unique([t.lower() for t in v])

    @field_validator("camera_ids", check_fields=False)
    @classmethod
    def _camera_ids(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        bad = [c for c in v if not CAMERA_ID.match(c)]
        if bad:
            raise ValueError(f"not camera ids (lower-case letters, digits, '_' or '-'): {bad[:3]}")
        return _unique(v)

    @field_validator("channels", check_fields=False)
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _unique(v)


ObjectType = Annotated[str, Field(min_length=1, max_length=64)]
CameraId = Annotated[str, Field(min_length=1, max_length=64)]
OBJECT_TYPES_DOC = "Detection object types (`person`, `car`, ...), any of which matches; null: any type"
CAMERA_IDS_DOC = "Camera ids; null: every camera"


class RuleCreate(_RuleFields):
    """POST /api/alerts/rules."""

    name: str = Field(min_length=1, max_length=255)
    enabled: bool = Field(True, strict=True)
    severity: Severity = Field(description="Severity of the alerts the rule raises; high and critical "
                                           "notifications go through `notification:high`")
    risk_threshold: int = Field(ge=0, le=100, strict=True, description="Lowest risk score (0-100) that matches")
    object_types: list[ObjectType] | None = Field(None, min_length=1, max_length=50, description=OBJECT_TYPES_DOC)
    camera_ids: list[CameraId] | None = Field(None, min_length=1, max_length=500, description=CAMERA_IDS_DOC)
    schedule: Schedule | None = Field(None, description="When the rule is active; null: always")
    cooldown_seconds: int = Field(300, ge=0, le=MAX_COOLDOWN, strict=True,
                                  description="Least time between two alerts of this rule for one camera "
                                              "(event time); 0: no cooldown")
    channels: list[Channel] = Field(min_length=1, max_length=3, description="email, webhook, push")


class RuleUpdate(_RuleFields):
    """PUT /api/alerts/rules/{id}: the fields sent replace the rule's; fields left out keep their
    value, so the full object from GET can be sent back (its `id` and timestamps are ignored)."""

    name: str | None = Field(None, min_length=1, max_length=255)
    enabled: bool | None = Field(None, strict=True)
    severity: Severity | None = None
    risk_threshold: int | None = Field(None, ge=0, le=100, strict=True)
    object_types: list[ObjectType] | None = Field(None, min_length=1, max_length=50, description=OBJECT_TYPES_DOC)
    camera_ids: list[CameraId] | None = Field(None, min_length=1, max_length=500, description=CAMERA_IDS_DOC)
    schedule: Schedule | None = None
    cooldown_seconds: int | None = Field(None, ge=0, le=MAX_COOLDOWN, strict=True)
    channels: list[Channel] | None = Field(None, min_length=1, max_length=3)
    id: str | None = Field(None, description="Ignored (read-only)")
    created_at: str | None = Field(None, description="Ignored (read-only)")
    updated_at: str | None = Field(None, description="Ignored (read-only)")

    @model_validator(mode="after")
    def _no_nulls(self) -> "RuleUpdate":
        nullable = {"object_types", "camera_ids", "schedule", "id", "created_at", "updated_at"}
        nulls = sorted(n for n in self.model_fields_set - nullable if getattr(self, n) is None)
        if nulls:
            raise ValueError(f"null is not a value for {', '.join(nulls)}; leave the field out instead")
        return self

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(include=set(RULE_FIELDS)).items() if k in self.model_fields_set}


# ---- storage ------------------------------------------------------------------------------------------------
def as_dict(rule: AlertRule) -> dict[str, Any]:
    """A rule in 004's shape, plus its timestamps."""
    return {"id": rule.id, "name": rule.name, "enabled": rule.enabled, "severity": rule.severity,
            "risk_threshold": rule.risk_threshold, "object_types": rule.object_types, "camera_ids": rule.camera_ids,
            "schedule": rule.schedule, "cooldown_seconds": rule.cooldown_seconds, "channels": rule.channels,
            "created_at": iso(rule.created_at), "updated_at": iso(rule.updated_at)}


def load(session: Session, rule_id: str) -> AlertRule:
    """The rule, or NotFound (404)."""
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"No alert rule with id '{rule_id}'", code="rule_not_found")
    return rule


def list_rules(settings: Settings) -> list[dict[str, Any]]:
    with session_scope(settings) as session:
        rules = session.execute(select(AlertRule).order_by(AlertRule.created_at, AlertRule.id)).scalars()
        return [as_dict(r) for r in rules]


def get_rule(settings: Settings, rule_id: str) -> dict[str, Any]:
    with session_scope(settings) as session:
        return as_dict(load(session, rule_id))


def create_rule(settings: Settings, values: RuleCreate | dict[str, Any], who: Audit) -> dict[str, Any]:
    clean = checked(RuleCreate, values).model_dump()
    with session_scope(settings) as session:
        rule = AlertRule(**clean)
        session.add(rule)
        session.flush()
        out = as_dict(rule)
        session.add(audit.entry("alert_rule_created", "alert_rule", rule.id, who,
                                {k: out[k] for k in RULE_FIELDS}))
    return out


def update_rule(settings: Settings, rule_id: str, values: RuleUpdate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Apply the fields sent; the audit entry names each changed field's old and new value, and an
    update that changes nothing writes none."""
    new = checked(RuleUpdate, values).changes()
    with session_scope(settings) as session:
        rule = load(session, rule_id)
        before = as_dict(rule)
        diff = {k: {"old": before[k], "new": v} for k, v in new.items() if before[k] != v}
        if diff:
            for key, change in diff.items():
                setattr(rule, key, change["new"])
            rule.updated_at = utcnow()
            session.add(audit.entry("alert_rule_updated", "alert_rule", rule_id, who, {"changes": diff}))
        session.flush()
        return as_dict(rule)


def delete_rule(settings: Settings, rule_id: str, who: Audit) -> dict[str, Any]:
    """Delete a rule; its alerts stay (with `rule_id` null) and keep their history."""
    with session_scope(settings) as session:
        rule = load(session, rule_id)
        gone = as_dict(rule)
        session.delete(rule)
        session.add(audit.entry("alert_rule_deleted", "alert_rule", rule_id, who, {"name": gone["name"]}))
    return {"id": rule_id, "name": gone["name"], "deleted": True}


# ---- matching -----------------------------------------------------------------------------------------------
class RuleLike(Protocol):
    enabled: bool
    risk_threshold: int
    object_types: list[str] | None
    camera_ids: list[str] | None
    schedule: dict[str, Any] | None


class EventLike(Protocol):
    risk_score: int
    camera_id: str


@dataclass
class Match:
    """Whether a rule matches an event, and each criterion that failed."""

    reasons: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return not self.reasons


def _clock(value: str) -> time:
    return time.fromisoformat(value)


def in_schedule(schedule: dict[str, Any] | None, at: datetime, tz: ZoneInfo | timezone = timezone.utc) -> bool:
    """Whether `at` falls in the schedule's window, read in `tz` (see the module docstring)."""
    if schedule is None:
        return True
    local = at.astimezone(tz)
    days = schedule.get("days") or DAYS
    start, end, now = _clock(schedule["start_time"]), _clock(schedule["end_time"]), local.time()
    today = DAYS[local.weekday()]
    if start == end:
        return today in days
    if start < end:
        return today in days and start <= now < end
    if now >= start:
        return today in days
    return now < end and DAYS[(local - timedelta(days=1)).weekday()] in days


def matches(rule: RuleLike, event: EventLike, object_types: set[str] | list[str], at: datetime,
            tz: ZoneInfo | timezone = timezone.utc) -> Match:
    """Every matching criterion but the cooldown, evaluated at `at` (the event's time when firing,
    a chosen time when testing). All failing criteria are reported, not just the first."""
    result = Match()
    if not rule.enabled:
        result.reasons.append("rule is disabled")
    if event.risk_score < rule.risk_threshold:
        result.reasons.append(f"risk score {event.risk_score} is below the threshold {rule.risk_threshold}")
    if rule.object_types is not None and not set(rule.object_types) & set(object_types):
        seen = ", ".join(sorted(object_types)) or "none"
        result.reasons.append(f"no object of type {', '.join(rule.object_types)} (event has: {seen})")
    if rule.camera_ids is not None and event.camera_id not in rule.camera_ids:
        result.reasons.append(f"camera {event.camera_id} is not one of the rule's cameras")
    if not in_schedule(rule.schedule, at, tz):
        local = at.astimezone(tz)
        result.reasons.append(f"{DAYS[local.weekday()]} {local:%H:%M} ({tz}) is outside the schedule")
    return result


def site_zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.site_timezone)
