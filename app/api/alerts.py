"""Alert rules, alerts and where they send (System Operations API): /api/alerts/...

Every operation declares its answers (the kit checks each one against its model) and every bound
of its inputs; errors are the family's `{"detail", "errors"?, "request_id"}`, with the alert's
`status` on a 409. Links hand a created rule's id, and the first listed rule's or alert's, to the
operations on it.
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field

from app.alerts import alerts, destinations
from app.alerts import rules as alert_rules
from app.alerts.alerts import AlertStatus
from app.alerts.destinations import From, GlobalDestinationsUpdate, RuleDestinationsUpdate, Source
from app.alerts.preferences import Reason
from app.alerts.rules import Channel, Day, RuleCreate, RuleUpdate, Severity
from app.api.kit.auth import authenticate, required_roles
from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer, SystemError
from app.api.kit.errors import ApiError
from app.api.kit.respond import dependencies_required, who
from app.api.kit.types import DbId, Offset, Timestamp

bp = Blueprint("alerts", __name__, url_prefix="/api/alerts")
TAGS = ["alerts"]
# Rule and alert ids are UUIDs; anything else cannot name one.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class AlertConflict(SystemError):
    status: AlertStatus = Field(description="The alert's status, which does not allow the action")


class ResendConflict(AlertConflict):
    not_resent: dict[str, str] | None = Field(None, description="channel: why it cannot be sent yet")


RULE_ERRORS = {404: "No such rule"}
ALERT_ERRORS = {404: "No such alert", 409: ("The alert's status does not allow it", AlertConflict)}


# ---- inputs ---------------------------------------------------------------------------------------------------
class RulePath(BaseModel):
    rule_id: str = Field(pattern=ID_PATTERN, description="The rule's id (a UUID)")


class AlertPath(BaseModel):
    alert_id: str = Field(pattern=ID_PATTERN, description="The alert's id (a UUID)")


class AlertsQuery(BaseModel):
    status: AlertStatus | None = None
    severity: Severity | None = None
    rule_id: str | None = Field(None, pattern=ID_PATTERN)
    # A filter, as in the events, detections and batches listings: an id no camera has matches nothing.
    camera_id: str | None = Field(None, min_length=1, max_length=64, description="A camera id")
    limit: int = Field(50, ge=1, le=1000)
    offset: Offset = 0


class RuleTestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_ids: list[DbId] | None = Field(
        None, min_length=1, max_length=1000, description="Events to test; default the latest `limit` events"
    )
    test_time: Timestamp | None = Field(
        None,
        description="Judge every event as if at this time (the schedule); "
        "default each event's own time. Naive times are UTC",
    )
    limit: int = Field(50, ge=1, le=1000, description="At most this many events, newest first")


# ---- answers --------------------------------------------------------------------------------------------------
class ScheduleOut(Answer):
    days: list[Day]
    start_time: str
    end_time: str


class RuleOut(Answer):
    id: str
    name: str
    enabled: bool
    severity: Severity
    risk_threshold: int
    object_types: list[str] | None
    camera_ids: list[str] | None
    schedule: ScheduleOut | None
    cooldown_seconds: int
    anomaly_only: bool = Field(description="Matches only events marked anomalous (`is_anomaly`)")
    channels: list[Channel]
    created_at: str | None
    updated_at: str | None
    warnings: list[str] = Field(
        description="`channel: why` for each channel its alerts could not use now (no "
        "destination, no SMTP server, push): the rule is kept, its alerts "
        "record such a channel as `unavailable`"
    )


class RuleList(Answer):
    rules: list[RuleOut]
    count: int


class RuleDeleted(Answer):
    id: str
    name: str
    deleted: bool


class NotificationDecision(Answer):
    would_notify: bool
    suppressed: Reason | None = Field(description="Why its notifications would be held back")
    detail: str | None
    held_until_quiet_hours_end: bool = Field(description="Quiet hours with VIGIL_QUIET_HOURS_HELD=send")
    critical_breakthrough: bool = Field(description="A critical alert sent inside quiet hours")
    quiet_hours: list[str] = Field(description="Labels of the quiet-hours periods covering that time")


class EventResult(Answer):
    event_id: int
    camera_id: str
    risk_score: int
    object_types: list[str]
    evaluated_at: str | None
    matched: bool
    reasons: list[str] = Field(description="Every criterion that failed; empty when it matched")
    notification: NotificationDecision = Field(
        description="What the notification preferences would do with its alert, raised at `evaluated_at`"
    )


class RuleTestResult(Answer):
    rule_id: str
    rule_name: str
    enabled: bool
    test_time: str | None
    events_tested: int
    events_matched: int
    match_rate: float | None = Field(description="events_matched / events_tested; null when none was tested")
    results: list[EventResult]
    events_not_found: list[int]


class Delivery(Answer):
    status: Literal["queued", "delivered", "failed", "unavailable", "suppressed", "held"] = Field(
        description="`suppressed`: the notification preferences held it back, nothing is sent; `held`: "
        "quiet hours held it back until they end (VIGIL_QUIET_HOURS_HELD=send)"
    )
    reason: Reason | None = Field(None, description="suppressed / held: which preference")
    job_id: str | None = Field(None, description="The notification job")
    queue: str | None = None
    error: str | None = Field(None, description="Why it failed, or why the channel cannot be used")
    at: str | None = Field(None, description="When the job reported")
    attempt: int | None = Field(None, ge=2, description="Present after a re-send: which attempt this is")


class AlertOut(Answer):
    id: str
    status: AlertStatus
    rule_id: str | None = Field(description="null once the rule is deleted")
    rule_name: str
    event_id: int
    camera_id: str
    severity: Severity
    risk_score: int
    channels: list[Channel]
    deliveries: dict[str, Delivery] = Field(description="One entry per channel that was dispatched")
    suppressed: Reason | None = Field(
        description="Why the notification preferences held its deliveries back (nothing sent); null otherwise"
    )
    created_at: str | None
    delivered_at: str | None
    acknowledged_at: str | None
    dismissed_at: str | None


class AlertPage(Answer):
    alerts: list[AlertOut]
    count: int = Field(description="Alerts matching the filters, not only this page")
    limit: int
    offset: int


class AlertResent(AlertOut):
    resent: list[Channel] = Field(description="The channels queued again")
    not_resent: dict[str, str] = Field(description="channel: why it could not be queued again")


class EnvironmentDestinations(Answer):
    email_recipients: list[str]
    webhook_url: str | None


class GlobalDestinationsOut(Answer):
    email_recipients: list[str]
    webhook_url: str | None
    source: Source = Field(description="`environment` until an operator stores destinations, then `stored`")
    updated_at: str | None
    updated_by: str | None
    environment: EnvironmentDestinations = Field(
        description="VIGIL_ALERT_EMAIL_RECIPIENTS and "
        "VIGIL_ALERT_WEBHOOK_URL: what applies while nothing "
        "is stored (DELETE goes back to them)"
    )
    webhook_url_masked: bool = Field(
        description="Webhook URLs are shown as their origin only (`https://host/…`) "
        "to callers not allowed to change them"
    )


class EffectiveDestinations(Answer):
    email_recipients: list[str]
    email_from: From
    webhook_url: str | None
    webhook_from: From


class RuleDestinationsOut(Answer):
    rule_id: str
    rule_name: str
    email_recipients: list[str] | None = Field(description="The rule's own; null: the global ones")
    webhook_url: str | None = Field(description="The rule's own; null: the global one")
    effective: EffectiveDestinations = Field(description="Where the rule's alerts go now")
    warnings: list[str]
    updated_at: str | None
    updated_by: str | None
    webhook_url_masked: bool


class DestinationsOverview(Answer):
    global_: GlobalDestinationsOut = Field(alias="global")
    rules: list[RuleDestinationsOut] = Field(description="Rules with destinations of their own")


def _may_see_urls() -> bool:
    """Whether this caller may change destinations, and so see webhook URLs (often carrying a token) whole.
    Reads are open unless VIGIL_AUTH_READS is on; credentials sent anyway count, bad ones do not."""
    principal = getattr(g, "principal", None)
    if principal is None:
        try:
            principal = authenticate()
        except ApiError:
            return False
    return principal is not None and principal.allowed(required_roles())


_RULE = "$response.body#/id"
_FIRST_RULE = "$response.body#/rules/0/id"
_FIRST_ALERT = "$response.body#/alerts/0/id"


def _rule_links(rule_id: str) -> dict[str, Link]:
    return {
        "GetRule": Link("alerts.get_rule", {"rule_id": rule_id}),
        "UpdateRule": Link("alerts.update_rule", {"rule_id": rule_id}),
        "TestRule": Link("alerts.test_rule", {"rule_id": rule_id}),
        "GetRuleDestinations": Link("alerts.get_rule_destinations", {"rule_id": rule_id}),
        "SetRuleDestinations": Link("alerts.update_rule_destinations", {"rule_id": rule_id}),
        "DeleteRule": Link("alerts.delete_rule", {"rule_id": rule_id}),
    }


def _alert_links(alert_id: str) -> dict[str, Link]:
    return {
        "GetAlert": Link("alerts.get_alert", {"alert_id": alert_id}),
        "AcknowledgeAlert": Link("alerts.acknowledge_alert", {"alert_id": alert_id}),
        "ResendAlert": Link("alerts.resend_alert", {"alert_id": alert_id}),
        "DismissAlert": Link("alerts.dismiss_alert", {"alert_id": alert_id}),
    }


# ---- rules --------------------------------------------------------------------------------------------------
@bp.get("/rules")
@endpoint(response=RuleList, summary="List alert rules", tags=TAGS, links=_rule_links(_FIRST_RULE))
def list_rules():
    with dependencies_required():
        rules = alert_rules.list_rules(current_settings())
    return {"rules": rules, "count": len(rules)}


@bp.post("/rules")
@endpoint(
    body=RuleCreate,
    response=RuleOut,
    status=201,
    summary="Create an alert rule (audited)",
    tags=TAGS,
    links=_rule_links(_RULE),
)
def create_rule(body: RuleCreate):
    """A channel its alerts could not use now (no destination configured, no SMTP server, push) does
    not refuse the rule: the answer's `warnings` names it, and its alerts record the channel as
    `unavailable` until a destination is set (PUT /api/alerts/destinations or the rule's own)."""
    with dependencies_required():
        return alert_rules.create_rule(current_settings(), body, who())


@bp.get("/rules/<rule_id>")
@endpoint(path=RulePath, response=RuleOut, summary="Get an alert rule", tags=TAGS, errors=RULE_ERRORS)
def get_rule(rule_id: str):
    with dependencies_required():
        return alert_rules.get_rule(current_settings(), rule_id)


@bp.put("/rules/<rule_id>")
@endpoint(
    path=RulePath,
    body=RuleUpdate,
    response=RuleOut,
    summary="Update an alert rule: the fields sent replace the rule's (audited)",
    tags=TAGS,
    errors=RULE_ERRORS,
)
def update_rule(rule_id: str, body: RuleUpdate):
    """Fields left out keep their value, so GET's object can be sent back as it is (`id`, timestamps and
    `warnings` are ignored). `null` clears `object_types`, `camera_ids` or `schedule`; the other fields
    take no null (leave them out instead)."""
    with dependencies_required():
        return alert_rules.update_rule(current_settings(), rule_id, body, who())


@bp.delete("/rules/<rule_id>")
@endpoint(
    path=RulePath,
    response=RuleDeleted,
    summary="Delete an alert rule; its alerts are kept (audited)",
    tags=TAGS,
    errors=RULE_ERRORS,
)
def delete_rule(rule_id: str):
    """Its own destinations go with it."""
    with dependencies_required():
        return alert_rules.delete_rule(current_settings(), rule_id, who())


@bp.post("/rules/<rule_id>/test")
@endpoint(
    path=RulePath,
    body=RuleTestBody,
    response=RuleTestResult,
    summary="Test a rule against stored events (raises and sends nothing)",
    tags=TAGS,
    errors=RULE_ERRORS,
)
def test_rule(rule_id: str, body: RuleTestBody):
    """Each event says whether it matched and, if not, every criterion that failed. The cooldown
    is not applied: it depends on what fired before, not on the rule. A `test_time` at the very edge
    of the calendar (years 1 and 9999) is judged two days inside it, where every time zone can read it."""
    with dependencies_required():
        return alerts.test_rule(current_settings(), rule_id, body.event_ids, body.test_time, body.limit)


@bp.get("/rules/<rule_id>/destinations")
@endpoint(
    path=RulePath,
    response=RuleDestinationsOut,
    summary="Where a rule's alerts go: its own destinations and the effective ones",
    tags=TAGS,
    errors=RULE_ERRORS,
)
def get_rule_destinations(rule_id: str):
    """Webhook URLs are shown whole only to a caller allowed to change them (credentials with an
    operator role); others see their origin (`https://host/…`, `webhook_url_masked: true`)."""
    with dependencies_required():
        return destinations.get_rule_destinations(current_settings(), rule_id, _may_see_urls())


@bp.put("/rules/<rule_id>/destinations")
@endpoint(
    path=RulePath,
    body=RuleDestinationsUpdate,
    response=RuleDestinationsOut,
    summary="Set a rule's own destinations, over the global ones (audited)",
    tags=TAGS,
    errors=RULE_ERRORS,
)
def update_rule_destinations(rule_id: str, body: RuleDestinationsUpdate):
    """The fields sent replace the rule's own; fields left out keep theirs; `null` goes back to the
    global destination. Applies to the rule's next alert, and to re-sends."""
    with dependencies_required():
        return destinations.update_rule_destinations(current_settings(), rule_id, body, who())


# ---- destinations -------------------------------------------------------------------------------------------
@bp.get("/destinations")
@endpoint(
    response=DestinationsOverview,
    summary="Where alerts are sent: the global destinations and every rule's own",
    tags=TAGS,
)
def get_destinations():
    """Until an operator stores destinations, the global ones are the environment's
    (`VIGIL_ALERT_EMAIL_RECIPIENTS`, `VIGIL_ALERT_WEBHOOK_URL`: `source: environment`). Webhook URLs
    are shown whole only to a caller allowed to change them; others see their origin."""
    with dependencies_required():
        return destinations.overview(current_settings(), _may_see_urls())


@bp.put("/destinations")
@endpoint(
    body=GlobalDestinationsUpdate,
    response=GlobalDestinationsOut,
    summary="Set the global alert destinations (audited)",
    tags=TAGS,
)
def update_destinations(body: GlobalDestinationsUpdate):
    """The fields sent replace the global ones; fields left out keep theirs (the environment's, the
    first time). Every process reads them from the database when it dispatches an alert: no restart."""
    with dependencies_required():
        return destinations.update_global(current_settings(), body, who())


@bp.delete("/destinations")
@endpoint(
    response=GlobalDestinationsOut,
    summary="Forget the stored global destinations: the environment's apply again (audited)",
    tags=TAGS,
)
def reset_destinations():
    with dependencies_required():
        return destinations.reset_global(current_settings(), who())


# ---- alerts -------------------------------------------------------------------------------------------------
@bp.get("")
@endpoint(
    query=AlertsQuery,
    response=AlertPage,
    summary="List alerts, newest first",
    tags=TAGS,
    links=_alert_links(_FIRST_ALERT),
)
def list_alerts(query: AlertsQuery):
    """`count` is the number of alerts matching the filters, not only this page."""
    with dependencies_required():
        total, rows = alerts.list_alerts(
            current_settings(),
            status=query.status,
            severity=query.severity,
            rule_id=query.rule_id,
            camera_id=query.camera_id,
            limit=query.limit,
            offset=query.offset,
        )
    return {"alerts": rows, "count": total, "limit": query.limit, "offset": query.offset}


@bp.get("/<alert_id>")
@endpoint(
    path=AlertPath,
    response=AlertOut,
    summary="Get an alert, with how each channel's notification fared",
    tags=TAGS,
    errors={404: "No such alert"},
)
def get_alert(alert_id: str):
    with dependencies_required():
        return alerts.get_alert(current_settings(), alert_id)


@bp.post("/<alert_id>/acknowledge")
@endpoint(
    path=AlertPath,
    response=AlertOut,
    summary="Acknowledge an alert (only pending or delivered ones)",
    tags=TAGS,
    errors=ALERT_ERRORS,
)
def acknowledge_alert(alert_id: str):
    """409 for any other status; the body's `status` says which."""
    with dependencies_required():
        return alerts.acknowledge(current_settings(), alert_id, who())


@bp.post("/<alert_id>/dismiss")
@endpoint(
    path=AlertPath,
    response=AlertOut,
    summary="Dismiss an alert (pending, delivered, acknowledged or failed ones)",
    tags=TAGS,
    errors=ALERT_ERRORS,
)
def dismiss_alert(alert_id: str):
    """A failed alert can be dismissed too (the System Operations API lists pending, delivered and
    acknowledged): otherwise an alert nothing could deliver would stay in the way for good. 409 once
    dismissed."""
    with dependencies_required():
        return alerts.dismiss(current_settings(), alert_id, who())


@bp.post("/<alert_id>/resend")
@endpoint(
    path=AlertPath,
    response=AlertResent,
    status=202,
    summary="Re-send an alert's failed channels: a new notification job each (audited)",
    tags=TAGS,
    errors={
        404: "No such alert",
        409: ("Dismissed, no failed channel, or none can be sent yet (the detail says why)", ResendConflict),
    },
)
def resend_alert(alert_id: str):
    """Every channel whose delivery is `failed` or `unavailable` (push excepted: Vigil has no push
    transport) is queued again to the destination that applies now, as attempt 2, 3, ... with an
    idempotency key per (alert, channel, attempt): a repeated or concurrent request queues no second
    job for the same attempt. The alert goes back to `pending` (an acknowledged one stays acknowledged)
    and becomes `delivered` or `failed` as the jobs report. 202 with the alert, `resent` and
    `not_resent`; 409 when it is dismissed, has no failed channel, or none can be queued yet (a
    destination is still missing: `not_resent` names why)."""
    with dependencies_required():
        return alerts.resend(current_settings(), alert_id, who())
