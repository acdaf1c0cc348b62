"""Infrastructure health and alerts (000): /api/v1/platform/system/infrastructure/..."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, Field

from app.api.kit.current import current_settings
from app.api.kit.auth import actor
from app.api.kit.endpoint import endpoint
from app.api.kit.respond import audited, ok
from app.ops import infrastructure
bp = Blueprint("infrastructure", __name__, url_prefix="/api/v1/platform/system/infrastructure")
TAGS = ["infrastructure"]


class AlertsQuery(BaseModel):
    hours: int = Field(24, ge=1, le=168, description="Hours of history (1-168)")
    severity: Literal["error", "warning", "info"] | None = Field(None, description="Only this severity")


class AlertPath(BaseModel):
    alert_id: str = Field(pattern=r"^alert_[0-9a-f]{12}$")


@bp.get("/health")
@endpoint(summary="Real-time health of the API, database, Redis, e-mail channel and workers", tags=TAGS)
def infrastructure_health():
    """Each service is `healthy`, `degraded` (performance impact) or `down` (unavailable), with
    the figures behind the verdict and a `reason` when it is not healthy."""
    return ok({"services": infrastructure.health(current_settings())})


@bp.get("/alerts")
@endpoint(query=AlertsQuery, summary="Infrastructure alerts raised in the last hours, newest first", tags=TAGS)
def infrastructure_alerts(query: AlertsQuery):
    return ok({"alerts": infrastructure.alerts(current_settings(), query.hours, query.severity)})


@bp.post("/alerts/<alert_id>/acknowledge")
@endpoint(path=AlertPath, summary="Acknowledge an infrastructure alert", tags=TAGS, errors={404: "Unknown alert"})
def acknowledge_alert(alert_id: str):
    body = infrastructure.acknowledge(current_settings(), alert_id, actor())
    audited("alert_acknowledged", "infrastructure_alert", alert_id)
    return ok(body)
