"""Infrastructure health and alerts (platform API): /api/v1/platform/system/infrastructure/..."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, Field

from app.api.kit.auth import actor
from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import audited, dependencies_required, ok
from app.ops import infrastructure, ip_reputation

bp = Blueprint("infrastructure", __name__, url_prefix="/api/v1/platform/system/infrastructure")
TAGS = ["infrastructure"]


class AlertsQuery(BaseModel):
    hours: int = Field(24, ge=1, le=168, description="Hours of history (1-168)")
    severity: Literal["error", "warning", "info"] | None = Field(None, description="Only this severity")


class AlertPath(BaseModel):
    alert_id: str = Field(pattern=r"^alert_[0-9a-f]{12}$")


class ResponseTimes(Answer):
    avg: float | None
    p95: float | None
    p99: float | None


class InfraService(Answer):
    """One service's verdict and the figures behind it; which figures depends on the service (a
    service whose check failed has only `name`, `status` and `reason`)."""

    name: Literal["API Server", "OLTP Database", "Redis", "SMTP Service", "Workers"]
    status: Literal["healthy", "degraded", "down"]
    reason: str | None = Field(description="Why it is not healthy")
    response_time_ms: ResponseTimes | None = Field(None, description="API Server")
    error_rate_percent: float | None = Field(None, description="API Server: server errors, probes' answers not counted")
    requests_sampled: int | None = Field(None, description="API Server")
    min_sample: int | None = Field(None, description="API Server: requests needed before a verdict other than healthy")
    window_seconds: int | None = Field(None, description="API Server")
    backend: str | None = Field(None, description="OLTP Database: postgresql or sqlite")
    connection_pool_usage_percent: float | None = Field(None, description="OLTP Database (PostgreSQL)")
    query_latency_ms: float | None = Field(None, description="OLTP Database")
    latency_ms: float | None = Field(None, description="Redis")
    used_memory_mb: float | None = Field(None, description="Redis")
    memory_usage_percent: float | None = Field(None, description="Redis (with a maxmemory)")
    queue_backlog: int | None = Field(None, description="SMTP Service: notifications waiting")
    failed_jobs: int | None = Field(None, description="SMTP Service")
    consumers: int | None = Field(None, description="SMTP Service: notification workers")
    smtp_configured: bool | None = Field(None, description="SMTP Service")
    running: dict[str, int] | None = Field(None, description="Workers: live, consuming processes per group")


class InfraHealth(Answer):
    services: list[InfraService]


class InfraAlert(Answer):
    id: str
    timestamp: str
    severity: Literal["error", "warning", "info"]
    service: str
    message: str
    acknowledged: bool
    resolved: bool
    resolved_at: str | None
    last_seen: str
    condition: str
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None


class InfraAlerts(Answer):
    alerts: list[InfraAlert]


class BlacklistCheck(Answer):
    zone: str
    status: Literal["listed", "clear", "unknown"] = Field(description="`unknown`: look-up failed or not run yet")
    codes: list[str] = Field(description="The A records the zone answered (127.0.0.x: listed)")
    checked_at: str | None
    expires_at: str | None = Field(description="When the answer's DNS TTL runs out and it is asked again")
    error: str | None


class Outcomes24h(Answer):
    accepted: int
    refused: int = Field(description="5xx replies, or every recipient refused")
    deferred: int = Field(description="4xx replies (retried)")


class IpReputation(Answer):
    ip_address: str
    provider: str | None = Field(description="VIGIL_SMTP_PROVIDER, else the reverse DNS name, else null")
    reputation_score: int = Field(ge=0, le=100)
    blacklists: list[str] = Field(description="The zones listing the address")
    daily_volume: int = Field(description="Messages the channel sent from it in the last 24 hours")
    status: Literal["good", "warning", "critical", "unknown"]
    source: Literal["configured", "observed"] = Field(
        description="VIGIL_SMTP_SOURCE_IPS, or the local address of the channel's SMTP connections"
    )
    last_seen: str | None = Field(description="observed: the last connection from it")
    outcomes_24h: Outcomes24h
    checks: list[BlacklistCheck]


class ReputationThresholds(Answer):
    warning_below: int
    critical_below: int
    penalty_per_listing: int


class IpReputationList(Answer):
    ips: list[IpReputation]
    zones: list[str] = Field(description="The DNSBL zones looked up (VIGIL_DNSBL_ZONES)")
    thresholds: ReputationThresholds


@bp.get("/health")
@endpoint(
    response=InfraHealth, summary="Real-time health of the API, database, Redis, e-mail channel and workers", tags=TAGS
)
def infrastructure_health():
    """Each service is `healthy`, `degraded` (performance impact) or `down` (unavailable), with
    the figures behind the verdict and a `reason` when it is not healthy. The API Server is judged
    from the last `window_seconds` of requests of every API process, once at least `min_sample`
    were made; the probes' own answers (a readiness probe's 503 while workers start) are not
    counted as errors."""
    return ok({"services": infrastructure.health(current_settings())})


@bp.get("/alerts")
@endpoint(
    query=AlertsQuery,
    response=InfraAlerts,
    summary="Infrastructure alerts raised in the last hours, newest first",
    tags=TAGS,
    links={
        "AcknowledgeAlert": Link("infrastructure.acknowledge_alert", {"alert_id": "$response.body#/data/alerts/0/id"})
    },
)
def infrastructure_alerts(query: AlertsQuery):
    return ok({"alerts": infrastructure.alerts(current_settings(), query.hours, query.severity)})


@bp.post("/alerts/<alert_id>/acknowledge")
@endpoint(
    path=AlertPath,
    response=InfraAlert,
    summary="Acknowledge an infrastructure alert",
    tags=TAGS,
    errors={404: "Unknown alert"},
)
def acknowledge_alert(alert_id: str):
    body = infrastructure.acknowledge(current_settings(), alert_id, actor())
    audited("alert_acknowledged", "infrastructure_alert", alert_id)
    return ok(body)


@bp.get("/ip-reputation")
@endpoint(
    response=IpReputationList,
    summary="Sending reputation of the addresses the e-mail channel sends from",
    tags=TAGS,
    errors={503: "Redis unavailable"},
)
def ip_reputation_report():
    """Answered from cached look-ups: the service host's `dnsbl_monitor` asks the DNSBL zones and reverse
    DNS off the request path and keeps each answer for its TTL. Score: the share of the last 24 hours'
    messages accepted (a deferral counts half; 100 without any), minus VIGIL_DNSBL_PENALTY per listing.
    Status: `critical` if listed or below VIGIL_IP_REPUTATION_CRITICAL, `warning` below
    VIGIL_IP_REPUTATION_WARNING, `unknown` when a zone could not be checked, else `good`. A DNS failure is
    `unknown`, never an error."""
    with dependencies_required():
        return ok(ip_reputation.report(current_settings()))
