"""Metric alert rules, the alerts they raise, and the evaluator that raises and resolves them.

The rule set is replaced as a whole (PUT /alerts/rules). The evaluator (`evaluate`, run by the service
host's monitoring service every VIGIL_MONITORING_INTERVAL seconds) judges each rule for each agent it
covers on a live window of the last VIGIL_MONITORING_WINDOW seconds of jobs (the registry's indexes:
the window must react within seconds, which minute rollups cannot), heartbeats and queue depths:

* the condition holding since `duration_minutes` ago raises an alert (`monitoring.alert_triggered`
  and `monitoring.threshold_exceeded` webhooks, the rule's e-mail recipients) unless one is open
  for that rule and agent; while it holds, each tick counts `occurrence_count` / `last_occurrence`;
* `auto_remediate: {action: restart, max_attempts}` restarts the agent's pool through the
  supervisor when the alert is raised, and again (up to `max_attempts` per alert) if the condition
  still holds one `duration_minutes` (at least a minute) after the last attempt;
* the condition clearing resolves the open alert (`monitoring.alert_resolved`). An operator may also
  acknowledge (it stays open) or resolve one.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.celery.broker import Broker
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.redis_client import KEY_PREFIX, get_broker_redis, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs import heartbeats
from app.jobs.registry import INDEX_KEY, JOB_KEY
from app.models import MonitoringAlert, MonitoringAlertRule
from app.monitoring import agents, rollups, webhooks

log = logging.getLogger(__name__)

# metric -> (alert type, title)
RULE_METRICS = {
    "avg_latency_ms": ("high_latency", "High Latency Detected"),
    "p50_latency_ms": ("high_latency", "High Latency Detected"),
    "p95_latency_ms": ("high_latency", "High Latency Detected"),
    "p99_latency_ms": ("high_latency", "High Latency Detected"),
    "error_rate_percent": ("high_error_rate", "High Error Rate"),
    "failed_requests": ("failed_requests", "Failed Requests"),
    "requests_per_minute": ("traffic", "Request Rate Threshold"),
    "heartbeat_age_seconds": ("offline", "Agent Offline"),
    "queue_depth": ("queue_backlog", "Queue Backlog"),
}
OPERATORS = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
}
OPEN = ("active", "acknowledged")
PENDING_KEY = KEY_PREFIX + "monitoring:holding:"  # + rule id + ":" + agent id -> since (epoch)
REMEDIATED_KEY = KEY_PREFIX + "monitoring:remediated:"  # + alert id -> last attempt (epoch)
WINDOW_JOBS = 2000  # newest jobs per queue and state the live window reads


# ---- rules ----------------------------------------------------------------------------------------------
def rule_out(rule: MonitoringAlertRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "agent_id": rule.agent_id,
        "condition": {
            "metric": rule.metric,
            "operator": rule.operator,
            "threshold": rule.threshold,
            "duration_minutes": rule.duration_minutes,
        },
        "severity": rule.severity,
        "channels": list(rule.channels or []),
        "recipients": list(rule.recipients or []),
        "auto_remediate": rule.auto_remediate,
    }


def list_rules(session: Session) -> list[MonitoringAlertRule]:
    return list(session.execute(select(MonitoringAlertRule).order_by(MonitoringAlertRule.position)).scalars())


def rules_out(settings: Settings) -> list[dict[str, Any]]:
    with session_scope(settings) as session:
        return [rule_out(r) for r in list_rules(session)]


def replace_rules(settings: Settings, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """Validate and store the whole rule set; open alerts of rules that are gone stay until resolved."""
    for i, rule in enumerate(rules):
        metric = rule["condition"]["metric"]
        if metric not in RULE_METRICS:
            raise InvalidInput(
                f"Unknown metric '{metric[:64]}' in rule {i} ('{rule['name'][:80]}'); "
                f"metrics are: {', '.join(RULE_METRICS)}",
                code="invalid_metric",
                errors=[{"location": "body", "field": f"rules.{i}.condition.metric", "message": "unknown metric"}],
                extra={"metric": metric[:64]},
            )
        if rule.get("agent_id") is not None:
            agents.require(rule["agent_id"])
    warnings = []
    for rule in rules:
        for channel in rule.get("channels") or []:
            if channel in ("slack", "pagerduty") and not webhooks.channel_url(settings, channel):
                warnings.append(f"{rule['name']}: {channel} is not configured (VIGIL_MONITORING_{channel.upper()}_URL)")
            if channel == "email" and not (settings.smtp_host and rule.get("recipients")):
                warnings.append(f"{rule['name']}: email needs VIGIL_SMTP_HOST and recipients")
            if channel == "webhook" and not webhooks.subscribers(settings):
                warnings.append(f"{rule['name']}: webhook needs VIGIL_MONITORING_WEBHOOK_URLS")
    with session_scope(settings) as session:
        session.execute(delete(MonitoringAlertRule))
        stored = []
        for i, rule in enumerate(rules):
            row = MonitoringAlertRule(
                id=str(uuid.uuid4()),
                position=i,
                name=rule["name"],
                agent_id=rule.get("agent_id"),
                metric=rule["condition"]["metric"],
                operator=rule["condition"]["operator"],
                threshold=float(rule["condition"]["threshold"]),
                duration_minutes=float(rule["condition"].get("duration_minutes") or 0),
                severity=rule["severity"],
                channels=list(rule.get("channels") or []),
                recipients=list(rule.get("recipients") or []),
                auto_remediate=rule.get("auto_remediate"),
                created_at=datetime.now(UTC),
            )
            session.add(row)
            stored.append(row)
        session.flush()
        out = [rule_out(r) for r in stored]
    client = get_redis(settings)
    stale = list(client.scan_iter(PENDING_KEY + "*"))
    if stale:
        client.delete(*stale)
    return {"rules": out, "count": len(out), "warnings": warnings, "updated_at": iso_utc(time.time())}


# ---- alerts ---------------------------------------------------------------------------------------------
def alert_out(a: MonitoringAlert) -> dict[str, Any]:
    return {
        "id": a.id,
        "agent_id": a.agent_id,
        "rule_id": a.rule_id,
        "rule_name": a.rule_name,
        "type": a.type,
        "severity": a.severity,
        "status": a.status,
        "title": a.title,
        "message": a.message,
        "threshold": {"metric": a.metric, "operator": a.operator, "value": a.threshold, "current": a.current},
        "triggered_at": iso_utc(a.triggered_at),
        "last_occurrence": iso_utc(a.last_occurrence),
        "occurrence_count": a.occurrence_count,
        "acknowledged_by": a.acknowledged_by,
        "acknowledged_at": iso_utc(a.acknowledged_at),
        "notes": a.notes,
        "resolved_at": iso_utc(a.resolved_at),
        "resolved_by": a.resolved_by,
        "resolution": a.resolution,
        "root_cause": a.root_cause,
        "remediation_attempts": a.remediation_attempts,
    }


def active_count(session: Session) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(MonitoringAlert).where(MonitoringAlert.status.in_(OPEN))
        ).scalar_one()
    )


def open_alerts(session: Session, limit: int) -> list[MonitoringAlert]:
    return list(
        session.execute(
            select(MonitoringAlert)
            .where(MonitoringAlert.status.in_(OPEN))
            .order_by(MonitoringAlert.triggered_at.desc())
            .limit(limit)
        ).scalars()
    )


def list_alerts(
    settings: Settings, status: str | None, severity: str | None, agent_id: str | None, limit: int
) -> dict[str, Any]:
    with session_scope(settings) as session:
        stmt = select(MonitoringAlert)
        if status:
            stmt = stmt.where(MonitoringAlert.status == status)
        if severity:
            stmt = stmt.where(MonitoringAlert.severity == severity)
        if agent_id:
            stmt = stmt.where(MonitoringAlert.agent_id == agent_id)
        rows = session.execute(stmt.order_by(MonitoringAlert.triggered_at.desc()).limit(limit)).scalars().all()
        counts = dict(
            session.execute(
                select(MonitoringAlert.severity, func.count())
                .where(MonitoringAlert.status.in_(OPEN))
                .group_by(MonitoringAlert.severity)
            ).all()
        )
        alerts = [alert_out(a) for a in rows]
    summary = {s: int(counts.get(s, 0)) for s in ("critical", "warning", "info")}
    return {"alerts": alerts, "summary": summary, "total": len(alerts)}


def _get(session: Session, alert_id: str) -> MonitoringAlert:
    alert = session.get(MonitoringAlert, alert_id)
    if alert is None:
        raise NotFound(f"No alert '{alert_id[:80]}'", code="alert_not_found")
    return alert


def acknowledge(settings: Settings, alert_id: str, notes: str | None, actor: str | None) -> dict[str, Any]:
    with session_scope(settings) as session:
        alert = _get(session, alert_id)
        if alert.status != "active":
            raise Conflict(
                f"Alert '{alert_id}' is {alert.status}; only active alerts can be acknowledged",
                code="alert_not_active",
                extra={"status": alert.status},
            )
        alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", actor, datetime.now(UTC)
        alert.notes = notes
        session.flush()
        return alert_out(alert)


def resolve(
    settings: Settings, alert_id: str, resolution: str | None, root_cause: str | None, actor: str | None
) -> dict[str, Any]:
    with session_scope(settings) as session:
        alert = _get(session, alert_id)
        if alert.status == "resolved":
            raise Conflict(
                f"Alert '{alert_id}' is already resolved", code="alert_already_resolved", extra={"status": alert.status}
            )
        _close(alert, actor, resolution, root_cause)
        session.flush()
        out = alert_out(alert)
    webhooks.emit(settings, "monitoring.alert_resolved", out)
    return out


def _close(alert: MonitoringAlert, by: str | None, resolution: str | None, root_cause: str | None) -> None:
    alert.status, alert.resolved_at, alert.resolved_by = "resolved", datetime.now(UTC), by
    alert.resolution, alert.root_cause = resolution, root_cause


# ---- evaluation -----------------------------------------------------------------------------------------
def _window_counts(settings: Settings, spec: agents.AgentSpec, now: float) -> rollups.Counts:
    """The agent's jobs that finished in the last VIGIL_MONITORING_WINDOW seconds, from the registry."""
    client = get_redis(settings)
    since = now - settings.monitoring_window
    with client.pipeline(transaction=False) as pipe:
        for queue in spec.queues:
            for state in ("completed", "failed"):
                pipe.zrevrangebyscore(f"{INDEX_KEY}{queue}:{state}", "+inf", since, start=0, num=WINDOW_JOBS)
        id_lists = pipe.execute()
    ids = [(jid, i % 2 == 0) for i, lst in enumerate(id_lists) for jid in lst]
    counts = rollups.Counts()
    if not ids:
        return counts
    with client.pipeline(transaction=False) as pipe:
        for jid, _ in ids:
            pipe.hmget(JOB_KEY + jid, "started_at", "finished_at", "error")
        fields = pipe.execute()
    for (_, ok), (started, finished, error) in zip(ids, fields):
        if not finished:
            continue
        latency = max(0.0, (float(finished) - float(started)) * 1000) if started else 0.0
        counts.add_job(ok, latency, error, 0, 0)
    return counts


