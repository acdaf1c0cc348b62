"""Health checks: database, Redis, AI backends and the processes seen through heartbeats.

Checks run in parallel on a small shared pool with a per-check timeout, so a hung dependency
costs a probe at most `health_timeout` seconds and never blocks the others. Workers are judged by
the heartbeats they publish, never by a `celery inspect` broadcast on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from app.core.db import get_engine
from app.core.redis_client import get_redis
from app.core.settings import Settings
from app.jobs import heartbeats
from app.jobs.queues import stopped_groups
from app.pipeline.ai.probes import probe_all

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vigil-health")

# Supervised processes as the System Monitoring guide, the System API and the System Operations API name them;
# `critical` ones gate readiness.
WORKERS: tuple[tuple[str, bool], ...] = (
    ("gpu_monitor", False),
    ("cleanup_service", False),
    ("detection_worker", True),
    ("analysis_worker", True),
    ("notification_worker", False),
    ("file_watcher", False),
    ("beat", False),
)
READINESS_WORKERS = frozenset(name for name, critical in WORKERS if critical)


@dataclass
class CheckResult:
    status: str  # healthy | degraded | unhealthy
    message: str
    details: dict[str, Any] | None = None
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_service(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "details": self.details}


def check_database(settings: Settings) -> CheckResult:
    engine = get_engine(settings)
    with engine.connect() as conn:
        # Touches a real table, so an unmigrated database reads as unhealthy.
        conn.execute(text("SELECT 1 FROM cameras LIMIT 1")).all()
    pool = engine.pool
    details = None
    if hasattr(pool, "checkedout") and hasattr(pool, "size"):
        details = {"pool_size": pool.size(), "checked_out": pool.checkedout()}
    return CheckResult("healthy", "Database operational", details)


_redis_version: dict[str, str] = {}


def check_redis(settings: Settings) -> CheckResult:
    client = get_redis(settings)
    client.ping()
    version = _redis_version.get(settings.redis_url)
    if version is None:
        version = _redis_version[settings.redis_url] = str(client.info("server").get("redis_version"))
    return CheckResult("healthy", "Redis connected", {"redis_version": version})


def check_ai(settings: Settings) -> CheckResult:
    """The configured detector and analyser: built-in ones are healthy when their model loads, HTTP
    ones are probed with a short timeout, and an open circuit breaker makes a service unhealthy."""

    services = probe_all(settings)
    details = {s["name"]: s["status"] for s in services}
    down = [s for s in services if s["status"] != "healthy"]
    if not down:
        return CheckResult("healthy", "AI services operational", details, extra={"services": services})
    message = "AI services unavailable: " + ", ".join(f"{s['name']} ({s['error']})" for s in down)
    return CheckResult("unhealthy", message[:300], details, extra={"services": services})


def check_workers(settings: Settings) -> CheckResult:
    """Which processes run, from their heartbeats. A Celery group an operator stopped
    (`app.jobs.queues.stopped_groups`) still beats but consumes nothing: it is not running."""
    client = get_redis(settings)
    beats = heartbeats.alive(client, settings.heartbeat_ttl)
    groups = heartbeats.by_group(beats)
    stopped = stopped_groups(client)
    workers = {name: [] if name in stopped else [b["node"] for b in groups.get(name, [])] for name, _ in WORKERS}
    missing = [name for name in READINESS_WORKERS if not workers[name]]
    status = "healthy" if not missing else "unhealthy"
    message = (
        "Pipeline workers running"
        if not missing
        else "Not running: " + ", ".join(f"{name} (stopped)" if name in stopped else name for name in sorted(missing))
    )
    return CheckResult(status, message, {"nodes": workers, "stopped": sorted(stopped & {n for n, _ in WORKERS})})


def run_checks(checks: dict[str, Callable[[], CheckResult]], timeout: float) -> dict[str, CheckResult]:
    """Run checks in parallel; a check that raises or overruns is unhealthy, with the reason."""
    started = {name: time.perf_counter() for name in checks}
    futures = {name: _pool.submit(fn) for name, fn in checks.items()}
    deadline = time.perf_counter() + timeout
    results: dict[str, CheckResult] = {}
    for name, future in futures.items():
        try:
            result = future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except FutureTimeout:
            future.cancel()
            result = CheckResult("unhealthy", f"{name} check timed out after {timeout:g}s")
        except Exception as exc:  # the failure is the finding
            result = CheckResult("unhealthy", f"{name} unavailable: {type(exc).__name__}: {exc}"[:300])
        result.latency_ms = round((time.perf_counter() - started[name]) * 1000, 2)
        results[name] = result
    return results


def worker_statuses(result: CheckResult) -> list[dict[str, Any]]:
    """Per-process running flags; when heartbeats could not be read, every process says why."""
    nodes = (result.details or {}).get("nodes")
    stopped = set((result.details or {}).get("stopped") or ())
    out = []
    for name, _critical in WORKERS:
        if nodes is None:
            out.append({"name": name, "running": False, "message": result.message})
        else:
            running = bool(nodes.get(name))
            message = None if running else ("stopped by an operator" if name in stopped else "no heartbeat")
            out.append({"name": name, "running": running, "message": message})
    return out


def overall(services: dict[str, CheckResult]) -> str:
    """healthy when every service is; unhealthy if the database or Redis is down; else degraded."""
    if all(s.status == "healthy" for s in services.values()):
        return "healthy"
    if any(services[name].status == "unhealthy" for name in ("database", "redis") if name in services):
        return "unhealthy"
    return "degraded"


def readiness(settings: Settings) -> dict[str, Any]:
    """The readiness verdict (System API, System Operations API): database and Redis healthy, pipeline workers
    running."""
    results = run_checks(
        {
            "database": lambda: check_database(settings),
            "redis": lambda: check_redis(settings),
            "ai": lambda: check_ai(settings),
            "workers": lambda: check_workers(settings),
        },
        settings.health_timeout,
    )
    workers = worker_statuses(results["workers"])
    infra_ok = results["database"].status == "healthy" and results["redis"].status == "healthy"
    pipeline_ok = all(w["running"] for w in workers if w["name"] in READINESS_WORKERS)
    ready = infra_ok and pipeline_ok
    if not ready:
        status = "not_ready"
    elif results["ai"].status != "healthy" or not all(w["running"] for w in workers):
        status = "degraded"
    else:
        status = "ready"
    reasons = [
        f"{name}: {r.message}" for name, r in results.items() if name in ("database", "redis") and r.status != "healthy"
    ]
    reasons += [
        f"{w['name']}: not running ({w['message']})"
        for w in workers
        if w["name"] in READINESS_WORKERS and not w["running"]
    ]
    return {
        "ready": ready,
        "status": status,
        "services": {k: results[k] for k in ("database", "redis", "ai")},
        "workers": workers,
        "reasons": reasons,
    }
