"""Health probes (System API, System Operations API). Liveness does no I/O; readiness and health run the
parallel checks.

Readiness and health answer the same body with 200 or 503: the status code is the verdict an
orchestrator acts on, the body says why. Both bodies are documented for both statuses.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, jsonify

from app.api.kit.current import current_settings, current_version
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.core.time import iso_now
from app.ops import health, health_full

bp = Blueprint("health", __name__)

Verdict = Literal["healthy", "degraded", "unhealthy"]


class Alive(Answer):
    status: Literal["alive"]


class Ready(Answer):
    ready: bool
    status: Literal["ready", "degraded", "not_ready"]
    reasons: list[str]
    timestamp: str


class ServiceCheck(Answer):
    status: Verdict
    message: str
    details: dict[str, Any] | None


class WorkerStatus(Answer):
    name: str
    running: bool
    message: str | None = None


class ReadinessDetail(Answer):
    ready: bool
    status: Literal["ready", "degraded", "not_ready"]
    services: dict[str, ServiceCheck]
    workers: list[WorkerStatus]
    timestamp: str


class DetailedHealth(Answer):
    status: Verdict
    services: dict[str, ServiceCheck]
    timestamp: str


class Component(Answer):
    name: str
    status: Verdict
    message: str
    details: dict[str, Any] | None
    latency_ms: float | None


class ComponentLatency(Answer):
    status: Verdict
    latency_ms: float | None


class InfrastructureSummary(Answer):
    postgres: ComponentLatency
    redis: ComponentLatency


class AiService(Answer):
    name: str
    display_name: str
    backend: str | None = None
    status: Literal["healthy", "unhealthy"]
    url: str | None
    response_time_ms: float | None
    error: str | None
    circuit_state: Literal["closed", "open", "half_open", "unknown"]
    last_check: str


class BreakerSummary(Answer):
    total: int
    open: int
    half_open: int
    closed: int
    breakers: dict[str, Literal["closed", "open", "half_open", "unknown"]]


class FullWorker(Answer):
    name: str
    running: bool
    critical: bool


class FullHealth(Answer):
    status: Verdict
    ready: bool
    message: str
    postgres: Component
    redis: Component
    infrastructure: InfrastructureSummary
    ai_services: list[AiService]
    circuit_breakers: BreakerSummary
    workers: list[FullWorker]
    timestamp: str
    version: str


@bp.get("/health")
@endpoint(response=Alive, summary="Liveness probe: the process answers", probe=True, offline=True, tags=["health"])
def liveness():
    return {"status": "alive"}


@bp.get("/api/system/health/live")
@endpoint(response=Alive, summary="Fast liveness probe (no external checks)", probe=True, offline=True, tags=["health"])
def fast_liveness():
    return {"status": "alive"}


@bp.get("/ready")
@endpoint(
    response=Ready,
    summary="Readiness probe for orchestrators: 200 ready, 503 not",
    probe=True,
    tags=["health"],
    errors={
        503: (
            "Not ready: the database or Redis is down, or a detection or analysis "
            "worker is not running (no heartbeat, or stopped)",
            Ready,
        )
    },
)
def ready():
    """Ready when the database and Redis answer and the detection and analysis workers run: a
    live heartbeat from a group that is not stopped (a stopped group keeps its processes but
    consumes nothing). `reasons` says what is missing."""
    verdict = health.readiness(current_settings())
    body = {
        "ready": verdict["ready"],
        "status": verdict["status"],
        "reasons": verdict["reasons"],
        "timestamp": iso_now(),
    }
    return jsonify(body), 200 if verdict["ready"] else 503


@bp.get("/api/system/health/ready")
@endpoint(
    response=ReadinessDetail,
    summary="Readiness probe with service and worker detail",
    probe=True,
    tags=["health"],
    errors={503: ("Not ready (see `/ready`)", ReadinessDetail)},
)
def readiness_detail():
    """`status` is `ready`, `degraded` (ready, but the AI or a non-critical worker is down) or
    `not_ready`; each worker says whether it runs and, if not, why (no heartbeat, or stopped by an
    operator)."""
    verdict = health.readiness(current_settings())
    body = {
        "ready": verdict["ready"],
        "status": verdict["status"],
        "services": {name: r.as_service() for name, r in verdict["services"].items()},
        "workers": verdict["workers"],
        "timestamp": iso_now(),
    }
    return jsonify(body), 200 if verdict["ready"] else 503


@bp.get("/api/system/health")
@endpoint(
    response=DetailedHealth,
    summary="Detailed health: database, Redis, AI (200 healthy, 503 degraded/unhealthy)",
    probe=True,
    tags=["health"],
    errors={503: ("Degraded or unhealthy", DetailedHealth)},
)
def detailed_health():
    settings = current_settings()
    results = health.run_checks(
        {
            "database": lambda: health.check_database(settings),
            "redis": lambda: health.check_redis(settings),
            "ai": lambda: health.check_ai(settings),
        },
        settings.health_timeout,
    )
    status = health.overall(results)
    body = {"status": status, "services": {name: r.as_service() for name, r in results.items()}, "timestamp": iso_now()}
    return jsonify(body), 200 if status == "healthy" else 503


@bp.get("/api/system/health/full")
@endpoint(
    response=FullHealth,
    summary="Full health: infrastructure, AI services, circuit breakers, workers (503 "
    "when a critical component is unhealthy)",
    probe=True,
    tags=["health"],
    errors={503: ("A critical component is unhealthy", FullHealth)},
)
def full_health():
    body, status = health_full.full_health(current_settings(), current_version())
    return jsonify(body), status