def measure(settings: Settings, spec: agents.AgentSpec, metric: str, now: float, cache: dict) -> float | None:
    """The current value of a rule metric for one agent; None when there is nothing to judge (no jobs
    in the window for a latency or error metric)."""
    if metric == "heartbeat_age_seconds":
        seen = cache.get("last_seen")
        if seen is None:
            seen = cache["last_seen"] = heartbeats.last_seen(get_redis(settings))
        ages = [now - ts for node, ts in seen.items() if node.split("@", 1)[0] == spec.group]
        return round(min(ages), 2) if ages else float(heartbeats.FORGET_AFTER)
    if metric == "queue_depth":
        waiting = Broker(get_broker_redis(settings)).waiting_counts(list(spec.queues))
        return float(sum(waiting.values()))
    key = ("window", spec.id)
    counts = cache.get(key)
    if counts is None:
        counts = cache[key] = _window_counts(settings, spec, now)
    if metric == "requests_per_minute":
        return round(counts.requests * 60.0 / settings.monitoring_window, 2)
    if not counts.requests:
        return None
    if metric == "error_rate_percent":
        return counts.error_rate
    if metric == "failed_requests":
        return float(counts.failures)
    if metric == "avg_latency_ms":
        return counts.avg_ms
    return counts.percentile({"p50_latency_ms": 50, "p95_latency_ms": 95, "p99_latency_ms": 99}[metric])


