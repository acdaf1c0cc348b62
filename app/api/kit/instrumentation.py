"""What every request records: Prometheus HTTP metrics, the timings behind the infrastructure
figures, and one structured log line.

Requests are labelled by their URL rule (`/api/logs/<log_id>`, converter names left out), never
the raw path, so ids in paths cannot create unbounded series; a path no rule matches is `<unmatched>`. Timing starts in
the second before-request hook (after the request id), so time spent refusing credentials counts
too. The log line is DEBUG for reads that succeeded, INFO for writes and 4xx, WARNING for 5xx,
with its duration: that is how a request id finds its own lines in the logs.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, current_app, g, request

from app.api.kit.meta import meta_of
from app.observability import metrics
from app.observability.api_timings import Sampler

log = logging.getLogger("vigil.http")

UNMATCHED = "<unmatched>"
_CONVERTER = re.compile(r"<[^:<>]+:([^<>]+)>")


def init_instrumentation(app: Flask) -> None:
    sampler = Sampler(app.config["VIGIL_SETTINGS"])
    app.extensions["vigil_sampler"] = sampler

    def start() -> None:
        g.vigil_started = time.perf_counter()

    def record(response: Response) -> Response:
        started = g.pop("vigil_started", None)
        elapsed = time.perf_counter() - started if started is not None else None
        rule = _CONVERTER.sub(r"<\1>", request.url_rule.rule) if request.url_rule is not None else UNMATCHED
        status = response.status_code
        try:
            metrics.HTTP_REQUESTS.labels(request.method, rule, str(status)).inc()
            if elapsed is not None:
                metrics.HTTP_LATENCY.labels(request.method, rule).observe(elapsed)
                meta = meta_of(current_app.view_functions.get(request.endpoint)) if request.url_rule else None
                sampler.add(elapsed * 1000, status, probe=bool(meta and meta.probe))
        except Exception:  # a metric must never fail a request
            log.debug("http metrics failed", exc_info=True)
        level = (
            logging.WARNING
            if status >= 500
            else (logging.INFO if status >= 400 or request.method not in ("GET", "HEAD", "OPTIONS") else logging.DEBUG)
        )
        if log.isEnabledFor(level):
            duration_ms = round(elapsed * 1000, 3) if elapsed is not None else None
            log.log(
                level,
                "%s %s %s",
                request.method,
                request.path,
                status,
                extra={
                    "duration_ms": duration_ms,
                    "method": request.method,
                    "path": request.path,
                    "endpoint": rule,
                    "status": status,
                },
            )
        return response

    # After the request-id hook (position 0), before auth: refusals are timed and counted too.
    app.before_request_funcs.setdefault(None, []).insert(1, start)
    app.after_request(record)
