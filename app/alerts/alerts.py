"""Alerts: events fire alert rules, alerts become notifications (e-mail, webhook), operators
acknowledge or dismiss them.

The flow. The analysis task hands each scored event to `schedule_firing`, which enqueues
`vigil.notification.fire_alerts` on `notification:high` when any rule is enabled (idempotency key
per event, so a repeated analysis publishes nothing new). That task runs `fire_for_event`: every
enabled rule that matches (app/alerts/rules.py) and whose cooldown has elapsed raises one
`Alert`, and `dispatch` enqueues one `vigil.notification.send` job per channel, on
`notification:high` for high and critical rules, to the destinations its rule resolves to when it is
dispatched (app/alerts/destinations.py: the rule's own, else the global ones, which the environment
seeds). The send task reports back through `record_delivery`; the alert is `delivered` once any
channel delivered, `failed` once every channel failed for good (or none could be used), and `pending`
until then. Push is a channel of the spec that Vigil has no transport for: it is recorded as
`unavailable`, never pretended.

Notification preferences (app/alerts/preferences.py) decide, when an alert is first dispatched,
whether its channels are sent at all: a channel they hold back is recorded as `suppressed` (or `held`
until quiet hours end) with the reason, the alert carries `suppressed` (the reason), and nothing is
queued. The alert itself is always raised and recorded.

Failed channels are not the end: `resend` (POST /api/alerts/{id}/resend) queues a new attempt of each
failed or unavailable channel (say, once its destination is configured), and evaluating the event
again does the same for an alert that is `failed`, so a re-evaluation no longer just answers
`existing` and sends nothing. Each attempt has its own idempotency key per (alert, channel,
attempt), so two operators (or an operator and a re-evaluation) re-sending at once queue one job.
A failed alert can also be dismissed.

Every step can be repeated safely, which is what lets the tasks retry and a crashed worker's job be
re-run: an alert is unique per (rule, event), a repeat finds it and only enqueues the channels that
have no job yet, and those enqueues carry an idempotency key per (alert, channel, attempt), so no
channel is notified twice for one attempt.

Cooldown. One row per (rule, camera) in `alert_cooldowns` holds the event time of the last alert.
Raising an alert claims it with a single conditional UPDATE (`last_fired_at <= event time -
cooldown`) in the same transaction that inserts the alert. PostgreSQL re-checks the condition on
the row after a concurrent claim commits, and SQLite runs one writer at a time, so of several
workers firing for one camera at once exactly one wins; a failed insert rolls the claim back, so a
cooldown never starts without its alert. Why not a Redis `SET NX EX`: it cannot commit together with
the alert row (a crash in between would swallow an alert for a whole cooldown), and its TTL would
not follow a rule whose cooldown is changed. The clock is the event's time, not the worker's, so a
re-evaluation decides exactly as the first one did however late it runs; an event older than the
rule's last alert for that camera does not fire again.

Alert rows are changed by many processes (acknowledge in the API, deliveries in several notification
workers at once): simple transitions are one conditional UPDATE; read-modify-write changes of the
`deliveries` map start with an UPDATE of the row (`_locked`), which takes the row lock on
PostgreSQL and the write lock on SQLite before anything is read.

One module for the whole life of an alert (fire, deliver, re-send, operate, test) although it is over
500 lines: every step locks and moves the same row through the same statuses, and splitting them
would spread that state machine over several files. Where an alert is sent is app/alerts/destinations.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.alerts import destinations, preferences
from app.alerts.destinations import Destinations
from app.alerts.rules import load, matches, site_zone
from app.celery.queues import queue_for
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs.enqueue import enqueue
from app.live import bus as live
from app.models import Alert, AlertCooldown, AlertRule, AuditLog, Base, Detection, Event, HeldNotification, utcnow
from app.observability import audit
from app.observability.audit import Audit

log = logging.getLogger(__name__)

AlertStatus = Literal["pending", "delivered", "acknowledged", "dismissed", "failed"]
HIGH_PRIORITY = frozenset({"high", "critical"})
ACKNOWLEDGEABLE = ("pending", "delivered")
# Failed too (beyond the System Operations API): else a failed alert could never clear.
DISMISSABLE = ("pending", "delivered", "acknowledged", "failed")
RESENDABLE = ("failed", "unavailable")  # delivery statuses a re-send starts a new attempt for
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Who re-sends a failed alert's channels when its event is evaluated again, for the audit entry.
EVALUATION = Audit(actor="vigil:alert-evaluation")
# Any instant a test time can be judged at: a day's margin on both ends lets every site zone convert it.
EARLIEST, LATEST = (
    datetime.min.replace(tzinfo=UTC) + timedelta(days=2),
    datetime.max.replace(tzinfo=UTC) - timedelta(days=2),
)


def as_dict(alert: Alert) -> dict[str, Any]:
    """An alert in the System Operations API's shape (id, status, rule_id, event_id, timestamps) plus what it was about
    and how each channel fared."""
    return {
        "id": alert.id,
        "status": alert.status,
        "rule_id": alert.rule_id,
        "rule_name": alert.rule_name,
        "event_id": alert.event_id,
        "camera_id": alert.camera_id,
        "severity": alert.severity,
        "risk_score": alert.risk_score,
        "channels": alert.channels,
        "deliveries": alert.deliveries,
        "suppressed": preferences.suppressed_reason(alert.deliveries),
        "created_at": iso_utc(alert.created_at),
        "delivered_at": iso_utc(alert.delivered_at),
        "acknowledged_at": iso_utc(alert.acknowledged_at),
        "dismissed_at": iso_utc(alert.dismissed_at),
    }


def load_alert(session: Session, alert_id: str, fresh: bool = False) -> Alert:
    """The alert, or NotFound (404); `fresh` re-reads a row this transaction just updated."""
    alert = session.get(Alert, alert_id, populate_existing=fresh)
    if alert is None:
        raise NotFound(f"No alert with id '{alert_id}'", code="alert_not_found")
    return alert


def event_time(event: Event) -> datetime:
    """The time an event "happened" for schedules and cooldowns: when its activity began, so a
    person seen at 05:59 fires a night rule ending at 06:00 however late the analysis finishes."""
    return event.started_at


def object_types_of(session: Session, events: Iterable[Event]) -> dict[int, set[str]]:
    """Each event's detected object types, from its batch's detections (one query for all)."""
    by_batch = {e.batch_id: e.id for e in events}
    out: dict[int, set[str]] = {event_id: set() for event_id in by_batch.values()}
    if by_batch:
        rows = session.execute(
            select(Detection.batch_id, Detection.object_type).distinct().where(Detection.batch_id.in_(list(by_batch)))
        ).all()
        for batch_id, kind in rows:
            out[by_batch[batch_id]].add(kind)
    return out


# ---- firing -------------------------------------------------------------------------------------------------
def schedule_firing(settings: Settings, event_id: int, batch_id: str) -> str | None:
    """Hand a scored event to the alert rules; returns the job id, or None when no rule is enabled.

    Raises when the database or the broker cannot take the hand-over: the analysis task retries,
    finds its event (unique per batch) and hands it over again, so an alert is not lost to a
    broker blip. The idempotency key is the event's batch id, a random id, rather than the event
    id, which a new database would hand out again while the key still lives in Redis.
    """
    with session_scope(settings) as session:
        if session.execute(select(AlertRule.id).where(AlertRule.enabled.is_(True)).limit(1)).first() is None:
            return None
    return enqueue(
        "alerts", {"event_id": event_id}, priority="high", settings=settings, idempotency_key=f"alerts:batch:{batch_id}"
    ).job_id


@dataclass
class Outcome:
    rule_id: str
    result: str  # raised | existing | cooldown | no_match
    alert_id: str | None = None
    reasons: list[str] | None = None
    resent: list[str] | None = None  # an existing failed alert's channels queued again

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule_id": self.rule_id, "result": self.result}
        if self.alert_id:
            out["alert_id"] = self.alert_id
        if self.reasons:
            out["reasons"] = self.reasons
        if self.resent:
            out["resent"] = self.resent
        return out


def _claim_cooldown(session: Session, rule: AlertRule, camera_id: str, at: datetime) -> bool:
    """Claim the (rule, camera) cooldown for an event at `at`, in the caller's transaction."""
    if rule.cooldown_seconds <= 0:
        return True
    result = session.execute(
        update(AlertCooldown)
        .where(
            AlertCooldown.rule_id == rule.id,
            AlertCooldown.camera_id == camera_id,
            AlertCooldown.last_fired_at <= at - timedelta(seconds=rule.cooldown_seconds),
        )
        .values(last_fired_at=at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _ensure_cooldown_row(settings: Settings, rule_id: str, camera_id: str) -> None:
    """The row the claim updates; created ahead, in its own transaction, so that two workers creating
    it at once cost a harmless duplicate-key error here instead of an aborted claim."""
    with session_scope(settings) as session:
        if session.get(AlertCooldown, (rule_id, camera_id)) is not None:
            return
    try:
        with session_scope(settings) as session:
            session.add(AlertCooldown(rule_id=rule_id, camera_id=camera_id, last_fired_at=EPOCH))
    except IntegrityError:
        pass  # another worker created it (or the rule was just deleted: the claim will find no row)


def _existing(session: Session, rule_id: str, event_id: int) -> Alert | None:
    query = select(Alert).where(Alert.rule_id == rule_id, Alert.event_id == event_id)
    return session.execute(query).scalar_one_or_none()


def _raise_alert(settings: Settings, rule: AlertRule, event: Event) -> Outcome:
    """Raise the rule's alert for the event, unless it exists already or the cooldown holds."""
    with session_scope(settings) as session:
        found = _existing(session, rule.id, event.id)
    if found is not None:
        return Outcome(rule.id, "existing", found.id)
    at = event_time(event)
    if rule.cooldown_seconds > 0:
        _ensure_cooldown_row(settings, rule.id, event.camera_id)
    try:
        with session_scope(settings) as session:
            if not _claim_cooldown(session, rule, event.camera_id, at):
                # A concurrent evaluation of this very event may be what claimed it: then its alert
                # is this one (and dispatching it again is harmless).
                found = _existing(session, rule.id, event.id)
                if found is not None:
                    return Outcome(rule.id, "existing", found.id)
                return Outcome(
                    rule.id,
                    "cooldown",
                    reasons=[f"cooldown of {rule.cooldown_seconds}s for camera {event.camera_id} has not elapsed"],
                )
            alert = Alert(
                rule_id=rule.id,
                rule_name=rule.name,
                event_id=event.id,
                camera_id=event.camera_id,
                severity=rule.severity,
                risk_score=event.risk_score,
                status="pending",
                channels=list(rule.channels),
                deliveries={},
            )
            session.add(alert)
            session.flush()
            return Outcome(rule.id, "raised", alert.id)
    except IntegrityError:  # a concurrent evaluation of the same event raised it first
        with session_scope(settings) as session:
            found = _existing(session, rule.id, event.id)
        if found is None:
            raise
        return Outcome(rule.id, "existing", found.id)


def fire_for_event(settings: Settings, event_id: int) -> dict[str, Any]:
    """Evaluate every enabled rule for one event, raise the alerts and enqueue their notifications.

    Safe to repeat (see the module docstring). A rule whose alert could not be dispatched does not
    stop the others; the first such error is raised at the end, so the task retries the whole
    evaluation, which then only completes what is missing.
    """
    with session_scope(settings) as session:
        event = session.get(Event, event_id)
        if event is None:
            raise NotFound(f"No event with id {event_id}", code="event_not_found")
        kinds = object_types_of(session, [event])[event.id]
        rules = list(
            session.execute(
                select(AlertRule).where(AlertRule.enabled.is_(True)).order_by(AlertRule.created_at, AlertRule.id)
            ).scalars()
        )
    tz = site_zone(settings)
    outcomes: list[Outcome] = []
    failure: Exception | None = None
    for rule in rules:
        match = matches(rule, event, kinds, event_time(event), tz)
        if not match.matched:
            outcomes.append(Outcome(rule.id, "no_match", reasons=match.reasons))
            continue
        outcome = _raise_alert(settings, rule, event)
        outcomes.append(outcome)
        if outcome.result == "raised":
            _announce(
                "alert.created",
                {
                    "id": outcome.alert_id,
                    "event_id": event.id,
                    "camera_id": event.camera_id,
                    "rule_id": rule.id,
                    "severity": rule.severity,
                    "status": "pending",
                    "risk_score": event.risk_score,
                },
                settings,
            )
        if outcome.alert_id:
            try:
                _, outcome.resent = dispatch(settings, outcome.alert_id, retry_failed=outcome.result == "existing")
            except Exception as exc:
                log.warning("alert %s of rule %s: dispatch failed: %s", outcome.alert_id, rule.id, exc)
                failure = failure or exc
    if failure is not None:
        raise failure
    return {
        "event_id": event_id,
        "rules_evaluated": len(rules),
        "alerts": [o.alert_id for o in outcomes if o.result == "raised"],
        "outcomes": [o.as_dict() for o in outcomes],
    }


# ---- notifications ------------------------------------------------------------------------------------------
def _notification(
    settings: Settings, alert: Alert, event: Event, channel: str, dest: Destinations
) -> dict[str, Any] | str:
    """The notification payload for one channel, or why the channel cannot be used."""
    why = destinations.problem(settings, dest, channel)
    if why:
        return why
    subject = f"[{alert.severity.upper()}] {alert.rule_name}: camera {alert.camera_id}"
    message = (
        f"Alert rule '{alert.rule_name}' fired for event {event.id} on camera {alert.camera_id}: "
        f"risk {event.risk_score}/100 ({event.risk_level}), started {iso_utc(event.started_at)}.\n"
        f"{event.summary}\nAlert {alert.id}, severity {alert.severity}."
    )
    payload: dict[str, Any] = {
        "channel": channel,
        "subject": subject[:200],
        "message": message[:10000],
        "event_id": event.id,
        "alert_id": alert.id,
        # what a webhook receiver routes on, without parsing the message
        "alert": {
            "severity": alert.severity,
            "rule_id": alert.rule_id,
            "rule_name": alert.rule_name,
            "camera_id": alert.camera_id,
            "risk_score": event.risk_score,
            "risk_level": event.risk_level,
            "event_started_at": iso_utc(event.started_at),
            "created_at": iso_utc(alert.created_at),
        },
    }
    if channel == "email":
        payload["recipients"] = dest.email_recipients
    else:
        payload["url"] = dest.webhook_url
    return payload


def _attempt(entry: dict[str, Any] | None) -> int:
    """Which attempt a delivery entry is about: 1 unless a re-send made it a later one."""
    return int((entry or {}).get("attempt", 1))


def _idempotency_key(alert_id: str, channel: str, attempt: int) -> str:
    # The first attempt keeps the key it has always had, so a job queued before re-sends existed still dedupes.
    return f"alert:{alert_id}:{channel}" if attempt <= 1 else f"alert:{alert_id}:{channel}:{attempt}"


def _enqueue_channels(
    settings: Settings, alert: Alert, event: Event, dest: Destinations, attempts: dict[str, int]
) -> tuple[dict[str, dict[str, Any]], Exception | None]:
    """One notification job per channel and attempt: the delivery entries to record, and the first
    enqueue failure (broker down) to raise once what did succeed is recorded."""
    entries: dict[str, dict[str, Any]] = {}
    failure: Exception | None = None
    for channel, attempt in attempts.items():
        numbered = {"attempt": attempt} if attempt > 1 else {}
        payload = _notification(settings, alert, event, channel, dest)
        if isinstance(payload, str):
            entries[channel] = {"status": "unavailable", "error": payload, **numbered}
            continue
        priority = "high" if alert.severity in HIGH_PRIORITY else "normal"
        try:
            job = enqueue(
                "notification",
                payload,
                settings=settings,
                priority=priority,
                idempotency_key=_idempotency_key(alert.id, channel, attempt),
            )
        except InvalidInput as exc:  # a destination (from the environment) that the payload rules refuse
            entries[channel] = {"status": "failed", "error": exc.message, **numbered}
        except Conflict as exc:
            # This attempt was queued already, to the destination of the time (it changed since, say
            # while a failed dispatch waited for its retry): that job is the attempt, not a second one.
            entries[channel] = {
                "status": "queued",
                "job_id": (exc.extra or {}).get("job_id"),
                "queue": queue_for("notification", priority),
                **numbered,
            }
        except Exception as exc:
            failure = failure or exc
        else:
            entries[channel] = {"status": "queued", "job_id": job.job_id, "queue": job.queue, **numbered}
    return entries, failure


def _resendable(alert: Alert) -> dict[str, int]:
    """The channels a re-send queues again, each with its next attempt: failed or unavailable ones
    (push never has a transport, so it is not among them)."""
    return {
        c: _attempt(alert.deliveries.get(c)) + 1
        for c in alert.channels
        if c != "push" and alert.deliveries.get(c, {}).get("status") in RESENDABLE
    }


def _load_for_dispatch(settings: Settings, alert_id: str) -> tuple[Alert, Event, Destinations]:
    with session_scope(settings) as session:
        alert = load_alert(session, alert_id)
        return alert, session.get(Event, alert.event_id), destinations.for_rule(session, settings, alert.rule_id)


def dispatch(settings: Settings, alert_id: str, *, retry_failed: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Enqueue a notification for each of the alert's channels that has none yet; record the job
    ids, and the channels that cannot be used with the reason. With `retry_failed` (an evaluation
    of the event that found the alert), an alert that is `failed` also gets a new attempt of each
    failed channel. Returns the alert and the channels queued again. Enqueue failures (broker down)
    propagate after what did succeed is recorded."""
    alert, event, dest = _load_for_dispatch(settings, alert_id)
    first = {c: 1 for c in alert.channels if c not in alert.deliveries}
    held_back, hold = _held_back(settings, alert, event, first)
    if held_back:  # the preferences hold these channels back: recorded, nothing queued
        entries, failure = held_back, None
    else:
        entries, failure = _enqueue_channels(settings, alert, event, dest, first)
    resent: list[str] = []
    note = None
    if retry_failed and alert.status == "failed":
        again, retry_failure = _enqueue_channels(settings, alert, event, dest, _resendable(alert))
        failure = failure or retry_failure
        queued = {c: e for c, e in again.items() if e["status"] == "queued"}  # still unusable: left as it was
        if queued:
            entries.update(queued)
            resent = sorted(queued)
            note = audit.entry("alert_resent", "alert", alert.id, EVALUATION, _resend_details(alert, queued))
    also = [HeldNotification(alert_id=alert.id, held_at=utcnow())] if hold else []
    result = (
        _change(settings, alert_id, lambda a: _add_deliveries(a, entries), note, also) if entries else as_dict(alert)
    )
    if failure is not None:
        raise failure
    return result, resent


def _held_back(
    settings: Settings, alert: Alert, event: Event, channels: dict[str, int]
) -> tuple[dict[str, dict[str, Any]], bool]:
    """The delivery entries of channels the notification preferences hold back (app/alerts/preferences.py),
    decided at the alert's creation time so that a retried dispatch decides as the first one did; and
    whether they wait for the end of quiet hours (`held`) rather than being dropped (`suppressed`)."""
    if not channels:
        return {}, False
    with session_scope(settings) as session:
        prefs = preferences.snapshot(session, [alert.camera_id])
    decision = preferences.decide(
        settings,
        prefs,
        camera_id=alert.camera_id,
        risk_score=event.risk_score,
        risk_level=event.risk_level,
        severity=alert.severity,
        at=alert.created_at,
    )
    if decision.deliver:
        return {}, False
    status = "held" if decision.hold else "suppressed"
    entry = {"status": status, "reason": decision.reason, "error": decision.detail}
    return {c: dict(entry) for c in channels}, decision.hold


def _resend_details(alert: Alert, queued: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "rule_id": alert.rule_id,
        "event_id": alert.event_id,
        "channels": {
            c: {
                "attempt": e.get("attempt", 1),
                "job_id": e["job_id"],
                "previous_status": alert.deliveries.get(c, {}).get("status"),
                "previous_error": alert.deliveries.get(c, {}).get("error"),
            }
            for c, e in queued.items()
        },
    }


def resend(settings: Settings, alert_id: str, who: Audit) -> dict[str, Any]:
    """Queue a new attempt of each failed or unavailable channel of an alert that is not dismissed
    (audited). Conflict (409) when there is none, or when none can be queued (its destination is
    still missing: the answer names why); the alert answered carries `resent` (the channels queued)
    and `not_resent` (channel: why)."""
    alert, event, dest = _load_for_dispatch(settings, alert_id)
    if alert.status == "dismissed":
        raise Conflict(
            f"Alert {alert_id} is dismissed; a dismissed alert is not re-sent",
            code="alert_status_conflict",
            extra={"status": alert.status},
        )
    attempts = _resendable(alert)
    if not attempts:
        states = ", ".join(f"{c} {alert.deliveries.get(c, {}).get('status', 'not queued')}" for c in alert.channels)
        raise Conflict(
            f"Alert {alert_id} has no failed channel to re-send ({states})",
            code="nothing_to_resend",
            extra={"status": alert.status},
        )
    entries, failure = _enqueue_channels(settings, alert, event, dest, attempts)
    queued = {c: e for c, e in entries.items() if e["status"] == "queued"}
    not_resent = {c: e["error"] for c, e in entries.items() if e["status"] != "queued"}
    if not queued:
        if failure is not None:
            raise failure
        raise Conflict(
            f"Alert {alert_id}: nothing could be re-sent: " + "; ".join(f"{c}: {why}" for c, why in not_resent.items()),
            code="nothing_to_resend",
            extra={"status": alert.status, "not_resent": not_resent},
        )
    result = _change(
        settings,
        alert_id,
        lambda a: _add_deliveries(a, queued),
        audit.entry("alert_resent", "alert", alert_id, who, _resend_details(alert, queued)),
    )
    if failure is not None:
        raise failure
    return {**result, "resent": sorted(queued), "not_resent": not_resent}


def _add_deliveries(alert: Alert, entries: dict[str, dict[str, Any]]) -> None:
    deliveries = dict(alert.deliveries)
    for channel, entry in entries.items():
        current = deliveries.get(channel, {})
        if current.get("status") in ("delivered", "failed") and current.get("job_id") == entry.get("job_id"):
            # The send task reported on this very job already (it can run before this write): keep its word.
            deliveries[channel] = {**current, **({"attempt": entry["attempt"]} if "attempt" in entry else {})}
        elif _attempt(current) > _attempt(entry):
            continue  # a later attempt is recorded already (a concurrent re-send): it is the channel's story now
        elif _attempt(entry) > _attempt(current):
            deliveries[channel] = entry  # a new attempt: the last one's error and time no longer apply
        else:
            deliveries[channel] = {**current, **entry}
    alert.deliveries = deliveries


def record_delivery(
    settings: Settings, alert_id: str, channel: str, job_id: str | None, *, delivered: bool, error: str | None = None
) -> dict[str, Any]:
    """The send task's report for one channel: delivered, or failed for good."""

    def apply(alert: Alert) -> None:
        entry = {
            **alert.deliveries.get(channel, {}),
            "status": "delivered" if delivered else "failed",
            "at": iso_utc(utcnow()),
        }
        if job_id:
            entry["job_id"] = job_id
        if error:
            entry["error"] = error[:500]
        else:
            entry.pop("error", None)
        alert.deliveries = {**alert.deliveries, channel: entry}

    out = _change(settings, alert_id, apply)
    live.publish_quietly(
        "alert.delivered",
        {
            "alert_id": alert_id,
            "camera_id": out.get("camera_id"),
            "channel": channel,
            "delivered": delivered,
            "status": out["status"],
        },
        settings,
    )
    return out


def _refresh_status(alert: Alert) -> None:
    """pending -> delivered once any channel delivered; -> failed once none is left that could."""
    states = [alert.deliveries.get(c, {}).get("status") for c in alert.channels]
    if "delivered" in states and alert.delivered_at is None:
        alert.delivered_at = utcnow()
    if alert.status in ("acknowledged", "dismissed"):
        return  # an operator's decision stands; delivered_at still records the delivery
    if "delivered" in states:
        alert.status = "delivered"
    elif all(s in ("failed", "unavailable") for s in states):
        alert.status = "failed"
    else:
        alert.status = "pending"


def _locked(session: Session, alert_id: str) -> Alert:
    """The alert, read after an UPDATE of its row: the row (PostgreSQL) or database (SQLite) is
    locked for this transaction before anything is read, so concurrent read-modify-writes queue up
    instead of overwriting each other."""
    session.execute(
        update(Alert)
        .where(Alert.id == alert_id)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return load_alert(session, alert_id, fresh=True)


def _change(
    settings: Settings,
    alert_id: str,
    apply: Callable[[Alert], None],
    note: AuditLog | None = None,
    also: Iterable[Base] = (),
) -> dict[str, Any]:
    """Apply a change to the locked alert, refresh its status, and write `note` (an audit entry) and
    the rows `also` (a held notification) with it."""
    with session_scope(settings) as session:
        alert = _locked(session, alert_id)
        apply(alert)
        _refresh_status(alert)
        if note is not None:
            session.add(note)
        session.add_all(list(also))
        session.flush()
        return as_dict(alert)


# ---- operators ------------------------------------------------------------------------------------------------
def _transition(
    settings: Settings, alert_id: str, to: str, allowed: tuple[str, ...], stamp: str, verb: str, who: Audit
) -> dict[str, Any]:
    """One conditional UPDATE, so two operators (or an operator and a delivery) cannot both win."""
    now = utcnow()
    with session_scope(settings) as session:
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.status.in_(allowed))
            .values(status=to, updated_at=now, **{stamp: now})
            .execution_options(synchronize_session=False)
        )
        alert = load_alert(session, alert_id, fresh=True)
        if result.rowcount == 0:
            raise Conflict(
                f"Alert {alert_id} is {alert.status}; only {' or '.join(allowed)} alerts can be {verb}",
                code="alert_status_conflict",
                extra={"status": alert.status},
            )
        session.add(
            audit.entry(f"alert_{to}", "alert", alert_id, who, {"rule_id": alert.rule_id, "event_id": alert.event_id})
        )
        return as_dict(alert)


def _announce(event_type: str, alert: dict[str, Any], settings: Settings) -> None:
    """An alert's change on the live stream, once its transaction committed."""
    live.publish_quietly(
        event_type,
        {
            "alert_id": alert["id"],
            "event_id": alert.get("event_id"),
            "camera_id": alert.get("camera_id"),
            "rule_id": alert.get("rule_id"),
            "severity": alert.get("severity"),
            "status": alert["status"],
            "risk_score": alert.get("risk_score"),
        },
        settings,
    )


def acknowledge(settings: Settings, alert_id: str, who: Audit) -> dict[str, Any]:
    out = _transition(settings, alert_id, "acknowledged", ACKNOWLEDGEABLE, "acknowledged_at", "acknowledged", who)
    _announce("alert.acknowledged", out, settings)
    return out


def dismiss(settings: Settings, alert_id: str, who: Audit) -> dict[str, Any]:
    out = _transition(settings, alert_id, "dismissed", DISMISSABLE, "dismissed_at", "dismissed", who)
    _announce("alert.dismissed", out, settings)
    return out


def get_alert(settings: Settings, alert_id: str) -> dict[str, Any]:
    with session_scope(settings) as session:
        return as_dict(load_alert(session, alert_id))


def list_alerts(
    settings: Settings,
    *,
    status: str | None = None,
    severity: str | None = None,
    rule_id: str | None = None,
    camera_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Alerts matching the filters, newest first, and how many match in all."""
    where = [
        c
        for c in (
            Alert.status == status if status else None,
            Alert.severity == severity if severity else None,
            Alert.rule_id == rule_id if rule_id else None,
            Alert.camera_id == camera_id if camera_id else None,
        )
        if c is not None
    ]
    with session_scope(settings) as session:
        total = session.execute(select(func.count()).select_from(Alert).where(*where)).scalar_one()
        rows = session.execute(
            select(Alert).where(*where).order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit).offset(offset)
        ).scalars()
        return total, [as_dict(a) for a in rows]


# ---- testing a rule -------------------------------------------------------------------------------------------
def _judgeable(at: datetime) -> datetime:
    """`at` in UTC (naive is UTC), moved inside [EARLIEST, LATEST]: any ISO 8601 time is a valid test
    time, and one at the very edge of the calendar (0001-01-01T00:00:00+05:00) must not overflow."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        at = at.astimezone(UTC)
    except OverflowError:
        return EARLIEST if at.year < 5000 else LATEST
    return min(max(at, EARLIEST), LATEST)


def test_rule(
    settings: Settings,
    rule_id: str,
    event_ids: list[int] | None = None,
    test_time: datetime | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Evaluate a rule against stored events without raising alerts or sending anything.

    The cooldown is ignored (it depends on what fired before, not on the rule). Each event is judged
    at its own time unless `test_time` is given ("would it have fired at 03:00?"). At most `limit`
    events are tested, newest first: the given ones, or the latest stored.
    """
    tz = site_zone(settings)
    if test_time is not None:
        test_time = _judgeable(test_time)
    with session_scope(settings) as session:
        rule = load(session, rule_id)
        prefs = preferences.snapshot(session)
        query = select(Event).order_by(Event.id.desc()).limit(limit)
        missing: list[int] = []
        if event_ids is not None:
            wanted = list(dict.fromkeys(event_ids))
            query = query.where(Event.id.in_(wanted))
            stored = set(session.execute(select(Event.id).where(Event.id.in_(wanted))).scalars())
            missing = [i for i in wanted if i not in stored]
        events = list(session.execute(query).scalars())
        kinds = object_types_of(session, events)
    results = []
    for event in events:
        at = test_time or event_time(event)
        match = matches(rule, event, kinds[event.id], at, tz)
        results.append(
            {
                "event_id": event.id,
                "camera_id": event.camera_id,
                "risk_score": event.risk_score,
                "object_types": sorted(kinds[event.id]),
                "evaluated_at": iso_utc(at),
                "matched": match.matched,
                "reasons": match.reasons,
                # what the notification preferences would do with its alert, raised at that time
                "notification": preferences.decide(
                    settings,
                    prefs,
                    camera_id=event.camera_id,
                    risk_score=event.risk_score,
                    risk_level=event.risk_level,
                    severity=rule.severity,
                    at=at,
                ).as_dict(),
            }
        )
    matched = sum(1 for r in results if r["matched"])
    return {
        "rule_id": rule.id,
        "rule_name": rule.name,
        "enabled": rule.enabled,
        "test_time": iso_utc(test_time),
        "events_tested": len(results),
        "events_matched": matched,
        "match_rate": round(matched / len(results), 4) if results else None,
        "results": results,
        "events_not_found": missing,
    }
