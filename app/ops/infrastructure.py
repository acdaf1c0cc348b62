"""Infrastructure health and alerts (platform API), from real signals.

Health reads, in parallel with short timeouts: API request timings of every API process (last
`VIGIL_API_LATENCY_WINDOW` seconds), the database (a timed query, and pool usage from
`pg_stat_activity` on PostgreSQL), Redis (`PING`, memory), the notification e-mail channel's queue
backlog and workers, and worker heartbeats. Alerts are raised and resolved by `evaluate`, which
the service host runs every `VIGIL_INFRA_CHECK_INTERVAL` seconds (`workers/host/services/infra_monitor.py`): one
alert per condition while it holds, resolved when it clears, kept `VIGIL_ALERT_RETENTION_HOURS`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from app.alerts.notifications import email_configured, probe_smtp
from app.core.db import get_engine
from app.core.errors import NotFound
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.stats import summarize
from app.core.time import iso_utc
from app.jobs import heartbeats, queues
from app.observability.api_timings import timings
from app.ops.health import WORKERS, CheckResult, run_checks

ALERTS_KEY = KEY_PREFIX + "infra:alerts"  # zset: alert id -> triggered at
ALERT_KEY = KEY_PREFIX + "infra:alert:"  # + id: JSON body
OPEN_KEY = KEY_PREFIX + "infra:open:"  # + condition key: id of its open alert

API_P99_WARN_MS = 1000
API_MIN_SAMPLE = 10  # requests in the window before the API Server gets a verdict other than healthy
API_ERROR_WARN = 1.0
API_ERROR_CRIT = 5.0
DB_LATENCY_WARN_MS = 100
POOL_WARN = 80.0
SMTP_BACKLOG_WARN = 1000
REDIS_MEMORY_WARN = 90.0


# ---- health ---------------------------------------------------------------------------------------
def _api(settings: Settings) -> dict[str, Any]:
    """The API's verdict from its own request timings. Probe answers count for latency but not as
    errors (a readiness probe's 503 is its verdict, not a failure), and no verdict is drawn from
    fewer than API_MIN_SAMPLE requests: one 503 at start-up must not read as 100 % errors."""
    samples = timings(settings)
    figures = summarize([ms for ms, _, _ in samples])
    counted = [status for _, status, probe in samples if not probe]
    errors = sum(1 for status in counted if status >= 500)
    rate = round(errors / len(counted) * 100, 2) if counted else 0.0
    status = "healthy"
    reason = None
    if len(samples) < API_MIN_SAMPLE:
        pass  # too few requests to judge
    elif len(counted) >= API_MIN_SAMPLE and rate >= API_ERROR_CRIT:
        status, reason = "down", f"{rate}% of requests failed with a server error"
    elif figures and (
        figures["p99_ms"] > API_P99_WARN_MS or (len(counted) >= API_MIN_SAMPLE and rate >= API_ERROR_WARN)
    ):
        status, reason = (
            "degraded",
            (
                f"p99 latency {figures['p99_ms']:.0f} ms"
                if figures["p99_ms"] > API_P99_WARN_MS
                else f"{rate}% server errors"
            ),
        )
    return {
        "name": "API Server",
        "status": status,
        "response_time_ms": (
            {"avg": figures["avg_ms"], "p95": figures["p95_ms"], "p99": figures["p99_ms"]}
            if figures
            else {"avg": None, "p95": None, "p99": None}
        ),
        "error_rate_percent": rate,
        "requests_sampled": len(samples),
        "min_sample": API_MIN_SAMPLE,
        "window_seconds": settings.api_latency_window,
        "reason": reason,
    }


def _database(settings: Settings) -> dict[str, Any]:
    engine = get_engine(settings)
    t0 = time.perf_counter()
    usage = None
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).all()
        latency = (time.perf_counter() - t0) * 1000
        if engine.dialect.name == "postgresql":
            used, limit = conn.execute(
                text("SELECT (SELECT count(*) FROM pg_stat_activity), current_setting('max_connections')::int")
            ).one()
            usage = round(used / limit * 100, 1)
    status, reason = "healthy", None
    if usage is not None and usage >= POOL_WARN:
        status, reason = "degraded", f"{usage}% of the server's connections in use"
    elif latency > DB_LATENCY_WARN_MS:
        status, reason = "degraded", f"query latency {latency:.0f} ms"
    return {
        "name": "OLTP Database",
        "status": status,
        "backend": engine.dialect.name,
        "connection_pool_usage_percent": usage,
        "query_latency_ms": round(latency, 2),
        "reason": reason,
    }


def _redis(settings: Settings) -> dict[str, Any]:
    client = get_redis(settings)
    t0 = time.perf_counter()
    client.ping()
    latency = (time.perf_counter() - t0) * 1000
    memory = client.info("memory")
    used, limit = memory.get("used_memory", 0), memory.get("maxmemory", 0)
    usage = round(used / limit * 100, 1) if limit else None
    status, reason = "healthy", None
    if usage is not None and usage >= REDIS_MEMORY_WARN:
        status, reason = "degraded", f"{usage}% of maxmemory used"
    return {
        "name": "Redis",
        "status": status,
        "latency_ms": round(latency, 2),
        "used_memory_mb": round(used / 2**20, 1),
        "memory_usage_percent": usage,
        "reason": reason,
    }


def _smtp(settings: Settings, overview: list[dict[str, Any]]) -> dict[str, Any]:
    """The notification e-mail channel: its backlog is what waits in the notification queues."""
    by_name = {q["name"]: q for q in overview}
    backlog = by_name["notification"]["waiting_jobs"] + by_name["notification:high"]["waiting_jobs"]
    failed = by_name["notification"]["failed_jobs"] + by_name["notification:high"]["failed_jobs"]
    consumers = by_name["notification"]["consumers"] + by_name["notification:high"]["consumers"]
    paused = by_name["notification"]["paused"] or by_name["notification:high"]["paused"]
    status, reason = "healthy", None
    smtp_error = probe_smtp(settings, settings.health_timeout * 0.8) if email_configured(settings) else None
    if smtp_error:
        status, reason = "down", f"SMTP server {settings.smtp_host}:{settings.smtp_port} unavailable: {smtp_error}"
    elif consumers == 0 and backlog > 0:
        status, reason = "down", "no worker is delivering notifications" + (" (queue paused)" if paused else "")
    elif backlog > SMTP_BACKLOG_WARN:
        status, reason = "degraded", f"{backlog} notifications waiting"
    elif failed > queues.CRITICAL_FAILURES:
        status, reason = "degraded", f"{failed} failed notifications awaiting retry"
    return {
        "name": "SMTP Service",
        "status": status,
        "queue_backlog": backlog,
        "failed_jobs": failed,
        "consumers": consumers,
        "smtp_configured": email_configured(settings),
        "reason": reason,
    }


def _workers(settings: Settings) -> dict[str, Any]:
    """Worker groups with a live heartbeat that consume: a group an operator stopped keeps its
    processes (and heartbeats) but runs nothing, so it counts as not running."""
    client = get_redis(settings)
    groups = heartbeats.by_group(heartbeats.alive(client, settings.heartbeat_ttl))
    stopped = queues.stopped_groups(client)
    running = {name: 0 if name in stopped else len(groups.get(name, [])) for name, _ in WORKERS}
    missing_critical = [name for name, critical in WORKERS if critical and not running[name]]
    missing = [name for name, _ in WORKERS if not running[name]]
    status = "down" if missing_critical else ("degraded" if missing else "healthy")
    reason = None
    if missing:
        reason = "not running: " + ", ".join(f"{n} (stopped)" if n in stopped else n for n in missing)
    return {"name": "Workers", "status": status, "running": running, "reason": reason}


def health(settings: Settings) -> list[dict[str, Any]]:
    """Every infrastructure service, checked in parallel; one that cannot be checked is `down`."""
    overview: dict[str, Any] = {}

    def smtp() -> CheckResult:
        overview["queues"] = queues.overview(settings)
        return CheckResult("healthy", "", _smtp(settings, overview["queues"]))

    names = {
        "api": "API Server",
        "database": "OLTP Database",
        "redis": "Redis",
        "smtp": "SMTP Service",
        "workers": "Workers",
    }
    checks: dict[str, Callable[[], CheckResult]] = {
        "api": lambda: CheckResult("healthy", "", _api(settings)),
        "database": lambda: CheckResult("healthy", "", _database(settings)),
        "redis": lambda: CheckResult("healthy", "", _redis(settings)),
        "smtp": smtp,
        "workers": lambda: CheckResult("healthy", "", _workers(settings)),
    }
    results = run_checks(checks, settings.health_timeout)
    out = []
    for key, result in results.items():
        if result.details is not None:
            out.append(result.details)
        else:
            out.append({"name": names[key], "status": "down", "reason": result.message})
    return out


# ---- alerts -------------------------------------------------------------------------------------------
def conditions(settings: Settings) -> list[tuple[str, str, str, str]]:
    """What is wrong right now: (condition key, severity, service, message)."""
    found: list[tuple[str, str, str, str]] = []
    for service in health(settings):
        if service["status"] == "healthy":
            continue
        severity = "error" if service["status"] == "down" else "warning"
        name = service["name"]
        found.append(
            (
                f"service:{name}:{service['status']}",
                severity,
                name,
                f"{name} {service['status']}: {service.get('reason')}",
            )
        )
    try:
        for q in queues.overview(settings):
            if q["status"] == "healthy":
                continue
            severity = "error" if q["status"] == "critical" else "warning"
            if q["waiting_jobs"] >= queues.WARNING_WAITING:
                detail = f"{q['waiting_jobs']} waiting"
            elif q["consumers"] == 0 and q["waiting_jobs"] > 0:
                detail = f"{q['waiting_jobs']} waiting and no worker consumes it" + (" (paused)" if q["paused"] else "")
            else:
                detail = f"{q['failed_jobs']} failed"
            found.append(
                (
                    f"queue:{q['name']}:{q['status']}",
                    severity,
                    "Queues",
                    f"Queue {q['name']} is {q['status']}: {detail}",
                )
            )
    except Exception as exc:  # Redis down: the service checks above already say so
        found.append(("queues:unreadable", "error", "Queues", f"Queue state unreadable: {exc}"[:300]))
    return found


def evaluate(settings: Settings, now: float | None = None) -> dict[str, int]:
    """Raise an alert for each new condition, refresh open ones, resolve the ones that cleared."""
    now = now or time.time()
    client = get_redis(settings)
    current = {key: (sev, svc, msg) for key, sev, svc, msg in conditions(settings)}
    raised = resolved = 0
    for key, (severity, service, message) in current.items():
        alert_id = client.get(OPEN_KEY + key)
        body = _load(client, alert_id) if alert_id else None
        if body is None:
            alert_id = f"alert_{uuid.uuid4().hex[:12]}"
            body = {
                "id": alert_id,
                "timestamp": iso_utc(now),
                "severity": severity,
                "service": service,
                "message": message,
                "acknowledged": False,
                "resolved": False,
                "resolved_at": None,
                "last_seen": iso_utc(now),
                "condition": key,
            }
            with client.pipeline() as pipe:
                pipe.set(ALERT_KEY + alert_id, json.dumps(body))
                pipe.zadd(ALERTS_KEY, {alert_id: now})
                pipe.set(OPEN_KEY + key, alert_id)
                pipe.execute()
            raised += 1
        else:
            body.update(message=message, last_seen=iso_utc(now))
            client.set(ALERT_KEY + alert_id, json.dumps(body))
    for open_key in client.scan_iter(match=OPEN_KEY + "*", count=500):
        key = open_key[len(OPEN_KEY) :]
        if key in current:
            continue
        alert_id = client.get(open_key)
        body = _load(client, alert_id) if alert_id else None
        if body is not None:
            body.update(resolved=True, resolved_at=iso_utc(now))
            client.set(ALERT_KEY + alert_id, json.dumps(body))
            resolved += 1
        client.delete(open_key)
    _expire(client, now - settings.alert_retention_hours * 3600)
    return {"raised": raised, "resolved": resolved, "open": len(current)}


def _load(client, alert_id: str) -> dict[str, Any] | None:
    raw = client.get(ALERT_KEY + alert_id)
    return json.loads(raw) if raw else None


def _expire(client, cutoff: float) -> None:
    old = client.zrangebyscore(ALERTS_KEY, "-inf", cutoff)
    if old:
        with client.pipeline() as pipe:
            pipe.delete(*[ALERT_KEY + a for a in old])
            pipe.zrem(ALERTS_KEY, *old)
            pipe.execute()


def alerts(settings: Settings, hours: int, severity: str | None = None) -> list[dict[str, Any]]:
    """Alerts raised in the last `hours`, newest first."""
    client = get_redis(settings)
    ids = client.zrevrangebyscore(ALERTS_KEY, "+inf", time.time() - hours * 3600)
    if not ids:
        return []
    bodies = [json.loads(raw) for raw in client.mget([ALERT_KEY + a for a in ids]) if raw]
    return [b for b in bodies if severity is None or b["severity"] == severity]


def acknowledge(settings: Settings, alert_id: str, actor: str | None) -> dict[str, Any]:
    client = get_redis(settings)
    body = _load(client, alert_id)
    if body is None:
        raise NotFound(f"No alert with id '{alert_id}'", code="alert_not_found")
    body.update(acknowledged=True, acknowledged_by=actor, acknowledged_at=iso_utc(time.time()))
    client.set(ALERT_KEY + alert_id, json.dumps(body))
    return body
