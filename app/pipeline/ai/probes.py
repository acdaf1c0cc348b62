"""The AI services the pipeline calls, as health sees them: the configured detector and analyser.

A built-in backend is healthy when its model loads (no network); an HTTP backend is probed with a
short GET (`/health` for the detector, `/models` for the OpenAI-compatible LLM API), and a service
whose breaker is open is unhealthy whatever the probe says, because the pipeline will not call it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.core.settings import Settings
from app.core.time import iso_now
from app.pipeline.ai.analysers import get_analyser
from app.pipeline.ai.breakers import breaker
from app.pipeline.ai.detectors import get_detector

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vigil-ai-probe")


def backends(settings: Settings) -> list[Any]:
    return [get_detector(settings), get_analyser(settings)]


def _probe(backend: Any, settings: Settings, timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    ok, error = backend.probe(timeout)
    elapsed = round((time.perf_counter() - t0) * 1000, 2)
    try:
        state = breaker(backend.service, settings).snapshot()["state"]
    except Exception:  # Redis away: the breaker's state is unknown, the probe still counts
        state = "unknown"
    if ok and state == "open":
        ok, error = False, "circuit breaker open"
    return {
        "name": backend.service,
        "display_name": backend.display_name,
        "backend": backend.name,
        "status": "healthy" if ok else "unhealthy",
        "url": backend.url,
        "response_time_ms": elapsed,
        "error": error,
        "circuit_state": state,
        "last_check": iso_now(),
    }


def probe_all(settings: Settings, timeout: float | None = None) -> list[dict[str, Any]]:
    """Probe every AI service in parallel, each bounded by `timeout` (default: most of the health
    timeout, so the probe ends before the health check that runs it gives up)."""
    timeout = timeout if timeout is not None else max(0.2, settings.health_timeout * 0.8)
    futures = [_pool.submit(_probe, b, settings, timeout) for b in backends(settings)]
    return [f.result() for f in futures]
