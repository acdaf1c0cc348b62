"""The monitoring.* webhook events, delivered through the notification queues.

Each event is one `vigil.notification.send` job per subscribed URL (`VIGIL_MONITORING_WEBHOOK_URLS`, plus
the `slack`/`pagerduty` URLs for an alert whose rule names those channels) on `notification:high`; the
notification worker POSTs it as JSON, signed with `VIGIL_MONITORING_WEBHOOK_SECRET` (header
`X-Vigil-Signature: sha256=<hex of HMAC-SHA256 over the body>`) and carrying its id as
`X-Vigil-Delivery`, and retries it with jittered backoff like every notification. A receiver verifies
the signature over the raw body and drops a delivery id it has already seen.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from app.celery.app import celery
from app.core.settings import Settings
from app.core.time import iso_now

log = logging.getLogger(__name__)

EVENTS = (
    "monitoring.alert_triggered",
    "monitoring.alert_resolved",
    "monitoring.agent_status_changed",
    "monitoring.agent_restarted",
    "monitoring.threshold_exceeded",
)
QUEUE = "notification:high"


def subscribers(settings: Settings) -> list[str]:
    return [u.strip() for u in settings.monitoring_webhook_urls.split(",") if u.strip()]


def channel_url(settings: Settings, channel: str) -> str | None:
    """Where an alert channel posts: `slack` and `pagerduty` are webhook destinations configured by URL."""
    return {"slack": settings.monitoring_slack_url, "pagerduty": settings.monitoring_pagerduty_url}.get(channel) or None


def emit(settings: Settings, event: str, data: dict[str, Any], extra_urls: list[str] | None = None) -> list[str]:
    """Queue `event` to every subscriber; returns the notification job ids. A broker outage is logged,
    not raised: a webhook must never fail the control or the evaluation that caused it."""
    assert event in EVENTS, event
    body = {"id": uuid.uuid4().hex, "event": event, "occurred_at": iso_now(), "data": data}
    jobs = []
    for url in dict.fromkeys([*subscribers(settings), *(extra_urls or [])]):
        delivery = dict(body, id=f"{body['id']}-{len(jobs)}")
        try:
            result = celery.send_task(
                "vigil.notification.send",
                kwargs={"channel": "webhook", "url": url, "monitoring_event": delivery},
                queue=QUEUE,
            )
            jobs.append(result.id)
        except Exception:
            log.warning("could not queue the %s webhook to %s", event, url, exc_info=True)
    return jobs
