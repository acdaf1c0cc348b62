"""Notification family (queues `notification:high`, `notification`): one e-mail or webhook each,
and the evaluation of the alert rules for an event (`fire_alerts`), which produces them.

The delivery is `app.alerts.notifications.deliver`; this module owns the retry policy: a
temporary failure (server down, timeout, 4xx SMTP, 5xx HTTP) is retried by Celery (`autoretry_for`)
with jittered exponential backoff (a random countdown between 0 and 2 s, 4 s, 8 s, ..., at most
`RETRY_COUNTDOWN_MAX` from app/celery/config.py, at most `MAX_RETRIES` times), so the notifications
an outage failed together do not all hit the recovering server at once; a permanent one (address or
message refused, channel not configured) fails at once and stays `failed` in the registry,
retryable by hand. `fire_alerts` is retried the same way when the database or the broker is away.

A notification that carries an `alert_id` reports its outcome to the alert
(`app.alerts.alerts.record_delivery`): delivered, or failed once no retry is left. The last attempt
reports before it re-raises for autoretry (which then gives up), in the task itself, so the report
is written exactly when Celery's own retry count says the job is final. That report is
bookkeeping: if it cannot be written, the delivery still counts and is not repeated.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy.exc import OperationalError

from app.alerts import alerts
from app.alerts.notifications import Unavailable, deliver
from app.celery.app import celery
from app.celery.config import RETRY_COUNTDOWN_MAX
from app.core.errors import Unavailable as BrokerUnavailable
from app.core.settings import get_settings

log = logging.getLogger(__name__)

MAX_RETRIES = 8
FIRE_MAX_RETRIES = 5


def _report(alert_id: str | None, channel: str, job_id: str, delivered: bool, error: str | None = None) -> None:
    if not alert_id:
        return
    try:
        alerts.record_delivery(get_settings(), alert_id, channel, job_id, delivered=delivered, error=error)
    except Exception:
        log.warning("could not record the %s delivery of alert %s", channel, alert_id, exc_info=True)


@celery.task(
    name="vigil.notification.send",
    bind=True,
    soft_time_limit=25,
    time_limit=30,
    max_retries=MAX_RETRIES,
    autoretry_for=(Unavailable,),
    retry_backoff=2,
    retry_backoff_max=RETRY_COUNTDOWN_MAX,
    retry_jitter=True,
)
def send(self, channel: str, **payload) -> dict:
    """Deliver one notification (e-mail or webhook)."""
    alert_id = payload.get("alert_id")
    try:
        result = deliver(get_settings(), {"channel": channel, **payload})
    except Unavailable as exc:
        if self.request.retries >= MAX_RETRIES:  # autoretry will give up on this one: it is final
            _report(alert_id, channel, self.request.id, False, f"gave up after {MAX_RETRIES} retries: {exc}")
        raise  # to autoretry_for, which retries it with jittered backoff
    except Exception as exc:  # Rejected, or anything unexpected: not retried, so final
        _report(alert_id, channel, self.request.id, False, f"{type(exc).__name__}: {exc}")
        raise
    _report(alert_id, channel, self.request.id, True)
    return result


@celery.task(
    name="vigil.notification.fire_alerts",
    bind=True,
    soft_time_limit=50,
    time_limit=60,
    max_retries=FIRE_MAX_RETRIES,
    autoretry_for=(OperationalError, BrokerUnavailable, redis.RedisError),
    retry_backoff=2,
    retry_backoff_max=RETRY_COUNTDOWN_MAX,
    retry_jitter=True,
)
def fire_alerts(self, event_id: int) -> dict:
    """Evaluate the alert rules for one event; raise its alerts and enqueue their notifications.

    Safe to retry (see app/alerts/alerts.py): the database or the broker being unavailable is
    retried with jittered backoff (`autoretry_for`), and the retry only completes what the failed
    attempt left undone.
    """
    return alerts.fire_for_event(get_settings(), event_id)
