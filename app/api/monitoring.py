"""Prometheus stack health and targets (001), read from the configured Prometheus HTTP API."""
from __future__ import annotations

from flask import Blueprint

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.observability import monitoring
bp = Blueprint("monitoring", __name__)


@bp.get("/api/system/monitoring/health")
@endpoint(summary="Monitoring stack health (Prometheus reachability, targets, exporters)", tags=["monitoring"])
def monitoring_health():
    """Always 200: `healthy` is false when Prometheus is unreachable or most targets are down."""
    return monitoring.health(current_settings())


@bp.get("/api/system/monitoring/targets")
@endpoint(summary="Prometheus scrape targets", tags=["monitoring"], errors={503: "Prometheus unreachable"})
def monitoring_targets():
    return monitoring.targets(current_settings())
