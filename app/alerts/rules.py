"""Alert rules (System Operations API `/api/alerts/rules`): their validation, storage, and the matching criteria.

A rule matches an event when it is enabled, the event's risk score is at least its threshold, one
of the event's object types is among its `object_types` (null: any), the event's camera is among
its `camera_ids` (null: all), the event's time falls in its `schedule` (null: always), and, for a
rule with `anomaly_only`, the event is marked anomalous (app/pipeline/anomaly.py). The
cooldown, the last criterion of the spec's flow, needs shared state and lives in
app/alerts/alerts.py.

Schedules are read in the site's time zone (`VIGIL_SITE_TIMEZONE`, UTC by default): "22:00-06:00"
means the cameras' night, wherever the server runs. A window whose end is not after its start wraps
midnight and belongs to the day it starts on, so `fri 22:00-06:00` covers Saturday 03:00 and not
Friday 03:00. Equal start and end cover the whole day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timezone
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.alerts import destinations
from app.core.db import session_scope
from app.core.errors import NotFound, checked
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs.enqueue import CAMERA_ID
from app.models import BUILTIN_OBJECT_TYPES, OBJECT_TYPES, AlertRule, utcnow
from app.observability import audit
from app.observability.audit import Audit

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {
    name: day
    for day in DAYS
    for name in (
        day,
        {
            "mon": "monday",
            "tue": "tuesday",
            "wed": "wednesday",
            "thu": "thursday",
            "fri": "friday",
            "sat": "saturday",
            "sun": "sunday",
        }[day],
    )
}
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
MAX_COOLDOWN = 7 * 86400
Severity = Literal["low", "medium", "high", "critical"]
Channel = Literal["email", "webhook", "push"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULE_FIELDS = (
    "name",
    "enabled",
    "severity",
    "risk_threshold",
    "object_types",
    "camera_ids",
    "schedule",
    "cooldown_seconds",
    "anomaly_only",
    "channels",
)


_KNOWN_TYPES = frozenset(OBJECT_TYPES)
# Patterns are the schema's exact statement of what the validators accept, written with explicit
# character classes (no `\s`, whose meaning differs between ECMA 262, Rust and Python). Names, object
# types and camera ids are stripped of surrounding whitespace (TRIM: Unicode White_Space, what
# `str.strip()` removes from any value these patterns admit), so the patterns allow it around the value
# and bound the stripped value's length themselves: a `maxLength` would count the whitespace too.
TRIM = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CONTROL = r"\x00-\x1f\x7f-\x9f"  # PostgreSQL refuses NUL in text; none of them belongs in a name
MAX_NAME = 255
# 1-255 characters once stripped, none of them a control character.
NAME_PATTERN = (
    rf"^[{TRIM}]*(?:[^{CONTROL}{TRIM}]|[^{CONTROL}{TRIM}][^{CONTROL}]{{0,{MAX_NAME - 2}}}"
    rf"[^{CONTROL}{TRIM}])[{TRIM}]*$"
)
CAMERA_ID_PATTERN = rf"^[{TRIM}]*[a-z0-9][a-z0-9_-]{{0,63}}[{TRIM}]*$"


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def any_case(words: Iterable[str]) -> str:
    """A pattern for any of `words` in any letter case, with whitespace around: the schema's exact
    statement of what a validator that strips and lower-cases accepts."""

    def fold(word: str) -> str:
        return "".join(f"[{c}{c.upper()}]" if c.isalpha() else (c if c == " " else re.escape(c)) for c in word)

    return rf"^[{TRIM}]*(?:" + "|".join(fold(w) for w in sorted(words, key=len, reverse=True)) + rf")[{TRIM}]*$"


DayName = Annotated[str, Field(pattern=any_case(_DAY_NAMES), description="mon..sun or monday..sunday, any case")]


class Schedule(BaseModel):
    """When a rule is active: on `days`, from `start_time` to `end_time` (site time)."""

    model_config = ConfigDict(extra="forbid")

    days: list[DayName] = Field(
        default_factory=lambda: list(DAYS),
        min_length=1,
        max_length=7,
        description="mon..sun (full names accepted); default every day",
    )
    start_time: str = Field(pattern=TIME_OF_DAY, description="HH:MM (or HH:MM:SS), inclusive")
    end_time: str = Field(
        pattern=TIME_OF_DAY, description="HH:MM (or HH:MM:SS), exclusive; at or before start_time: wraps midnight"
    )

    @field_validator("days")
    @classmethod
    def _week_order(cls, v: list[str]) -> list[str]:
        named = {_DAY_NAMES[d.strip().lower()] for d in v}
        return [d for d in DAYS if d in named]


class _RuleFields(BaseModel):
    """Rules shared by create and update; strict types, so `"75"` or `true` is not a threshold."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else v.strip()

    @field_validator("object_types", mode="before", check_fields=False)
    @classmethod
    def _known_object_types(cls, v: Any) -> Any:
        """A type no detector reports would make a rule that can never match, silently: refused, with
        the unknown types named (before the item pattern, whose message would only quote itself). The
        known types are every backend's, so a rule may be written before the detector is switched."""
        if isinstance(v, list):
            unknown = _unique(
                [
                    t.strip().lower()
                    for t in v
                    if isinstance(t, str) and t.strip() and t.strip().lower() not in _KNOWN_TYPES
                ]
            )
            if unknown:
                raise ValueError(
                    f"unknown object type{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(repr(t) for t in unknown[:5])}: not a class any detector reports "
                    f"(built-in: {', '.join(BUILTIN_OBJECT_TYPES)}; HTTP detector: the 80 COCO "
                    "classes, listed in docs/api.md)"
                )
        return v

    @field_validator("object_types", check_fields=False)
    @classmethod
    def _object_types(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _unique([t.strip().lower() for t in v])

    @field_validator("camera_ids", check_fields=False)
    @classmethod
    def _camera_ids(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        v = [c.strip() for c in v]
        bad = [c for c in v if not CAMERA_ID.match(c)]
        if bad:
            raise ValueError(f"not camera ids (lower-case letters, digits, '_' or '-'): {bad[:3]}")
        return _unique(v)

    @field_validator("channels", check_fields=False)
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _unique(v)


ObjectType = Annotated[str, Field(pattern=any_case(OBJECT_TYPES), description="A detector class, any case")]
CameraId = Annotated[str, Field(pattern=CAMERA_ID_PATTERN, description="1-64 of a-z, 0-9, '_', '-'")]
Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description=f"1-{MAX_NAME} characters, no control characters (surrounding whitespace is dropped)",
    ),
]
OBJECT_TYPES_DOC = (
    "Detection object types (`person`, `car`, ...), any of which matches; null: any type. Each must "
    "be a class a detector reports: the built-in one's (person, face) or the HTTP detector's "
    "(the 80 COCO classes)"
)
CAMERA_IDS_DOC = "Camera ids; null: every camera"
ANOMALY_ONLY_DOC = (
    "Match only events marked anomalous against their camera's hour-of-week baseline (`is_anomaly`, "
    "GET /api/system/anomaly-config); default false"
)


