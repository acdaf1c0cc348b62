"""Notification family (queues `notification:high`, `notification`): one e-mail or webhook each,
and the evaluation of the alert rules for an event (`fire_alerts`), which produces them.

The delivery is `app.alerts.notifications.deliver`; this module owns the retry policy: a
temporary failure (server down, timeout, 4xx SMTP, 5xx HTTP) is retried with exponential backoff
(2 s up to 300 s, at most `MAX_RETRIES` times); a permanent one (address or message refused,
channel not configured) fails at once and stays `failed` in the registry, retryable by hand.

A notification that carries an `alert_id` reports its outcome to the alert
(`app.alerts.alerts.record_delivery`): delivered, or failed once no retry is left. That report is
bookkeeping: if it cannot be written, the delivery still counts and is not repeated.
"""
from __future__ import annotations

import logging

import redis
from sqlalchemy.exc import OperationalError

from app.alerts import alerts
from app.core.errors import Unavailable as BrokerUnavailable
from app.alerts.notifications import Unavailable, deliver
from app.core.settings import get_settings
from app.celery.app import celery

log = logging.getLogger(__name__)

MAX_RETRIES = 8
MAX_COUNTDOWN = 300
FIRE_MAX_RETRIES = 5


def _report(alert_id: str | None, channel: str, job_id: str, delivered: bool, error: str | None = None) -> None:
    if not alert_id:
        return
    try:
        alerts.record_delivery(get_settings(), alert_id, channel, job_id, delivered=delivered, error=error)
    except Exception:
        log.warning("could not record the %s delivery of alert %s", channel, alert_id, exc_info=True)


@celery.task(name="vigil.notification.send", bind=True, soft_time_limit=25, time_limit=30, max_retries=MAX_RETRIES)
def send(self, channel: str, **payload) -> dict:
    """Deliver one notification (e-mail or webhook)."""
    alert_id = payload.get("alert_id")
    try:
        result = deliver(get_settings(), {"channel": channel, **payload})
    except Unavailable as exc:
        if self.request.retries >= MAX_RETRIES:
            _report(alert_id, channel, self.request.id, False, f"gave up after {MAX_RETRIES} retries: {exc}")
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, 2 ** (self.request.retries + 1)))
    except Exception as exc:  # Rejected, or anything unexpected: not retried, so final
        _report(alert_id, channel, self.request.id, False, f"{type(exc).__name__}: {exc}")
        raise
    _report(alert_id, channel, self.request.id, True)
    return result


@celery.task(name="vigil.notification.fire_alerts", bind=True, soft_time_limit=50, time_limit=60,
             max_retries=FIRE_MAX_RETRIES)
def fire_alerts(self, event_id: int) -> dict:
    """Evaluate the alert rules for one event; raise its alerts and enqueue their notifications.

    Safe to retry (see app/alerts/alerts.py): the database or the broker being unavailable is
    retried with backoff, and the retry only completes what the failed attempt left undone.
    """
    try:
        return alerts.fire_for_event(get_settings(), event_id)
    except (OperationalError, BrokerUnavailable, redis.RedisError) as exc:
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, 2 ** (self.request.retries + 1)))
