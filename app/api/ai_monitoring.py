"""The AI monitoring API: /api/v1/monitoring/... dashboard, agents and their controls, metric alerts
and rules, agent logs, metrics, system health.

Bare-object answers; errors are the family's `{"code", "message", ...}` with the AI Monitoring API's codes
(`invalid_metric`, `insufficient_permissions`, `agent_not_found`, `alert_not_found`,
`agent_already_paused`). Agents are the AI services with their pools (app/monitoring/agents.py);
every control is audited and shows in GET /agents/{id} right after. `tenant_id` filters where the spec lists
it: Vigil is one installation with one tenant (VIGIL_TENANT_ID), which owns every agent, so that id
answers as if unfiltered and any other gets no agents and an all-zero dashboard.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from flask import Blueprint, g, send_file
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.api.kit.auth import actor
from app.api.kit.current import current_settings, current_version
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer, MonitoringError
from app.api.kit.respond import audited, dependencies_required
from app.api.kit.types import Timestamp
from app.monitoring import agents, alerts_store, controls, exports, health, metrics
from app.monitoring import logs as agent_logs
from app.monitoring.alerts_store import RULE_METRICS
from app.monitoring.metrics import METRICS

bp = Blueprint("ai_monitoring", __name__, url_prefix="/api/v1/monitoring")
TAGS = ["ai-monitoring"]
AGENT_ID = r"^[a-z][a-z0-9_]{0,63}$"
ALERT_ID = r"^[A-Za-z0-9_-]{1,64}$"
AgentStatus = Literal["healthy", "degraded", "offline", "paused", "starting", "stopping"]
Severity = Literal["critical", "warning", "info"]
# The spec types tenant_id as a UUID; Vigil's own tenant id (VIGIL_TENANT_ID) defaults to `default`, so both forms pass.
TENANT_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TENANT_DOC = "The tenant (the spec: a UUID): VIGIL_TENANT_ID (default `default`) owns every agent; any other has none"
# Metric names are checked by the service, which names a wrong one (`invalid_metric`, AI Monitoring API) rather than
# failing validation; the schema still lists them, so clients and the fuzzer know the valid ones.
MetricName = Annotated[
    str, Field(max_length=64), WithJsonSchema({"type": "string", "enum": list(METRICS), "maxLength": 64})
]
RuleMetric = Annotated[
    str, Field(min_length=1, max_length=64), WithJsonSchema({"type": "string", "enum": list(RULE_METRICS)})
]
NOT_FOUND = {404: "No such agent (`agent_not_found`)"}
ALERT_NOT_FOUND = {404: "No such alert (`alert_not_found`)"}


class Conflict(MonitoringError):
    status: str | None = Field(None, description="The alert's (or export's) status, which does not allow the action")


class InvalidMetric(MonitoringError):
    metric: str | None = Field(None, description="The metric named that does not exist")


# ---- inputs --------------------------------------------------------------------------------------------
class AgentPath(BaseModel):
    agent_id: str = Field(pattern=AGENT_ID, description="An agent id, e.g. `agent_detector`")


class AlertPath(BaseModel):
    alert_id: str = Field(pattern=ALERT_ID, description="An alert id (a UUID)")


class DashboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(None, pattern=TENANT_ID, description=TENANT_DOC)
    period: Literal["1h", "24h", "7d"] = "24h"


class AgentsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AgentStatus | None = None
    type: str | None = Field(None, max_length=64, description="`object_detector` or `risk_analyser`")
    tenant_id: str | None = Field(None, pattern=TENANT_ID, description=TENANT_DOC)


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str | None = Field(None, max_length=500)
    duration_minutes: float | None = Field(
        None, gt=0, le=10080, description="Resume by itself after this long (fractions allowed); none: until resumed"
    )


class RestartBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str | None = Field(None, max_length=500)
    force: bool = Field(False, description="Terminate the running jobs instead of letting them finish")


class ScaleBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    replicas: int = Field(ge=1, le=64, description="Pool processes per worker; at most VIGIL_MONITORING_MAX_REPLICAS")
    reason: str | None = Field(None, max_length=500)


class AlertsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "acknowledged", "resolved"] | None = None
    severity: Severity | None = None
    agent_id: str | None = Field(None, pattern=AGENT_ID)
    limit: int = Field(100, ge=1, le=1000)


class AcknowledgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    notes: str | None = Field(None, max_length=2000)


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    resolution: str | None = Field(None, max_length=2000)
    root_cause: str | None = Field(None, max_length=2000)


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    metric: RuleMetric = Field(description="One of the rule metrics in docs/api.md")
    operator: Literal["gt", "gte", "lt", "lte", "eq"]
    threshold: float = Field(ge=-1e12, le=1e12)
    duration_minutes: float = Field(0, ge=0, le=1440, description="How long it must hold (fractions allowed)")


class Remediation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["restart"]
    max_attempts: int = Field(1, ge=1, le=10)


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)
    agent_id: str | None = Field(None, pattern=AGENT_ID, description="Only this agent; none: every agent")
    condition: Condition
    severity: Severity = "warning"
    channels: list[Literal["email", "webhook", "slack", "pagerduty"]] = Field(default_factory=list, max_length=4)
    recipients: list[str] = Field(default_factory=list, max_length=50)
    auto_remediate: Remediation | None = None


class RulesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rules: list[RuleIn] = Field(max_length=100)


class LogIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: Timestamp | None = None
    level: Literal["debug", "info", "warn", "error"]
    agent_id: str | None = Field(None, max_length=64)
    message: str = Field(min_length=1, max_length=10000)
    context: dict[str, Any] | None = None
    trace_id: str | None = Field(None, max_length=64)


class LogsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    logs: list[LogIn] = Field(min_length=1, max_length=1000)


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = Field(None, max_length=64)
    level: Literal["debug", "info", "warn", "error"] | None = None
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None
    search: str | None = Field(None, max_length=500)
    limit: int = Field(100, ge=1, le=1000)


class MetricsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = Field(None, pattern=AGENT_ID)
    metric: MetricName | None = Field(None, description="requests, latency, tokens or errors")
    period: Literal["1h", "24h", "7d", "30d"] = "24h"
    granularity: Literal["minute", "hour", "day"] | None = Field(
        None, description="Default: minute for 1h, hour for 24h and 7d, day for 30d"
    )


# ---- answers -------------------------------------------------------------------------------------------
class Issue(Answer):
    type: str
    message: str


class AgentMetrics(Answer):
    uptime_percent: float
    requests_24h: int
    avg_latency_ms: float
    error_rate: float


class AgentOut(Answer):
    id: str
    name: str
    type: str
    status: AgentStatus
    version: str
    metrics: AgentMetrics
    last_heartbeat: str | None
    started_at: str | None
    issues: list[Issue]


class AgentList(Answer):
    agents: list[AgentOut]
    total: int


class Configuration(Answer):
    model_primary: str
    model_fallback: str | None
    max_concurrent: int = Field(description="Pool processes of the agent's live workers")
    timeout_ms: int
    retry_count: int


class Check(Answer):
    name: str
    status: Literal["pass", "warn", "fail", "unknown"]
    latency_ms: float | None = None
    value: Any = None


class HealthOut(Answer):
    status: str
    last_check: str
    checks: list[Check]


class AgentDetail(Answer):
    id: str
    name: str
    type: str
    status: AgentStatus
    version: str
    configuration: Configuration
    health: HealthOut
    metrics_detailed: dict[str, Any] = Field(description="requests, latency and tokens over 24 h, by hour and model")
    recent_errors: list[dict[str, Any]]
    dependencies: list[dict[str, Any]]
    pause: dict[str, Any] | None = Field(description="The pause record (reason, paused_at, resume_at) while paused")
    issues: list[Issue]


class PauseOut(Answer):
    agent_id: str
    previous_status: AgentStatus
    current_status: AgentStatus
    paused_at: str
    resume_at: str | None
    active_requests_drained: bool = Field(description="False when running jobs outlasted the bounded wait")
    active_requests: int
    reason: str | None


class ResumeOut(Answer):
    agent_id: str
    previous_status: AgentStatus
    current_status: AgentStatus
    resumed_at: str
    was_paused: bool
    notified_workers: int


class RestartOut(Answer):
    agent_id: str
    previous_status: AgentStatus
    current_status: AgentStatus
    restarted_at: str
    confirmed: bool
    message: str
    force: bool
    terminated_requests: int
    reason: str | None


class ScaleOut(Answer):
    agent_id: str
    previous_replicas: int
    current_replicas: int
    requested_replicas: int
    workers: int
    confirmed: bool
    max_replicas: int
    reason: str | None
    scaled_at: str


class Threshold(Answer):
    metric: str
    operator: str
    value: float
    current: float | None


class MonitoringAlertOut(Answer):
    id: str
    agent_id: str
    rule_id: str | None
    rule_name: str
    type: str
    severity: Severity
    status: Literal["active", "acknowledged", "resolved"]
    title: str
    message: str
    threshold: Threshold
    triggered_at: str
    last_occurrence: str | None
    occurrence_count: int
    acknowledged_by: str | None
    acknowledged_at: str | None
    notes: str | None
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None
    root_cause: str | None
    remediation_attempts: int


class AlertSummary(Answer):
    critical: int
    warning: int
    info: int


class AlertList(Answer):
    alerts: list[MonitoringAlertOut]
    summary: AlertSummary = Field(description="Open (active or acknowledged) alerts by severity")
    total: int


class MonitoringRuleOut(Answer):
    id: str
    name: str
    agent_id: str | None
    condition: dict[str, Any]
    severity: Severity
    channels: list[str]
    recipients: list[str]
    auto_remediate: dict[str, Any] | None


class RulesOut(Answer):
    rules: list[MonitoringRuleOut]
    count: int
    warnings: list[str] = Field(description="Channels named that are not configured: the rule is kept")
    updated_at: str | None


class Ingested(Answer):
    accepted: int


class LogOut(Answer):
    id: str
    timestamp: str | None
    level: str
    agent_id: str
    message: str
    trace_id: str | None
    context: Any
    source: str


class LogList(Answer):
    logs: list[LogOut]
    total: int
    limit: int


class Period(Answer):
    start: str
    end: str


class MetricsOut(Answer):
    period: Period
    granularity: str
    agent_id: str | None
    metrics: dict[str, Any]


class DashboardOut(Answer):
    generated_at: str
    period: str
    summary: dict[str, int]
    metrics: dict[str, float]
    costs: dict[str, Any]
    active_alerts: int
    top_issues: list[dict[str, Any]]


class SystemHealth(Answer):
    status: str
    timestamp: str
    components: list[dict[str, Any]]
    version: str


# ---- routes --------------------------------------------------------------------------------------------
@bp.get("/dashboard")
@endpoint(
    query=DashboardQuery, response=DashboardOut, summary="Monitoring dashboard: agents, metrics, costs", tags=TAGS
)
def get_dashboard(query: DashboardQuery):
    """Metrics come from the per-minute/hour rollups of finished jobs; costs are tokens times
    VIGIL_MODEL_PRICES (unpriced models cost 0 and are listed in `costs.unpriced_models`)."""
    with dependencies_required():
        return metrics.dashboard(current_settings(), query.period, query.tenant_id)


@bp.get("/agents")
@endpoint(query=AgentsQuery, response=AgentList, summary="List agents", tags=TAGS)
def list_agents(query: AgentsQuery):
    settings = current_settings()
    if not agents.in_tenant(settings, query.tenant_id):
        return {"agents": [], "total": 0}
    with dependencies_required():
        items = agents.summaries(settings)
    items = [
        a
        for a in items
        if (not query.status or a["status"] == query.status) and (not query.type or a["type"] == query.type)
    ]
    return {"agents": items, "total": len(items)}


@bp.get("/agents/<agent_id>")
@endpoint(path=AgentPath, response=AgentDetail, summary="Agent details", tags=TAGS, errors=NOT_FOUND)
def get_agent(agent_id: str):
    with dependencies_required():
        return agents.detail(current_settings(), agent_id)


@bp.post("/agents/<agent_id>/pause")
@endpoint(
    path=AgentPath,
    body=PauseBody,
    response=PauseOut,
    summary="Pause an agent: its queues stop being consumed (audited)",
    tags=TAGS,
    errors={**NOT_FOUND, 409: ("Already paused (`agent_already_paused`)", MonitoringError)},
)
def pause_agent(agent_id: str, body: PauseBody):
    """The same persisted pause as the queue endpoints; with `duration_minutes` the system resumes it
    by itself at `resume_at`. Waits a bounded time for running jobs (`active_requests_drained`)."""
    settings = current_settings()
    with dependencies_required():
        out = controls.pause(settings, agent_id, body.reason, body.duration_minutes, actor())
        audited("monitoring.agent.pause", "agent", agent_id, body.model_dump())
    return out


@bp.post("/agents/<agent_id>/resume")
@endpoint(path=AgentPath, response=ResumeOut, summary="Resume a paused agent (audited)", tags=TAGS, errors=NOT_FOUND)
def resume_agent(agent_id: str):
    with dependencies_required():
        out = controls.resume(current_settings(), agent_id)
        audited("monitoring.agent.resume", "agent", agent_id, None)
    return out


@bp.post("/agents/<agent_id>/restart")
@endpoint(
    path=AgentPath,
    body=RestartBody,
    response=RestartOut,
    summary="Restart an agent's pool processes through the supervisor (audited)",
    tags=TAGS,
    errors={**NOT_FOUND, 503: "Supervisor not running, or it did not take the command in time"},
)
def restart_agent(agent_id: str, body: RestartBody):
    """Shows in GET /api/system/supervisor/restart-history. `force` terminates running jobs first."""
    with dependencies_required():
        out = controls.restart(
            current_settings(), agent_id, body.reason, body.force, actor(), getattr(g, "request_id", None)
        )
        audited("monitoring.agent.restart", "agent", agent_id, body.model_dump())
    return out


@bp.post("/agents/<agent_id>/scale")
@endpoint(
    path=AgentPath,
    body=ScaleBody,
    response=ScaleOut,
    summary="Set an agent's pool process count (audited, persisted)",
    tags=TAGS,
    errors={
        **NOT_FOUND,
        400: "replicas above VIGIL_MONITORING_MAX_REPLICAS (`invalid_replicas`)",
        503: "The agent has no live worker",
    },
)
def scale_agent(agent_id: str, body: ScaleBody):
    """Celery remote control `pool_grow`/`pool_shrink`, persisted so a restarted worker keeps it;
    answered once the heartbeats show the new count (`confirmed`), or after
    VIGIL_MONITORING_SCALE_TIMEOUT. 400 above VIGIL_MONITORING_MAX_REPLICAS."""
    with dependencies_required():
        out = controls.scale(current_settings(), agent_id, body.replicas, body.reason)
        audited(
            "monitoring.agent.scale", "agent", agent_id, {**body.model_dump(), "previous": out["previous_replicas"]}
        )
    return out


@bp.get("/alerts")
@endpoint(query=AlertsQuery, response=AlertList, summary="List metric alerts, newest first", tags=TAGS)
def list_alerts(query: AlertsQuery):
    with dependencies_required():
        return alerts_store.list_alerts(current_settings(), query.status, query.severity, query.agent_id, query.limit)


@bp.post("/alerts/<alert_id>/acknowledge")
@endpoint(
    path=AlertPath,
    body=AcknowledgeBody,
    response=MonitoringAlertOut,
    summary="Acknowledge an active alert (audited)",
    tags=TAGS,
    errors={**ALERT_NOT_FOUND, 409: ("The alert is not active", Conflict)},
)
def acknowledge_alert(alert_id: str, body: AcknowledgeBody):
    with dependencies_required():
        out = alerts_store.acknowledge(current_settings(), alert_id, body.notes, actor())
        audited("monitoring.alert.acknowledge", "monitoring_alert", alert_id, body.model_dump())
    return out


@bp.post("/alerts/<alert_id>/resolve")
@endpoint(
    path=AlertPath,
    body=ResolveBody,
    response=MonitoringAlertOut,
    summary="Resolve an alert (audited)",
    tags=TAGS,
    errors={**ALERT_NOT_FOUND, 409: ("Already resolved", Conflict)},
)
def resolve_alert(alert_id: str, body: ResolveBody):
    with dependencies_required():
        out = alerts_store.resolve(current_settings(), alert_id, body.resolution, body.root_cause, actor())
        audited("monitoring.alert.resolve", "monitoring_alert", alert_id, body.model_dump())
    return out


@bp.put("/alerts/rules")
@endpoint(
    body=RulesBody,
    response=RulesOut,
    summary="Replace the metric alert rule set (audited)",
    tags=TAGS,
    errors={400: ("Unknown metric (`invalid_metric`, naming it)", InvalidMetric), **NOT_FOUND},
)
def put_rules(body: RulesBody):
    """The evaluator (the service host's `ai_monitor`) applies the new set on its next tick."""
    with dependencies_required():
        out = alerts_store.replace_rules(current_settings(), [r.model_dump() for r in body.rules])
        audited("monitoring.rules.replace", "monitoring_rules", None, {"count": out["count"]})
    return out


@bp.get("/alerts/rules")
@endpoint(response=RulesOut, summary="The metric alert rule set", tags=TAGS)
def get_rules():
    with dependencies_required():
        rules = alerts_store.rules_out(current_settings())
    return {"rules": rules, "count": len(rules), "warnings": [], "updated_at": None}


@bp.post("/logs")
@endpoint(body=LogsBody, response=Ingested, status=202, summary="Ingest client logs into the log store", tags=TAGS)
def ingest_logs(body: LogsBody):
    with dependencies_required():
        n = agent_logs.ingest(current_settings(), [e.model_dump() for e in body.logs])
    return {"accepted": n}


@bp.get("/logs")
@endpoint(query=LogsQuery, response=LogList, summary="Query agent logs, newest first", tags=TAGS)
def query_logs(query: LogsQuery):
    with dependencies_required():
        return agent_logs.query(
            current_settings(), query.agent_id, query.level, query.start_time, query.end_time, query.search, query.limit
        )


@bp.get("/metrics")
@endpoint(
    query=MetricsQuery,
    response=MetricsOut,
    summary="Agent metrics with time series",
    tags=TAGS,
    errors={400: ("Unknown metric (`invalid_metric`) or too many points", InvalidMetric), **NOT_FOUND},
)
def get_metrics(query: MetricsQuery):
    with dependencies_required():
        return metrics.series(current_settings(), query.period, query.granularity, query.agent_id, query.metric)


class ExportPeriod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Timestamp | date
    end: Timestamp | date


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[Literal["requests", "latency", "tokens", "errors"]] = Field(
        default_factory=lambda: ["requests", "latency", "tokens", "errors"], min_length=1, max_length=4
    )
    period: ExportPeriod
    format: Literal["csv", "json"] = "csv"
    granularity: Literal["minute", "hour", "day"] = "hour"


class ExportPath(BaseModel):
    export_id: str = Field(pattern=r"^[0-9a-f]{32}$")


class ExportOut(Answer):
    export_id: str
    status: Literal["processing", "completed", "failed"]
    format: str
    metrics: list[str]
    granularity: str
    period: Period
    rows: int = Field(description="Rows written (0 until completed)")
    created_at: str
    completed_at: str | None = Field(description="When the job completed or failed")
    expires_at: str | None = Field(description="When the file is deleted (once completed)")
    error: str | None = Field(None, description="Why the job failed")
    job_id: str | None = Field(None, description="The export's job in the jobs API (`vigil.cleanup.export_metrics`)")
    status_url: str
    download_url: str | None = Field(description="Set once completed")


def _moment(value: datetime | date, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value
    day = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return day + timedelta(days=1) - timedelta(microseconds=1) if end else day


@bp.post("/metrics/export")
@endpoint(
    body=ExportBody,
    response=ExportOut,
    status=202,
    summary="Export metrics as CSV or JSON (an asynchronous job)",
    tags=TAGS,
    errors={
        400: "period.start after period.end, or more than 100,000 buckets",
        503: "The broker is unavailable; the export was not queued",
    },
)
def export_metrics(body: ExportBody):
    """Answers at once with `status: processing`; a job on the `cleanup` queue writes the file. Poll
    `status_url` until `completed` (or `failed`), then fetch `download_url`. Dates without a time cover
    whole UTC days (`end` inclusive). Rows: timestamp, agent_id, metric, value."""
    with dependencies_required():
        return exports.create(
            current_settings(),
            list(dict.fromkeys(body.metrics)),
            _moment(body.period.start, False),
            _moment(body.period.end, True),
            body.format,
            body.granularity,
        )


@bp.get("/metrics/export/<export_id>")
@endpoint(
    path=ExportPath,
    response=ExportOut,
    summary="A metrics export's status",
    tags=TAGS,
    errors={404: "No such export (or it expired)"},
)
def get_export(export_id: str):
    with dependencies_required():
        return exports.get(current_settings(), export_id)


@bp.get("/metrics/export/<export_id>/download")
@endpoint(
    path=ExportPath,
    summary="Download a metrics export",
    tags=TAGS,
    content={"text/csv": {"type": "string"}, "application/json": {"type": "array"}},
    errors={
        404: "No such export (or it expired)",
        409: ("The export is processing or failed (`export_not_ready`)", Conflict),
    },
)
def download_export(export_id: str):
    with dependencies_required():
        path, fmt = exports.file_for(current_settings(), export_id)
    return send_file(path, mimetype="text/csv" if fmt == "csv" else "application/json", as_attachment=True)


@bp.get("/health")
@endpoint(response=SystemHealth, summary="AI system health: API, model providers, cache", tags=TAGS)
def get_health():
    with dependencies_required():
        return health.system_health(current_settings(), current_version())