class RuleCreate(_RuleFields):
    """POST /api/alerts/rules."""

    name: Name
    enabled: bool = Field(True, strict=True)
    severity: Severity = Field(
        description="Severity of the alerts the rule raises; high and critical "
        "notifications go through `notification:high`"
    )
    risk_threshold: int = Field(ge=0, le=100, strict=True, description="Lowest risk score (0-100) that matches")
    object_types: list[ObjectType] | None = Field(None, min_length=1, max_length=50, description=OBJECT_TYPES_DOC)
    camera_ids: list[CameraId] | None = Field(None, min_length=1, max_length=500, description=CAMERA_IDS_DOC)
    schedule: Schedule | None = Field(None, description="When the rule is active; null: always")
    cooldown_seconds: int = Field(
        300,
        ge=0,
        le=MAX_COOLDOWN,
        strict=True,
        description="Least time between two alerts of this rule for one camera (event time); 0: no cooldown",
    )
    anomaly_only: bool = Field(False, strict=True, description=ANOMALY_ONLY_DOC)
    channels: list[Channel] = Field(min_length=1, max_length=3, description="email, webhook, push")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _optional(**constraints: Any) -> Any:
    """A field that may be left out but not sent as null: its default (None, "not sent") stays out
    of the schema, which would otherwise claim null is a value."""
    return Field(None, json_schema_extra=_no_default, **constraints)


NOT_NULLABLE = ("name", "enabled", "severity", "risk_threshold", "cooldown_seconds", "anomaly_only", "channels")


