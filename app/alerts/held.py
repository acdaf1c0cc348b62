"""Deliveries that quiet hours held back (`VIGIL_QUIET_HOURS_HELD=send`), sent once they end.

The service host's `held_releaser` calls `release_due` every `VIGIL_HELD_RELEASE_INTERVAL` seconds. Each
held alert is decided again at the current time (app/alerts/preferences.py): still inside quiet hours, it
waits; held back for another reason now (the operator turned notifications off meanwhile), it is marked
suppressed with that reason; acknowledged or dismissed meanwhile, it is not sent (someone saw it);
otherwise its held channels are queued. The jobs carry the alert's first-attempt idempotency keys, so two
releasers (or a releaser that crashed after enqueueing) queue each channel once; the delivery entries
and the removal of the `held_notifications` row are written in one transaction after the enqueue.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from app.alerts import alerts, preferences
from app.core.db import session_scope
from app.core.settings import Settings
from app.models import Alert, HeldNotification

log = logging.getLogger(__name__)
BATCH = 200  # held alerts released per pass: a long night's worth, without one endless transaction


def _held_channels(alert: Alert) -> dict[str, int]:
    return {c: 1 for c in alert.channels if alert.deliveries.get(c, {}).get("status") == "held"}


def _forget(settings: Settings, alert_id: str) -> None:
    with session_scope(settings) as session:
        session.execute(delete(HeldNotification).where(HeldNotification.alert_id == alert_id))


def release_one(settings: Settings, alert_id: str, now: datetime | None = None) -> str:
    """Release one held alert if its quiet hours are over: `waiting`, `sent`, `suppressed` or `skipped`."""
    now = now or datetime.now(UTC)
    alert, event, dest = alerts._load_for_dispatch(settings, alert_id)
    channels = _held_channels(alert)
    if not channels:
        _forget(settings, alert_id)
        return "skipped"
    with session_scope(settings) as session:
        prefs = preferences.snapshot(session, [alert.camera_id])
    decision = preferences.decide(
        settings,
        prefs,
        camera_id=alert.camera_id,
        risk_score=event.risk_score,
        risk_level=event.risk_level,
        severity=alert.severity,
        at=now,
    )
    if decision.reason == "quiet_hours":
        return "waiting"
    if alert.status in ("acknowledged", "dismissed") or not decision.deliver:
        reason = decision.reason or "quiet_hours"
        detail = decision.detail or f"alert {alert.status} before quiet hours ended; not sent"
        entries = {c: {"status": "suppressed", "reason": reason, "error": detail} for c in channels}
        outcome = "suppressed"
        failure = None
    else:
        entries, failure = alerts._enqueue_channels(settings, alert, event, dest, channels)
        outcome = "sent"
    if failure is not None and not entries:
        raise failure

    def apply(a: Alert) -> None:
        """Replace the held entries, reason and all; except where the send task already reported on the
        very job queued here (it can run before this write): its word is kept."""
        deliveries = dict(a.deliveries)
        for channel, entry in entries.items():
            current = deliveries.get(channel, {})
            if current.get("status") in ("delivered", "failed") and current.get("job_id") == entry.get("job_id"):
                deliveries[channel] = {k: v for k, v in current.items() if k != "reason"}  # no longer held
                continue
            deliveries[channel] = entry
        a.deliveries = deliveries

    alerts._change(settings, alert_id, apply)
    if failure is not None:
        raise failure  # the channels that did get queued are recorded; the row stays for the rest
    _forget(settings, alert_id)
    return outcome


def release_due(settings: Settings) -> dict[str, Any]:
    """One pass over the held alerts, oldest first; counts of each outcome. An alert that fails
    (broker down) stays held for the next pass and does not stop the others."""
    with session_scope(settings) as session:
        ids = list(
            session.execute(select(HeldNotification.alert_id).order_by(HeldNotification.held_at).limit(BATCH)).scalars()
        )
    counts = {"waiting": 0, "sent": 0, "suppressed": 0, "skipped": 0, "failed": 0}
    now = datetime.now(UTC)
    first_error: Exception | None = None
    for alert_id in ids:
        try:
            counts[release_one(settings, alert_id, now)] += 1
        except Exception as exc:
            log.warning("held alert %s: release failed: %s", alert_id, exc)
            counts["failed"] += 1
            first_error = first_error or exc
    if first_error is not None and counts["failed"] == len(ids):
        raise first_error
    return counts
