"""Runtime configuration (PATCH /api/system/config) and severity thresholds (PUT /api/system/severity).

Values changed at run time live in the `runtime_config` table and win over the environment's
defaults; every change writes an `audit_log` entry (action `settings_changed`) naming the old and
new values. SQL is the one source of truth: the API, the detection workers and the batch closer
all read it. Workers read it on their hot path, so reads are cached per process for
`CACHE_SECONDS`; a change therefore reaches every worker within that time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import checked
from app.core.settings import Settings
from app.models import RuntimeConfig
from app.observability import audit
from app.observability.audit import Audit

CACHE_SECONDS = 1.0


def _no_null_defaults(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class ConfigUpdate(BaseModel):
    """PATCH /api/system/config. Strict types: `"14"` or `true` is not a number of days. Every field
    is optional but none takes `null` (leave it out instead), so the schema shows no null either."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)

    retention_days: int = Field(None, ge=1, le=365, strict=True, description="Data retention, days")
    batch_window_seconds: int = Field(None, ge=1, le=86400, strict=True, description="Detection batch window, seconds")
    batch_idle_timeout_seconds: int = Field(
        None, ge=1, le=86400, strict=True, description="Batch idle timeout, seconds"
    )
    detection_confidence_threshold: float = Field(
        None, ge=0.0, le=1.0, strict=True, description="Minimum detection confidence"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value; leave the field out instead")
        return value


class SeverityUpdate(BaseModel):
    """PUT /api/system/severity: every level keeps at least one score, so the thresholds must be
    strictly ordered, `low_max < medium_max < high_max` (a rule between fields, which a JSON schema
    cannot state: a 422 naming it)."""

    model_config = ConfigDict(extra="forbid")

    low_max: int = Field(ge=0, le=99, strict=True, description="Highest score that is `low`")
    medium_max: int = Field(ge=0, le=99, strict=True, description="Highest score that is `medium`")
    high_max: int = Field(ge=0, le=99, strict=True, description="Highest score that is `high` (above: critical)")

    @model_validator(mode="after")
    def _ordered(self) -> SeverityUpdate:
        if not self.low_max < self.medium_max < self.high_max:
            raise ValueError("thresholds must be strictly ordered: low_max < medium_max < high_max")
        return self


# Runtime-configurable keys (System API, System Operations API); defaults come from Settings of the same name.
CONFIG_FIELDS: dict[str, type] = {
    "retention_days": int,
    "batch_window_seconds": int,
    "batch_idle_timeout_seconds": int,
    "detection_confidence_threshold": float,
}


def validate_config(values: ConfigUpdate | dict[str, Any]) -> dict[str, Any]:
    return checked(ConfigUpdate, values).model_dump(exclude_unset=True)


SEVERITY_DEFAULTS = {"low_max": 29, "medium_max": 59, "high_max": 84}
SEVERITY_KEY = "severity_thresholds"
SEVERITY_LEVELS = (
    # severity, label, description, color, priority
    ("low", "Low", "Routine activity, no concern", "#22c55e", 3),
    ("medium", "Medium", "Notable activity, worth reviewing", "#eab308", 2),
    ("high", "High", "Concerning activity, review soon", "#f97316", 1),
    ("critical", "Critical", "Immediate attention required", "#ef4444", 0),
)


_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def _stored(settings: Settings, fresh: bool = False) -> dict[str, Any]:
    """Every stored runtime value, read with one SELECT (cached per process)."""
    url = settings.database_url
    now = time.monotonic()
    if not fresh:
        with _cache_lock:
            hit = _cache.get(url)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    with session_scope(settings) as session:
        values = {row.key: row.value for row in session.execute(select(RuntimeConfig)).scalars()}
    with _cache_lock:
        _cache[url] = (now, values)
    return values


def invalidate() -> None:
    with _cache_lock:
        _cache.clear()


def defaults(settings: Settings) -> dict[str, Any]:
    return {key: getattr(settings, key) for key in CONFIG_FIELDS}


def effective(settings: Settings, fresh: bool = False) -> dict[str, Any]:
    """The runtime-configurable values in force: stored ones over the environment's defaults."""
    values = defaults(settings)
    stored = _stored(settings, fresh)
    for key, typ in CONFIG_FIELDS.items():
        if key in stored and stored[key] is not None:
            values[key] = typ(stored[key])
    return values


def public_config(settings: Settings, version: str, fresh: bool = True) -> dict[str, Any]:
    """GET /api/system/config: names and values a client may see (never URLs or keys)."""
    return {"app_name": settings.app_name, "version": version, **effective(settings, fresh)}


def _write(session: Session, values: dict[str, Any], who: Audit) -> None:
    for key, value in values.items():
        row = session.get(RuntimeConfig, key)
        if row is None:
            session.add(RuntimeConfig(key=key, value=value, updated_by=who.actor))
        else:
            row.value = value
            row.updated_by = who.actor


def _audit(session: Session, resource: str, changes: dict[str, dict[str, Any]], who: Audit) -> None:
    session.add(audit.entry("settings_changed", resource, resource, who, {"changes": changes}))


def update_config(settings: Settings, changes: ConfigUpdate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Validate and store changed values; one audit entry names each old and new value.

    Values equal to the ones in force are not rewritten and a request that changes nothing writes
    no audit entry, so the audit log records changes, not calls.
    """
    clean = validate_config(changes)
    before = effective(settings, fresh=True)
    diff = {k: {"old": before[k], "new": v} for k, v in clean.items() if before[k] != v}
    if diff:
        with session_scope(settings) as session:
            _write(session, {k: d["new"] for k, d in diff.items()}, who)
            _audit(session, "config", diff, who)
        invalidate()
    return effective(settings, fresh=True)


# ---- severity ---------------------------------------------------------------------------------
def thresholds(settings: Settings, fresh: bool = False) -> dict[str, int]:
    stored = _stored(settings, fresh).get(SEVERITY_KEY)
    if isinstance(stored, dict) and all(isinstance(stored.get(k), int) for k in SEVERITY_DEFAULTS):
        return {k: int(stored[k]) for k in SEVERITY_DEFAULTS}
    return dict(SEVERITY_DEFAULTS)


def update_thresholds(settings: Settings, values: SeverityUpdate | dict[str, Any], who: Audit) -> dict[str, int]:
    new = checked(SeverityUpdate, values).model_dump()
    old = thresholds(settings, fresh=True)
    if new != old:
        with session_scope(settings) as session:
            _write(session, {SEVERITY_KEY: new}, who)
            _audit(session, "severity", {k: {"old": old[k], "new": new[k]} for k in new if old[k] != new[k]}, who)
        invalidate()
    return new


def severity_for(score: float, th: dict[str, int]) -> str:
    """The severity level a 0-100 risk score falls in."""
    if score <= th["low_max"]:
        return "low"
    if score <= th["medium_max"]:
        return "medium"
    if score <= th["high_max"]:
        return "high"
    return "critical"


def severity_definitions(th: dict[str, int]) -> dict[str, Any]:
    bounds = {
        "low": (0, th["low_max"]),
        "medium": (th["low_max"] + 1, th["medium_max"]),
        "high": (th["medium_max"] + 1, th["high_max"]),
        "critical": (th["high_max"] + 1, 100),
    }
    return {
        "definitions": [
            {
                "severity": sev,
                "label": label,
                "description": desc,
                "color": color,
                "priority": prio,
                "min_score": bounds[sev][0],
                "max_score": bounds[sev][1],
            }
            for sev, label, desc, color, prio in SEVERITY_LEVELS
        ],
        "thresholds": dict(th),
    }
