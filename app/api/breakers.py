"""Circuit breakers (004)."""
from __future__ import annotations

from flask import Blueprint

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.respond import dependencies_required
from app.pipeline.ai import breakers
from app.core.time import iso_now

bp = Blueprint("breakers", __name__)


@bp.get("/api/system/circuit-breakers")
@endpoint(summary="Every AI service's circuit breaker, with its state and counters", tags=["breakers"],
          errors={503: "Redis unavailable"})
def list_breakers():
    with dependencies_required():
        return {"circuit_breakers": breakers.all_breakers(current_settings()),
                "timestamp": iso_now()}


@bp.post("/api/system/circuit-breakers/<name>/reset")
@endpoint(summary="Reset a circuit breaker to closed", tags=["breakers"],
          errors={400: "Invalid name", 404: "No such breaker", 503: "Redis unavailable"})
def reset_breaker(name: str):
    with dependencies_required():
        body = breakers.reset_breaker(name, current_settings())
    body["timestamp"] = iso_now()
    return body
