"""Analysis family (queue `analysis`).

The work is `app.pipeline.events.analyse_batch`; this module owns the retry policy. An analyser
that is unavailable is retried `MAX_RETRIES` times with backoff; the last attempt falls back to
the rule-based scorer when `VIGIL_ANALYSIS_FALLBACK` is on (see app/pipeline/events.py). A retried
or duplicated analysis never writes a second event: the event is unique per batch.

The event is then handed to the alert rules (`app.alerts.alerts.schedule_firing`), as a job of
its own on `notification:high`: a slow or failing rule evaluation cannot slow down or fail the
analysis, and it is retried on its own. If the hand-over itself fails (database or broker away),
the analysis is retried, finds its event and hands it over again. It is handed over for a found event too, not only a new one: a worker killed
between writing the event and handing it over is re-run, finds the event, and must still alert.
The hand-over's idempotency key per event, and alerts being unique per (rule, event), keep that
from alerting twice.
"""
from __future__ import annotations

import time

from app.alerts import alerts
from app.pipeline.ai.analysers import AnalyserUnavailable
from app.pipeline.ai.breakers import CircuitOpenError
from app.pipeline.events import analyse_batch
from app.core.settings import get_settings
from app.celery.app import celery

MAX_RETRIES = 3
MAX_COUNTDOWN = 300


@celery.task(name="vigil.analysis.analyze", bind=True, soft_time_limit=240, time_limit=300,
             max_retries=MAX_RETRIES)
def analyze(self, batch_id: str, camera_id: str | None = None) -> dict:
    """Score a closed detection batch and create its event."""
    started_at = time.time()
    retries = self.request.retries
    settings = get_settings()
    try:
        event = analyse_batch(settings, batch_id, started_at=started_at, first_attempt=retries == 0,
                              final_attempt=retries >= MAX_RETRIES)
    except CircuitOpenError as exc:  # only without fallback: wait for the breaker
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, max(1.0, exc.retry_after)))
    except AnalyserUnavailable as exc:
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, 5.0 * 2 ** retries))
    try:
        event["alerts_job_id"] = alerts.schedule_firing(settings, event["event_id"], event["batch_id"])
    except Exception as exc:  # the event is stored; the retry finds it and only hands it over again
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, 2.0 * 2 ** retries))
    return event
