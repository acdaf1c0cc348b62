"""Analysis family (queue `analysis`).

The work is `app.pipeline.events.analyse_batch`; this module owns the retry policy. An analyser
that is unavailable is retried `MAX_RETRIES` times by Celery (`autoretry_for`) with jittered
exponential backoff (a random countdown between 0 and 5 s, 10 s, 20 s), so batches failing together
do not retry together; an open breaker is retried when it will admit a trial call. The last attempt
falls back to the rule-based scorer when `VIGIL_ANALYSIS_FALLBACK` is on (see app/pipeline/events.py):
the attempt itself knows it is the last (`final_attempt`), so autoretry needs no hook for it. A retried
or duplicated analysis never writes a second event: the event is unique per batch. Every countdown is
at most `RETRY_COUNTDOWN_MAX` (app/celery/config.py).

The event is then handed to the alert rules (`app.alerts.alerts.schedule_firing`), as a job of
its own on `notification:high`: a slow or failing rule evaluation cannot slow down or fail the
analysis, and it is retried on its own. If the hand-over itself fails (database or broker away),
the analysis is retried, finds its event and hands it over again. That retry is explicit (any
exception of the hand-over retries, which `autoretry_for` could not scope to this step alone) but its
countdown is Celery's own jittered backoff, from 2 s. It is handed over for a found event too, not
only a new one: a worker killed between writing the event and handing it over is re-run, finds the
event, and must still alert.
The hand-over's idempotency key per event, and alerts being unique per (rule, event), keep that
from alerting twice.
"""

from __future__ import annotations

import time

from celery.utils.time import get_exponential_backoff_interval

from app.alerts import alerts
from app.celery.app import celery
from app.celery.config import RETRY_COUNTDOWN_MAX
from app.core.settings import get_settings
from app.pipeline.ai.analysers import AnalyserUnavailable
from app.pipeline.ai.breakers import CircuitOpenError
from app.pipeline.events import analyse_batch

MAX_RETRIES = 3


@celery.task(
    name="vigil.analysis.analyze",
    bind=True,
    soft_time_limit=240,
    time_limit=300,
    max_retries=MAX_RETRIES,
    autoretry_for=(AnalyserUnavailable,),
    retry_backoff=5,
    retry_backoff_max=RETRY_COUNTDOWN_MAX,
    retry_jitter=True,
)
def analyze(self, batch_id: str, camera_id: str | None = None) -> dict:
    """Score a closed detection batch and create its event."""
    started_at = time.time()
    retries = self.request.retries
    settings = get_settings()
    try:
        event = analyse_batch(
            settings, batch_id, started_at=started_at, first_attempt=retries == 0, final_attempt=retries >= MAX_RETRIES
        )
    except CircuitOpenError as exc:  # only without fallback: wait for the breaker
        raise self.retry(exc=exc, countdown=min(RETRY_COUNTDOWN_MAX, max(1.0, exc.retry_after)))
    try:
        event["alerts_job_id"] = alerts.schedule_firing(settings, event["event_id"], event["batch_id"])
    except Exception as exc:  # the event is stored; the retry finds it and only hands it over again
        raise self.retry(
            exc=exc,
            countdown=get_exponential_backoff_interval(
                factor=2, retries=retries, maximum=RETRY_COUNTDOWN_MAX, full_jitter=True
            ),
        )
    return event
