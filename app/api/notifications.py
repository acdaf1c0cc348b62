"""Notification channel configuration and a test send (System Operations API): /api/notification/..."""

from __future__ import annotations

import time
from typing import Any, Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from app.alerts import destinations, notifications, preferences
from app.alerts.destinations import EmailAddress, Source, WebhookUrl
from app.api.alerts import ID_PATTERN
from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import audited, dependencies_required
from app.core.db import session_scope
from app.core.errors import Conflict, NotFound
from app.jobs import enqueue
from app.jobs.registry import get_registry
from app.models import GLOBAL_SCOPE, AlertDestination, AlertRule

bp = Blueprint("notifications", __name__, url_prefix="/api/notification")
TAGS = ["notifications"]
# How long the answer waits for the delivery: long enough for a webhook or a quick SMTP server, short
# enough that a client (or a fuzzer's 10 s response limit) is not held up; 202 says "still going".
TEST_WAIT_SECONDS = 5.0


class TestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "webhook", "push"]
    email_recipients: list[EmailAddress] | None = Field(
        None,
        max_length=20,
        description="Where the test e-mail goes; left out, null or []: the configured alert "
        "recipients (`rule_id`'s when given)",
    )
    webhook_url: WebhookUrl | None = Field(
        None,
        description="Where the test webhook goes; left out or null: the configured alert webhook "
        "(`rule_id`'s when given)",
    )
    rule_id: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="Test the destination this rule's alerts use (its own, else the "
        "global one) instead of the global one",
    )


class PreferencesNow(Answer):
    """What the notification preferences do to an alert raised now (camera and risk aside)."""

    enabled: bool = Field(description="The global switch (PUT /api/notification-preferences)")
    risk_filters: list[str] = Field(description="Event risk levels that notify")
    alerts_would_notify: bool = Field(description="false: an alert raised now sends nothing (see `suppressed`)")
    suppressed: Literal["disabled", "quiet_hours"] | None
    quiet_hours_active: list[str] = Field(description="Labels of the quiet-hours periods covering now")
    critical_breakthrough: bool = Field(description="VIGIL_QUIET_HOURS_CRITICAL_BREAKTHROUGH")
    held_deliveries: Literal["drop", "send"] = Field(description="VIGIL_QUIET_HOURS_HELD")


class TestResult(Answer):
    channel: Literal["email", "webhook"]
    success: bool | None = Field(description="null (answered 202) while the job has not settled after 5 s")
    job_id: str
    status: str = Field(description="The job's state: `completed`, `failed`, or still `waiting` / `active` / ...")
    message: str | None
    destination: str = Field(description="Where it was sent: the addresses, or the webhook URL")
    destination_from: Literal["request", "rule", "global"]
    result: dict[str, Any] | None = Field(None, description="What the channel reported (delivered_to, status, ...)")
    preferences: PreferencesNow = Field(
        description="A test is sent whatever the preferences say; this is what they would do to an alert now"
    )


class AlertChannel(Answer):
    ready: bool = Field(description="An alert of a rule without destinations of its own can use this channel")
    problem: str | None = Field(description="Why not, when not")


class NotificationConfig(Answer):
    notification_enabled: bool = Field(
        description="The global switch of the notification preferences (PUT /api/notification-preferences)"
    )
    email_configured: bool = Field(description="An SMTP server is configured (VIGIL_SMTP_HOST)")
    webhook_configured: bool = Field(description="Alerts have a global webhook destination")
    push_configured: bool = Field(description="Always false: Vigil has no push transport")
    available_channels: list[Literal["email", "webhook"]] = Field(
        description="Channels Vigil can send on (e-mail needs SMTP; a webhook only a URL)"
    )
    smtp_host: str | None
    smtp_port: int | None
    smtp_from_address: str | None
    alert_email_recipients: int = Field(description="How many global alert e-mail recipients there are")
    alert_webhook_configured: bool = Field(description="The same as webhook_configured")
    destinations_source: Source = Field(description="`environment` until an operator stores destinations")
    rules_with_own_destinations: int
    alert_channels: dict[str, AlertChannel] = Field(description="email, webhook, push: whether alerts can use it")
    preferences: PreferencesNow


