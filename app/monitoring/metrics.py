"""The dashboard and the metric time series (GET /dashboard, GET /metrics), read from the rollups.

A period is covered by whole buckets of its granularity, the current one included: `24h` at hour
granularity is the 24 hour buckets before the current one plus the current one, so totals may
include up to one bucket more than the period's exact length. Reads touch only rollup rows
(`app/monitoring/rollups.py`), never the `jobs` table.
"""

from __future__ import annotations

import time
from typing import Any

from app.core.db import session_scope
from app.core.errors import InvalidInput
from app.core.settings import Settings
from app.core.time import iso_utc
from app.monitoring import agents, alerts_store, costs, rollups

PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
GRANULARITY = {"minute": rollups.MINUTE, "hour": rollups.HOUR, "day": rollups.DAY}
DEFAULT_GRANULARITY = {"1h": "minute", "24h": "hour", "7d": "hour", "30d": "day"}
DASHBOARD_SPAN = {"1h": rollups.MINUTE, "24h": rollups.HOUR, "7d": rollups.HOUR}
METRICS = ("requests", "latency", "tokens", "errors")
MAX_POINTS = 2000  # minute buckets over 7 or 30 days would be 10,080 or 43,200 points: ask for hours


def dashboard(settings: Settings, period: str, tenant_id: str | None = None) -> dict[str, Any]:
    """The dashboard of `tenant_id` (default: this installation's). Another tenant has no agents, jobs or
    alerts here, so its dashboard is all zeros rather than an error: the shape a client expects."""
    now = time.time()
    span = DASHBOARD_SPAN[period]
    start, end = rollups.window(span, PERIODS[period], now)
    by_model: dict[Any, rollups.Counts] = {}
    active, open_alerts, listed = 0, [], []
    if agents.in_tenant(settings, tenant_id):
        with session_scope(settings) as session:
            by_model = rollups.aggregate(session, span, start, end, "model")
            active = alerts_store.active_count(session)
            open_alerts = [
                (a.type, a.agent_id, a.message, a.severity) for a in alerts_store.open_alerts(session, limit=5)
            ]
        listed = agents.summaries(settings)
    counts = rollups.total(by_model.values())
    summary = {s: sum(1 for a in listed if a["status"] == s) for s in ("healthy", "degraded", "offline", "paused")}
    total_agents = len(listed)
    # Healthy counts fully, degraded and paused half (a paused agent is intended, but does no work), offline nil.
    score = (
        round(100 * (summary["healthy"] + 0.5 * (summary["degraded"] + summary["paused"])) / total_agents)
        if total_agents
        else 0
    )
    top = [
        {"type": kind, "agent": agent_id, "description": message, "severity": severity}
        for kind, agent_id, message, severity in open_alerts
    ]
    for agent in listed:
        for issue in agent["issues"]:
            if len(top) >= 10:
                break
            severity = "critical" if issue["type"] == "offline" else "info" if issue["type"] == "paused" else "warning"
            top.append(
                {"type": issue["type"], "agent": agent["id"], "description": issue["message"], "severity": severity}
            )
    return {
        "generated_at": iso_utc(now),
        "period": period,
        "summary": {"total_agents": total_agents, **summary, "health_score": score},
        "metrics": {
            "total_requests": counts.requests,
            "successful_requests": counts.successes,
            "failed_requests": counts.failures,
            "success_rate": counts.success_rate,
            "avg_latency_ms": counts.avg_ms,
            "p95_latency_ms": counts.percentile(95),
            "p99_latency_ms": counts.percentile(99),
        },
        "costs": costs.costs(settings, by_model),
        "active_alerts": active,
        "top_issues": top,
    }


def series(
    settings: Settings, period: str, granularity: str | None, agent_id: str | None, metric: str | None
) -> dict[str, Any]:
    if metric is not None and metric not in METRICS:
        raise InvalidInput(
            f"Unknown metric '{metric[:64]}'; metrics are: {', '.join(METRICS)}",
            code="invalid_metric",
            extra={"metric": metric[:64]},
        )
    if agent_id is not None:
        agents.require(agent_id)
    granularity = granularity or DEFAULT_GRANULARITY[period]
    span = GRANULARITY[granularity]
    now = time.time()
    start, end = rollups.window(span, PERIODS[period], now)
    if (end - start) // span > MAX_POINTS:
        raise InvalidInput(
            f"{granularity} granularity over {period} is {(end - start) // span} points; at most {MAX_POINTS}: "
            "use a coarser granularity",
            code="invalid_granularity",
        )
    only = [agent_id] if agent_id else None
    with session_scope(settings) as session:
        buckets = rollups.aggregate(session, span, start, end, "bucket", only)
        by_agent = rollups.aggregate(session, span, start, end, "agent_id", only)
    counts = rollups.total(by_agent.values())
    empty = rollups.Counts()
    points = [(iso_utc(b), buckets.get(b) or empty) for b in range(start, end, span)]
    out: dict[str, Any] = {
        "requests": {
            "total": counts.requests,
            "by_agent": {
                a: (by_agent.get(a) or rollups.Counts()).requests
                for a in agents.AGENTS
                if not agent_id or a == agent_id
            },
            "timeseries": [{"timestamp": t, "value": c.requests} for t, c in points],
        },
        "latency": {
            "avg": counts.avg_ms,
            "p50": counts.percentile(50),
            "p95": counts.percentile(95),
            "p99": counts.percentile(99),
            "timeseries": [{"timestamp": t, "value": c.avg_ms, "p95": c.percentile(95)} for t, c in points],
        },
        "tokens": {
            "input": counts.input_tokens,
            "output": counts.output_tokens,
            "timeseries": [
                {
                    "timestamp": t,
                    "value": c.input_tokens + c.output_tokens,
                    "input": c.input_tokens,
                    "output": c.output_tokens,
                }
                for t, c in points
            ],
        },
        "errors": {
            "total": counts.failures,
            "by_type": dict(counts.errors),
            "timeseries": [{"timestamp": t, "value": c.failures} for t, c in points],
        },
    }
    if metric:
        out = {metric: out[metric]}
    return {
        "period": {"start": iso_utc(start), "end": iso_utc(min(now, end))},
        "granularity": granularity,
        "agent_id": agent_id,
        "metrics": out,
    }
