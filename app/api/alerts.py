"""Alert rules and alerts (004): /api/alerts/..."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.pipeline import dependencies_required
from app.api.kit.respond import who
from app.alerts import rules as alert_rules
from app.alerts import alerts
from app.alerts.rules import RuleCreate, RuleUpdate, Severity
from app.alerts.alerts import AlertStatus

bp = Blueprint("alerts", __name__, url_prefix="/api/alerts")
TAGS = ["alerts"]
RULE_ERRORS = {404: "No such rule", 503: "Database unavailable"}
ALERT_ERRORS = {404: "No such alert", 409: "The alert's status does not allow it", 503: "Database unavailable"}


class AlertsQuery(BaseModel):
    status: AlertStatus | None = None
    severity: Severity | None = None
    rule_id: str | None = Field(None, max_length=64)
    camera_id: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class RuleTestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_ids: list[int] | None = Field(None, min_length=1, max_length=1000,
                                        description="Events to test; default the latest `limit` events")
    test_time: datetime | None = Field(None, description="Judge every event as if at this time (the schedule); "
                                                         "default each event's own time. Naive times are UTC")
    limit: int = Field(50, ge=1, le=1000, description="At most this many events, newest first")


# ---- rules --------------------------------------------------------------------------------------------------
@bp.get("/rules")
@endpoint(summary="List alert rules", tags=TAGS, errors={503: "Database unavailable"})
def list_rules():
    with dependencies_required():
        rules = alert_rules.list_rules(current_settings())
    return {"rules": rules, "count": len(rules)}


@bp.post("/rules")
@endpoint(body=RuleCreate, status=201, summary="Create an alert rule (audited)", tags=TAGS,
          errors={503: "Database unavailable"})
def create_rule(body: RuleCreate):
    with dependencies_required():
        return alert_rules.create_rule(current_settings(), body, who())


@bp.get("/rules/<rule_id>")
@endpoint(summary="Get an alert rule", tags=TAGS, errors=RULE_ERRORS)
def get_rule(rule_id: str):
    with dependencies_required():
        return alert_rules.get_rule(current_settings(), rule_id)


@bp.put("/rules/<rule_id>")
@endpoint(body=RuleUpdate, summary="Update an alert rule: the fields sent replace the rule's (audited)", tags=TAGS,
          errors=RULE_ERRORS)
def update_rule(rule_id: str, body: RuleUpdate):
    with dependencies_required():
        return alert_rules.update_rule(current_settings(), rule_id, body, who())


@bp.delete("/rules/<rule_id>")
@endpoint(summary="Delete an alert rule; its alerts are kept (audited)", tags=TAGS, errors=RULE_ERRORS)
def delete_rule(rule_id: str):
    with dependencies_required():
        return alert_rules.delete_rule(current_settings(), rule_id, who())


@bp.post("/rules/<rule_id>/test")
@endpoint(body=RuleTestBody, summary="Test a rule against stored events (raises and sends nothing)", tags=TAGS,
          errors=RULE_ERRORS)
def test_rule(rule_id: str, body: RuleTestBody):
    """Each event says whether it matched and, if not, every criterion that failed. The cooldown
    is not applied: it depends on what fired before, not on the rule."""
    with dependencies_required():
        return alerts.test_rule(current_settings(), rule_id, body.event_ids, body.test_time, body.limit)


# ---- alerts -------------------------------------------------------------------------------------------------
@bp.get("")
@endpoint(query=AlertsQuery, summary="List alerts, newest first", tags=TAGS, errors={503: "Database unavailable"})
def list_alerts(query: AlertsQuery):
    """`count` is the number of alerts matching the filters, not only this page."""
    with dependencies_required():
        total, rows = alerts.list_alerts(current_settings(), status=query.status, severity=query.severity,
                                         rule_id=query.rule_id, camera_id=query.camera_id, limit=query.limit,
                                         offset=query.offset)
    return {"alerts": rows, "count": total, "limit": query.limit, "offset": query.offset}


@bp.get("/<alert_id>")
@endpoint(summary="Get an alert, with how each channel's notification fared", tags=TAGS,
          errors={404: "No such alert", 503: "Database unavailable"})
def get_alert(alert_id: str):
    with dependencies_required():
        return alerts.get_alert(current_settings(), alert_id)


@bp.post("/<alert_id>/acknowledge")
@endpoint(summary="Acknowledge an alert (only pending or delivered ones)", tags=TAGS, errors=ALERT_ERRORS)
def acknowledge_alert(alert_id: str):
    with dependencies_required():
        return alerts.acknowledge(current_settings(), alert_id, who())


@bp.post("/<alert_id>/dismiss")
@endpoint(summary="Dismiss an alert (only pending, delivered or acknowledged ones)", tags=TAGS, errors=ALERT_ERRORS)
def dismiss_alert(alert_id: str):
    with dependencies_required():
        return alerts.dismiss(current_settings(), alert_id, who())
