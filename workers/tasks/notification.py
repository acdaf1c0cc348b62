"""Notification family (queues `notification:high`, `notification`)."""
from __future__ import annotations

from workers.celery_app import celery


@celery.task(name="vigil.notification.send", soft_time_limit=25, time_limit=30)
def send(channel: str, **payload) -> dict:
    """Deliver one notification (e-mail or webhook)."""
    raise NotImplementedError("notification delivery is built by a later pipeline issue")