@bp.get("/config")
@endpoint(
    response=NotificationConfig,
    summary="Which notification channels are configured (never passwords)",
    tags=TAGS,
    errors={503: "Database unavailable"},
)
def notification_config():
    """The alert destinations are read from the database (GET /api/alerts/destinations): one truth, so
    `webhook_configured` and `alert_webhook_configured` always agree."""
    s = current_settings()
    email = notifications.email_configured(s)
    with dependencies_required(), session_scope(s) as session:
        table = destinations.load_table(session, s, GLOBAL_SCOPE)
        own = session.execute(
            select(func.count()).select_from(AlertDestination).where(AlertDestination.scope != GLOBAL_SCOPE)
        ).scalar_one()
        prefs = preferences.decide_now(s)
    dest = table.global_destinations
    problems = {c: destinations.problem(s, dest, c) for c in ("email", "webhook", "push")}
    channels = {c: {"ready": why is None, "problem": why} for c, why in problems.items()}
    return {
        "notification_enabled": prefs["enabled"],
        "email_configured": email,
        "webhook_configured": bool(dest.webhook_url),
        "push_configured": False,
        "available_channels": (["email"] if email else []) + ["webhook"],
        "smtp_host": s.smtp_host or None,
        "smtp_port": s.smtp_port if email else None,
        "smtp_from_address": s.smtp_from if email else None,
        "alert_email_recipients": len(dest.email_recipients),
        "alert_webhook_configured": bool(dest.webhook_url),
        "destinations_source": table.source,
        "rules_with_own_destinations": own,
        "alert_channels": channels,
        "preferences": prefs,
    }


def _destination(body: TestBody) -> tuple[dict[str, Any], str, str]:
    """The payload's destination, its display, and where it came from: the request, else the rule's
    or the global configured one. Conflict (409) when there is none: a valid request the current
    configuration cannot serve."""
    s = current_settings()
    given = body.email_recipients if body.channel == "email" else body.webhook_url
    if given:
        source = "request"
        dest = destinations.Destinations(list(body.email_recipients or []), body.webhook_url)
    else:
        with dependencies_required(), session_scope(s) as session:
            if body.rule_id is not None and session.get(AlertRule, body.rule_id) is None:
                raise NotFound(f"No alert rule with id '{body.rule_id}'", code="rule_not_found")
            table = destinations.load_table(session, s, body.rule_id or GLOBAL_SCOPE)
        dest = table.for_rule(body.rule_id)
        own = table.rule_rows.get(body.rule_id or "")
        from_rule = own is not None and bool(own.email_recipients if body.channel == "email" else own.webhook_url)
        source = "rule" if from_rule else "global"
    if body.channel == "email":
        if not dest.email_recipients:
            raise Conflict(
                "No email_recipients given and no alert recipients configured (PUT "
                "/api/alerts/destinations, or VIGIL_ALERT_EMAIL_RECIPIENTS)",
                code="destination_missing",
            )
        return {"recipients": dest.email_recipients}, ", ".join(dest.email_recipients), source
    if not dest.webhook_url:
        raise Conflict(
            "No webhook_url given and no alert webhook configured (PUT /api/alerts/destinations, or "
            "VIGIL_ALERT_WEBHOOK_URL)",
            code="destination_missing",
        )
    return {"url": dest.webhook_url}, dest.webhook_url, source


@bp.post("/test")
@endpoint(
    body=TestBody,
    response=TestResult,
    responses={202: TestResult},
    tags=TAGS,
    summary="Send a test notification through the notification queue",
    errors={
        404: "rule_id names no rule",
        409: "push (no transport in Vigil), or no destination given and none configured",
    },
)
def test_notification(body: TestBody):
    """The test goes through the `notification:high` queue like any notification, to the destination
    given, else the configured one (`rule_id`'s own, else the global one: GET /api/alerts/destinations).
    The answer waits up to 5 s for the delivery and says how it went: 200 with `success` true or
    false, or 202 with `success` null and the job's `status` while it is still pending. 409 for `push`
    (Vigil has no push transport) and when there is no destination to send to."""
    if body.channel == "push":
        raise Conflict("The push channel is not available in Vigil", code="channel_unavailable")
    target, shown, source = _destination(body)
    payload = {
        "channel": body.channel,
        "subject": "Vigil test notification",
        "message": "This is a test notification from Vigil.",
        **target,
    }
    with dependencies_required():
        job = enqueue.enqueue("notification", payload, priority="high", settings=current_settings())
    audited("notification_test", "notification", job.job_id, {"channel": body.channel, "destination_from": source})
    registry = get_registry(current_settings())
    deadline = time.monotonic() + TEST_WAIT_SECONDS
    with dependencies_required():
        record = registry.get(job.job_id)
        while record and record["state"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            record = registry.get(job.job_id)
    state = record["state"] if record else "waiting"
    answer = {
        "channel": body.channel,
        "job_id": job.job_id,
        "status": state,
        "destination": shown,
        "destination_from": source,
    }
    with dependencies_required():
        answer["preferences"] = preferences.decide_now(current_settings())
    if state not in ("completed", "failed"):
        return {**answer, "success": None, "message": "Test notification queued; not delivered yet"}, 202
    delivered = state == "completed"
    return {
        **answer,
        "success": delivered,
        "result": record.get("result"),
        "message": "Test notification delivered" if delivered else record.get("error"),
    }
