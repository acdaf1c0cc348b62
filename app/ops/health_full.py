"""GET /api/system/health/full (System Monitoring guide): every component, and whether the system can do its job.

Critical (System Monitoring guide, "Critical Services"): the database, Redis, the detector, the analyser and the
file watcher; Vigil adds the detection and analysis workers, without which nothing is processed
(readiness already requires them). Any critical component unhealthy: `unhealthy`, not ready,
503. Only non-critical ones unhealthy: `degraded`, ready, 200.
"""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.core.time import iso_now
from app.ops import health
from app.pipeline.ai.breakers import SERVICES, all_breakers

CRITICAL_WORKERS = frozenset({"file_watcher", "detection_worker", "analysis_worker"})
EXTRA_WORKERS = ("batch_aggregator",)  # service-host services of the pipeline


def _component(name: str, result: health.CheckResult) -> dict[str, Any]:
    return {
        "name": name,
        "status": result.status,
        "message": result.message,
        "details": result.details,
        "latency_ms": result.latency_ms,
    }


def full_health(settings: Settings, version: str) -> tuple[dict[str, Any], int]:
    results = health.run_checks(
        {
            "database": lambda: health.check_database(settings),
            "redis": lambda: health.check_redis(settings),
            "ai": lambda: health.check_ai(settings),
            "workers": lambda: health.check_workers(settings),
        },
        settings.health_timeout,
    )
    database = _component("postgres", results["database"])
    database["details"] = dict(database["details"] or {}, dialect="sqlite" if settings.is_sqlite else "postgresql")
    redis_part = _component("redis", results["redis"])

    ai_services = results["ai"].extra.get("services")
    if ai_services is None:  # the AI check itself failed or timed out
        ai_services = [
            {
                "name": name,
                "display_name": display,
                "status": "unhealthy",
                "url": None,
                "response_time_ms": None,
                "error": results["ai"].message,
                "circuit_state": "unknown",
                "last_check": iso_now(),
            }
            for name, display in SERVICES.items()
        ]

    try:
        states = {b["name"]: b["state"] for b in all_breakers(settings)} if results["redis"].status == "healthy" else {}
    except Exception:  # Redis went away between the checks
        states = {}
    breakers = {name: states.get(name, "unknown") for name in SERVICES}
    circuit = {
        "total": len(breakers),
        "open": sum(s == "open" for s in breakers.values()),
        "half_open": sum(s == "half_open" for s in breakers.values()),
        "closed": sum(s == "closed" for s in breakers.values()),
        "breakers": breakers,
    }

    nodes = (results["workers"].details or {}).get("nodes")
    if nodes is not None:
        beats = health.heartbeats.alive(health.get_redis(settings), settings.heartbeat_ttl)
        groups = health.heartbeats.by_group(beats)
        for name in EXTRA_WORKERS:
            nodes[name] = [b["node"] for b in groups.get(name, [])]
    names = [name for name, _ in health.WORKERS] + list(EXTRA_WORKERS)
    workers = [
        {"name": name, "running": bool(nodes and nodes.get(name)), "critical": name in CRITICAL_WORKERS}
        for name in names
    ]

    critical_down = [c["name"] for c in (database, redis_part) if c["status"] != "healthy"]
    critical_down += [s["name"] for s in ai_services if s["status"] != "healthy"]
    critical_down += [w["name"] for w in workers if w["critical"] and not w["running"]]
    other_down = [w["name"] for w in workers if not w["critical"] and not w["running"]]
    if critical_down:
        status, message = "unhealthy", "Critical components unhealthy: " + ", ".join(critical_down)
    elif other_down:
        status, message = "degraded", "Non-critical components down: " + ", ".join(other_down)
    else:
        status, message = "healthy", "All systems operational"
    body = {
        "status": status,
        "ready": not critical_down,
        "message": message,
        "postgres": database,
        "redis": redis_part,
        "infrastructure": {
            "postgres": {"status": database["status"], "latency_ms": database["latency_ms"]},
            "redis": {"status": redis_part["status"], "latency_ms": redis_part["latency_ms"]},
        },
        "ai_services": ai_services,
        "circuit_breakers": circuit,
        "workers": workers,
        "timestamp": iso_now(),
        "version": version,
    }
    return body, 503 if critical_down else 200
