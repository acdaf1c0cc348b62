"""Notification family (queues `notification:high`, `notification`): one e-mail or webhook each.

The delivery is `app.services.notifications.deliver`; this module owns the retry policy: a
temporary failure (server down, timeout, 4xx SMTP, 5xx HTTP) is retried with exponential backoff
(2 s up to 300 s, at most `MAX_RETRIES` times); a permanent one (address or message refused,
channel not configured) fails at once and stays `failed` in the registry, retryable by hand.
"""
from __future__ import annotations

from app.services.notifications import Unavailable, deliver
from app.settings import get_settings
from workers.celery_app import celery

MAX_RETRIES = 8
MAX_COUNTDOWN = 300


@celery.task(name="vigil.notification.send", bind=True, soft_time_limit=25, time_limit=30, max_retries=MAX_RETRIES)
def send(self, channel: str, **payload) -> dict:
    """Deliver one notification (e-mail or webhook)."""
    try:
        return deliver(get_settings(), {"channel": channel, **payload})
    except Unavailable as exc:
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, 2 ** (self.request.retries + 1)))
