"""Prometheus stack health and targets (System Monitoring guide), read from the configured Prometheus HTTP API."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.observability import monitoring

bp = Blueprint("monitoring", __name__)

TargetHealth = Literal["up", "down", "unknown"]


class JobTargets(Answer):
    job: str
    total: int
    up: int
    down: int
    unknown: int


class Exporter(Answer):
    name: str
    status: Literal["up", "down", "unknown", "not_configured"]
    endpoint: str | None
    last_scrape: str | None
    error: str | None


class MetricsCollection(Answer):
    collecting: bool
    last_successful_scrape: str | None
    scrape_interval_seconds: float | None = Field(description="The shortest interval of the active targets")
    total_series: int | None = Field(description="The TSDB head's series count")


class MonitoringHealth(Answer):
    healthy: bool = Field(description="false when Prometheus is unreachable or more targets are down than up")
    prometheus_reachable: bool
    prometheus_url: str | None
    targets_summary: list[JobTargets]
    exporters: list[Exporter]
    metrics_collection: MetricsCollection
    issues: list[str]
    timestamp: str


class Target(Answer):
    job: str
    instance: str | None
    health: TargetHealth
    labels: dict[str, str]
    last_scrape: str | None
    last_error: str | None
    scrape_duration_seconds: float | None


class Targets(Answer):
    targets: list[Target]
    total: int
    up: int
    down: int
    unknown: int
    jobs: list[str]
    timestamp: str


@bp.get("/api/system/monitoring/health")
@endpoint(
    response=MonitoringHealth,
    summary="Monitoring stack health (Prometheus reachability, targets, exporters)",
    tags=["monitoring"],
    offline=True,
)
def monitoring_health():
    """Always 200: `healthy` is false when Prometheus is unreachable or most targets are down."""
    return monitoring.health(current_settings())


@bp.get("/api/system/monitoring/targets")
@endpoint(
    response=Targets,
    summary="Prometheus scrape targets",
    tags=["monitoring"],
    offline=True,
    errors={503: "Prometheus unreachable, or not configured (VIGIL_PROMETHEUS_URL empty)"},
)
def monitoring_targets():
    return monitoring.targets(current_settings())