# The events a rule's e-mail recipients get, with their subject's prefix: one mail when an alert is raised
# (not a second for `threshold_exceeded`, which accompanies it) and one when the evaluator resolves it.
EMAIL_EVENTS = {"monitoring.alert_triggered": "", "monitoring.alert_resolved": "Resolved: "}


def email_of(event: str, data: dict[str, Any]) -> tuple[str, str]:
    """The subject and body of an alert's e-mail."""
    subject = f"[Vigil {data.get('severity', '')}] {EMAIL_EVENTS.get(event, '')}{data.get('title', event)}"
    body = (
        f"{data.get('message', event)}\n\n"
        f"Alert: {data.get('id')}\n"
        f"Agent: {data.get('agent_id')}\n"
        f"Status: {data.get('status')}\n"
        f"Triggered: {data.get('triggered_at')}\n"
        f"Occurrences: {data.get('occurrence_count')}\n"
    )
    return subject, body


def _notify(settings: Settings, rule: MonitoringAlertRule, event: str, data: dict[str, Any]) -> None:
    extra = [u for u in (webhooks.channel_url(settings, c) for c in (rule.channels or [])) if u]
    webhooks.emit(settings, event, data, extra_urls=extra)
    if event in EMAIL_EVENTS and "email" in (rule.channels or []) and rule.recipients and settings.smtp_host:
        from app.celery.app import celery

        subject, body = email_of(event, data)
        try:
            celery.send_task(
                "vigil.notification.send",
                kwargs={"channel": "email", "recipients": list(rule.recipients), "subject": subject, "message": body},
                queue=webhooks.QUEUE,
            )
        except Exception:
            log.warning("could not queue the alert e-mail", exc_info=True)


