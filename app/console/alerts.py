"""Alerts: the alerts, newest first, with acknowledge and dismiss; the alert rules, with enable and disable.
Each change goes through `app.alerts`, which audits it in the same transaction, as it does for the API."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request

from app.alerts import alerts, rules
from app.alerts.alerts import ACKNOWLEDGEABLE, DISMISSABLE
from app.api.kit.current import current_settings
from app.console.auth import require_operator, who
from app.console.web import back, failed, ok
from app.core.errors import ServiceError

bp = Blueprint("alerts", __name__)

STATUSES = ("pending", "delivered", "acknowledged", "dismissed", "failed")
PAGE_SIZE = 25


@bp.get("/alerts")
def index() -> str:
    settings = current_settings()
    wanted = request.args.get("status")
    wanted = wanted if wanted in STATUSES else None
    try:
        offset = max(0, int(request.args.get("offset", 0)))
    except ValueError:
        offset = 0
    total, rows = alerts.list_alerts(settings, status=wanted, limit=PAGE_SIZE, offset=offset)
    return render_template(
        "console/alerts.html",
        alerts=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        status=wanted,
        statuses=STATUSES,
        rules=rules.list_rules(settings),
        acknowledgeable=ACKNOWLEDGEABLE,
        dismissable=DISMISSABLE,
    )


@bp.post("/alerts/<alert_id>/<any(acknowledge, dismiss):action>")
def change(alert_id: str, action: str) -> Response:
    require_operator()
    operate = alerts.acknowledge if action == "acknowledge" else alerts.dismiss
    try:
        result = operate(current_settings(), alert_id, who())
    except ServiceError as err:
        failed(err.message)
    else:
        ok(f"Alert {result['rule_name']} (event {result['event_id']}) {result['status']}.")
    return back("alerts.index")


@bp.post("/rules/<rule_id>/<any(enable, disable):action>")
def toggle_rule(rule_id: str, action: str) -> Response:
    require_operator()
    try:
        result = rules.update_rule(current_settings(), rule_id, {"enabled": action == "enable"}, who())
    except ServiceError as err:
        failed(err.message)
    else:
        ok(f"Rule {result['name']} {'enabled' if result['enabled'] else 'disabled'}.")
    return back("alerts.index")
