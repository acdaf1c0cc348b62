"""Analysis family (queue `analysis`).

The work is `app.services.events.analyse_batch`; this module owns the retry policy. An analyser
that is unavailable is retried `MAX_RETRIES` times with backoff; the last attempt falls back to
the rule-based scorer when `VIGIL_ANALYSIS_FALLBACK` is on (see app/services/events.py). A retried
or duplicated analysis never writes a second event: the event is unique per batch.
"""
from __future__ import annotations

import time

from app.services.analysers import AnalyserUnavailable
from app.services.breakers import CircuitOpenError
from app.services.events import analyse_batch
from app.settings import get_settings
from workers.celery_app import celery

MAX_RETRIES = 3
MAX_COUNTDOWN = 300


@celery.task(name="vigil.analysis.analyze", bind=True, soft_time_limit=240, time_limit=300,
             max_retries=MAX_RETRIES)
def analyze(self, batch_id: str, camera_id: str | None = None) -> dict:
    """Score a closed detection batch and create its event."""
    started_at = time.time()
    retries = self.request.retries
    try:
        return analyse_batch(get_settings(), batch_id, started_at=started_at, first_attempt=retries == 0,
                             final_attempt=retries >= MAX_RETRIES)
    except CircuitOpenError as exc:  # only without fallback: wait for the breaker
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, max(1.0, exc.retry_after)))
    except AnalyserUnavailable as exc:
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, 5.0 * 2 ** retries))
