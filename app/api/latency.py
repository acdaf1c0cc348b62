"""Times every request for the infrastructure figures (app/services/api_timings.py)."""
from __future__ import annotations

import time

from flask import Flask, Response, g

from app.services.api_timings import Sampler


def init_latency(app: Flask) -> None:
    sampler = Sampler(app.config["VIGIL_SETTINGS"])
    app.extensions["vigil_sampler"] = sampler

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("request_started")
        if started is not None:
            sampler.add((time.perf_counter() - started) * 1000, response.status_code)
        return response