class RuleUpdate(_RuleFields):
    """PUT /api/alerts/rules/{id}: the fields sent replace the rule's; fields left out keep their
    value, so the full object from GET can be sent back (its `id`, timestamps and `warnings` are ignored)."""

    # Optional but not nullable: the schema says so (no `null` in the type), and so does the validator.
    name: Name = _optional()
    enabled: bool = _optional(strict=True)
    severity: Severity = _optional()
    risk_threshold: int = _optional(ge=0, le=100, strict=True)
    object_types: list[ObjectType] | None = Field(None, min_length=1, max_length=50, description=OBJECT_TYPES_DOC)
    camera_ids: list[CameraId] | None = Field(None, min_length=1, max_length=500, description=CAMERA_IDS_DOC)
    schedule: Schedule | None = None
    cooldown_seconds: int = _optional(ge=0, le=MAX_COOLDOWN, strict=True)
    anomaly_only: bool = _optional(strict=True, description=ANOMALY_ONLY_DOC)
    channels: list[Channel] = _optional(min_length=1, max_length=3)
    id: str | None = Field(None, max_length=64, description="Ignored (read-only)")
    created_at: str | None = Field(None, max_length=64, description="Ignored (read-only)")
    updated_at: str | None = Field(None, max_length=64, description="Ignored (read-only)")
    warnings: list[Annotated[str, Field(max_length=1000)]] | None = Field(
        None, max_length=10, description="Ignored (read-only)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        """A null where the type has none would fail anyway; this says what to do instead."""
        if isinstance(data, dict):
            nulls = sorted(n for n in NOT_NULLABLE if n in data and data[n] is None)
            if nulls:
                raise ValueError(f"null is not a value for {', '.join(nulls)}; leave the field out instead")
        return data

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(include=set(RULE_FIELDS)).items() if k in self.model_fields_set}


# ---- storage ------------------------------------------------------------------------------------------------
def as_dict(rule: AlertRule, warnings: list[str] | None = None) -> dict[str, Any]:
    """A rule in the System Operations API's shape, plus its timestamps and, when given, its `warnings`."""
    out = {
        "id": rule.id,
        "name": rule.name,
        "enabled": rule.enabled,
        "severity": rule.severity,
        "risk_threshold": rule.risk_threshold,
        "object_types": rule.object_types,
        "camera_ids": rule.camera_ids,
        "schedule": rule.schedule,
        "cooldown_seconds": rule.cooldown_seconds,
        "anomaly_only": bool(rule.anomaly_only),
        "channels": rule.channels,
        "created_at": iso_utc(rule.created_at),
        "updated_at": iso_utc(rule.updated_at),
    }
    if warnings is not None:
        out["warnings"] = warnings
    return out


def _shown(session: Session, settings: Settings, rules: list[AlertRule]) -> list[dict[str, Any]]:
    """Rules as answers: each with `warnings` naming the channels its alerts could not use now (no
    destination, no SMTP server, push). A rule naming such a channel is accepted, not refused: the
    destination may well be configured after the rule (or differ per rule), and its alerts record
    the channel as `unavailable` meanwhile; the warning says so at the moment it matters."""
    table = destinations.load_table(session, settings)
    return [as_dict(r, destinations.warnings(settings, table.for_rule(r.id), list(r.channels))) for r in rules]


def load(session: Session, rule_id: str) -> AlertRule:
    """The rule, or NotFound (404)."""
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"No alert rule with id '{rule_id}'", code="rule_not_found")
    return rule


def list_rules(settings: Settings) -> list[dict[str, Any]]:
    with session_scope(settings) as session:
        rules = session.execute(select(AlertRule).order_by(AlertRule.created_at, AlertRule.id)).scalars()
        return _shown(session, settings, list(rules))


def get_rule(settings: Settings, rule_id: str) -> dict[str, Any]:
    with session_scope(settings) as session:
        return _shown(session, settings, [load(session, rule_id)])[0]


def create_rule(settings: Settings, values: RuleCreate | dict[str, Any], who: Audit) -> dict[str, Any]:
    clean = checked(RuleCreate, values).model_dump()
    with session_scope(settings) as session:
        rule = AlertRule(**clean)
        session.add(rule)
        session.flush()
        out = _shown(session, settings, [rule])[0]
        session.add(audit.entry("alert_rule_created", "alert_rule", rule.id, who, {k: out[k] for k in RULE_FIELDS}))
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
        return _shown(session, settings, [rule])[0]


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


def in_schedule(schedule: dict[str, Any] | None, at: datetime, tz: ZoneInfo | timezone = UTC) -> bool:
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
    return now < end and DAYS[(local.weekday() - 1) % 7] in days  # the day before, without date arithmetic


def matches(
    rule: RuleLike, event: EventLike, object_types: set[str] | list[str], at: datetime, tz: ZoneInfo | timezone = UTC
) -> Match:
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
    if getattr(rule, "anomaly_only", False) and not getattr(event, "is_anomaly", False):
        result.reasons.append("the event is not marked anomalous (the rule matches anomalies only)")
    if not in_schedule(rule.schedule, at, tz):
        local = at.astimezone(tz)
        result.reasons.append(f"{DAYS[local.weekday()]} {local:%H:%M} ({tz}) is outside the schedule")
    return result


def site_zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.site_timezone)
