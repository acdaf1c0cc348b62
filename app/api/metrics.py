"""Prometheus metrics (004): `/api/metrics`. The per-request HTTP metrics are recorded by
app/api/kit/instrumentation.py."""
from __future__ import annotations

from flask import Blueprint, Response, current_app

from app.api.kit.endpoint import endpoint
from app.jobs.metrics import LiveCollector
from app.observability import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/api/metrics")
@endpoint(summary="Prometheus metrics (text exposition format, all API and worker processes)",
          tags=["metrics"], public=True)
def prometheus_metrics():
    settings = current_app.config["VIGIL_SETTINGS"]
    body = metrics.render(settings, live=[LiveCollector(settings)])
    return Response(body, status=200, content_type=metrics.CONTENT_TYPE)
