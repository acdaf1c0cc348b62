"""Health probes (003/004). Liveness does no I/O; readiness and health run the parallel checks."""
from __future__ import annotations


from flask import Blueprint, jsonify

from app.api.kit.current import current_settings, current_version
from app.core.time import iso_now
from app.api.kit.endpoint import endpoint
from app.ops import health, health_full
bp = Blueprint("health", __name__)




@bp.get("/health")
@endpoint(summary="Liveness probe: the process answers", probe=True, tags=["health"])
def liveness():
    return {"status": "alive"}


@bp.get("/api/system/health/live")
@endpoint(summary="Fast liveness probe (no external checks)", probe=True, tags=["health"])
def fast_liveness():
    return {"status": "alive"}


@bp.get("/ready")
@endpoint(summary="Readiness probe for orchestrators: 200 ready, 503 not", probe=True, tags=["health"],
          errors={503: "Not ready"})
def ready():
    verdict = health.readiness(current_settings())
    body = {"ready": verdict["ready"], "status": verdict["status"], "reasons": verdict["reasons"],
            "timestamp": iso_now()}
    return jsonify(body), 200 if verdict["ready"] else 503


@bp.get("/api/system/health/ready")
@endpoint(summary="Readiness probe with service and worker detail", probe=True, tags=["health"],
          errors={503: "Not ready"})
def readiness_detail():
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
@endpoint(summary="Detailed health: database, Redis, AI (200 healthy, 503 degraded/unhealthy)", probe=True,
          tags=["health"], errors={503: "Degraded or unhealthy"})
def detailed_health():
    settings = current_settings()
    results = health.run_checks({
        "database": lambda: health.check_database(settings),
        "redis": lambda: health.check_redis(settings),
        "ai": lambda: health.check_ai(settings),
    }, settings.health_timeout)
    status = health.overall(results)
    body = {"status": status, "services": {name: r.as_service() for name, r in results.items()},
            "timestamp": iso_now()}
    return jsonify(body), 200 if status == "healthy" else 503


@bp.get("/api/system/health/full")
@endpoint(summary="Full health: infrastructure, AI services, circuit breakers, workers (503 when a critical "
                  "component is unhealthy)", probe=True, tags=["health"], errors={503: "Critical component unhealthy"})
def full_health():
    body, status = health_full.full_health(current_settings(), current_version())
    return jsonify(body), status
