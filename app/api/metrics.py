"""Prometheus metrics (004): `/api/metrics`. The per-request HTTP metrics are recorded by
app/api/kit/instrumentation.py."""
from __future__ import annotations

from flask import Blueprint, Response

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.jobs.metrics import LiveCollector
from app.observability import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/api/metrics")
@endpoint(summary="Prometheus metrics (text exposition format, all API and worker processes)",
          tags=["metrics"], probe=True)
def prometheus_metrics():
    settings = current_settings()
    body = metrics.render(settings, live=[LiveCollector(settings)])
    return Response(body, status=200, content_type=metrics.CONTENT_TYPE)
