"""Prometheus metrics (004): `/api/metrics`, and the HTTP metrics every request records.

Requests are labelled by their URL rule (`/api/logs/<log_id>`), never the raw path, so ids in
paths cannot create unbounded series; a path no rule matches is `<unmatched>`. Timing starts in
the first before-request hook, so time spent refusing credentials counts too. Every request
also leaves one structured log line (DEBUG for reads that succeeded, INFO for writes and 4xx,
WARNING for 5xx) with its duration, which is how a request id finds its own lines in the logs.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from flask.blueprints import BlueprintSetupState

from app.api.endpoint import endpoint
from app.services import metrics

bp = Blueprint("metrics", __name__)
log = logging.getLogger("vigil.http")

UNMATCHED = "<unmatched>"


def _start() -> None:
    g.vigil_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("vigil_started", None)
    elapsed = time.perf_counter() - started if started is not None else None
    rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    status = response.status_code
    try:
        metrics.HTTP_REQUESTS.labels(request.method, rule, str(status)).inc()
        if elapsed is not None:
            metrics.HTTP_LATENCY.labels(request.method, rule).observe(elapsed)
    except Exception:  # a metric must never fail a request
        log.debug("http metrics failed", exc_info=True)
    level = logging.WARNING if status >= 500 else (
        logging.INFO if status >= 400 or request.method not in ("GET", "HEAD", "OPTIONS") else logging.DEBUG)
    if log.isEnabledFor(level):
        duration_ms = round(elapsed * 1000, 3) if elapsed is not None else None
        log.log(level, "%s %s %s", request.method, request.path, status,
                extra={"duration_ms": duration_ms, "method": request.method, "path": request.path,
                       "endpoint": rule, "status": status})
    return response


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    app: Flask = state.app
    # After the request-id hook (position 0), before auth: refusals are timed and counted too.
    app.before_request_funcs.setdefault(None, []).insert(1, _start)
    app.after_request(_record)


@bp.get("/api/metrics")
@endpoint(summary="Prometheus metrics (text exposition format, all API and worker processes)",
          tags=["metrics"], public=True)
def prometheus_metrics():
    body = metrics.render(current_app.config["VIGIL_SETTINGS"])
    return Response(body, status=200, content_type=metrics.CONTENT_TYPE)