def _remediate(settings: Settings, rule: MonitoringAlertRule, alert: MonitoringAlert, now: float) -> bool:
    """Whether to restart the agent's pool now for this alert (the attempt is counted here, in the
    evaluation's transaction; the restart itself runs after the commit)."""
    plan = rule.auto_remediate or {}
    if plan.get("action") != "restart" or alert.remediation_attempts >= int(plan.get("max_attempts") or 1):
        return False
    client = get_redis(settings)
    last = client.get(REMEDIATED_KEY + alert.id)
    if last is not None and now - float(last) < max(60.0, rule.duration_minutes * 60):
        return False
    alert.remediation_attempts += 1
    client.set(REMEDIATED_KEY + alert.id, repr(now), ex=86400)
    return True


def evaluate(settings: Settings, now: float | None = None) -> dict[str, int]:
    """One pass over every rule and agent; returns how many alerts were raised, updated and resolved."""
    now = time.time() if now is None else now
    client = get_redis(settings)
    cache: dict = {}
    stats = {"raised": 0, "holding": 0, "resolved": 0}
    # Webhooks, e-mail and restarts go out once the transaction committed: never for an alert that was
    # rolled back, and no supervisor wait while the database is locked.
    outbox: list[tuple[MonitoringAlertRule, str, dict[str, Any]]] = []
    restarts: list[tuple[str, str]] = []
    with session_scope(settings) as session:
        rules = list_rules(session)
        for rule in rules:
            for spec in agents.AGENTS.values():
                if rule.agent_id and rule.agent_id != spec.id:
                    continue
                value = measure(settings, spec, rule.metric, now, cache)
                holds = value is not None and OPERATORS[rule.operator](value, rule.threshold)
                key = f"{PENDING_KEY}{rule.id}:{spec.id}"
                alert = session.execute(
                    select(MonitoringAlert).where(
                        MonitoringAlert.rule_id == rule.id,
                        MonitoringAlert.agent_id == spec.id,
                        MonitoringAlert.status.in_(OPEN),
                    )
                ).scalar_one_or_none()
                if not holds:
                    client.delete(key)
                    if alert is not None:
                        _close(
                            alert,
                            "evaluator",
                            f"{rule.metric} back to {value} ({rule.operator} {rule.threshold:g} no longer holds)",
                            None,
                        )
                        alert.current = value
                        session.flush()
                        outbox.append((rule, "monitoring.alert_resolved", alert_out(alert)))
                        stats["resolved"] += 1
                    continue
                since = client.get(key)
                if since is None:
                    client.set(key, repr(now))
                    since = now
                if now - float(since) < rule.duration_minutes * 60:
                    continue
                shown = value if value is not None and math.isfinite(value) else None
                if alert is None:
                    kind, title = RULE_METRICS[rule.metric]
                    alert = MonitoringAlert(
                        id=str(uuid.uuid4()),
                        rule_id=rule.id,
                        rule_name=rule.name,
                        agent_id=spec.id,
                        type=kind,
                        severity=rule.severity,
                        status="active",
                        title=title if rule.name == title else f"{title}: {rule.name}",
                        message=f"{rule.metric} ({shown:g}) {rule.operator} threshold ({rule.threshold:g}) on {spec.id}"
                        if shown is not None
                        else f"{rule.metric} {rule.operator} threshold ({rule.threshold:g}) on {spec.id}",
                        metric=rule.metric,
                        operator=rule.operator,
                        threshold=rule.threshold,
                        current=shown,
                        triggered_at=datetime.fromtimestamp(now, UTC),
                        last_occurrence=datetime.fromtimestamp(now, UTC),
                        occurrence_count=1,
                        remediation_attempts=0,
                    )
                    session.add(alert)
                    session.flush()
                    data = alert_out(alert)
                    outbox.append((rule, "monitoring.threshold_exceeded", data))
                    outbox.append((rule, "monitoring.alert_triggered", data))
                    stats["raised"] += 1
                else:
                    alert.occurrence_count += 1
                    alert.last_occurrence = datetime.fromtimestamp(now, UTC)
                    alert.current = shown
                    stats["holding"] += 1
                if _remediate(settings, rule, alert, now):
                    restarts.append((alert.agent_id, alert.id))
                session.flush()
        session.expunge_all()
    for rule, event, data in outbox:
        _notify(settings, rule, event, data)
    if restarts:
        from app.monitoring import controls  # controls import webhooks and the supervisor

        for agent_id, alert_id in restarts:
            try:
                controls.restart(settings, agent_id, f"auto-remediation of alert {alert_id}", False, "evaluator", None)
            except Exception as exc:
                log.warning("auto-remediation restart of %s failed: %s", agent_id, exc)
    return stats
