"""Runtime configuration and severity thresholds (System API, System Operations API)."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import Field

from app.api.kit.current import current_settings, current_version
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required, who
from app.pipeline import runtime_config
from app.pipeline.runtime_config import ConfigUpdate, SeverityUpdate

bp = Blueprint("system_config", __name__)


class PublicConfig(Answer):
    app_name: str
    version: str
    retention_days: int
    batch_window_seconds: int
    batch_idle_timeout_seconds: int
    detection_confidence_threshold: float


class SeverityLevel(Answer):
    severity: Literal["low", "medium", "high", "critical"]
    label: str
    description: str
    color: str
    priority: int = Field(description="0 is the most urgent")
    min_score: int
    max_score: int


class Thresholds(Answer):
    low_max: int
    medium_max: int
    high_max: int


class Severity(Answer):
    definitions: list[SeverityLevel]
    thresholds: Thresholds


@bp.get("/api/system/config")
@endpoint(response=PublicConfig, summary="Public configuration (no secrets)", tags=["config"])
def get_config():
    with dependencies_required():
        return runtime_config.public_config(current_settings(), current_version())


@bp.patch("/api/system/config")
@endpoint(
    body=ConfigUpdate,
    response=PublicConfig,
    summary="Update runtime configuration (audited as settings_changed)",
    tags=["config"],
)
def patch_config(body: ConfigUpdate):
    """Send only the fields to change; an empty body changes nothing. Strict types, no `null`,
    unknown fields refused: 422 naming each field."""
    with dependencies_required():
        runtime_config.update_config(current_settings(), body, who())
        return runtime_config.public_config(current_settings(), current_version())


@bp.get("/api/system/severity")
@endpoint(response=Severity, summary="Severity levels and the risk-score thresholds between them", tags=["config"])
def get_severity():
    with dependencies_required():
        return runtime_config.severity_definitions(runtime_config.thresholds(current_settings(), fresh=True))


@bp.put("/api/system/severity")
@endpoint(
    body=SeverityUpdate,
    response=Severity,
    summary="Update severity thresholds (strictly ordered; audited)",
    tags=["config"],
    errors={422: "Invalid body, or thresholds not strictly ordered"},
)
def put_severity(body: SeverityUpdate):
    """The thresholds must be strictly ordered, `0 <= low_max < medium_max < high_max <= 99`, so
    every level keeps at least one score. The order is a rule between fields, which the schema
    cannot state: unordered thresholds are a 422 saying so."""
    with dependencies_required():
        return runtime_config.severity_definitions(runtime_config.update_thresholds(current_settings(), body, who()))
