"""Prometheus metrics (System Operations API): `/api/metrics`. The per-request HTTP metrics are recorded by
app/api/kit/instrumentation.py."""

from __future__ import annotations

from flask import Blueprint, Response

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.jobs.metrics import LiveCollector
from app.observability import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/api/metrics")
@endpoint(
    summary="Prometheus metrics (text exposition format, all API and worker processes)",
    tags=["metrics"],
    probe=True,
    content={
        "text/plain": {"type": "string", "description": "Prometheus text format 0.0.4 (`text/plain; version=0.0.4`)"}
    },
)
def prometheus_metrics():
    """A scrape answers even while Redis is away (`vigil_redis_up 0`): a monitoring endpoint that
    fails with what it monitors tells nothing."""
    settings = current_settings()
    body = metrics.render(settings, live=[LiveCollector(settings)])
    return Response(body, status=200, content_type=metrics.CONTENT_TYPE)
