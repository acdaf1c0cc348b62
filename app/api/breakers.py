"""Circuit breakers (System Operations API)."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required
from app.core.time import iso_now
from app.pipeline.ai import breakers

bp = Blueprint("breakers", __name__)

State = Literal["closed", "open", "half_open"]


class BreakerPath(BaseModel):
    name: str = Field(
        pattern=breakers.NAME.pattern,
        description="Breaker name: detector or analyser (any other well-formed name is a 404)",
    )


class Breaker(Answer):
    name: str
    state: State = Field(description="An open breaker past its recovery time reads half_open")
    failure_count: int = Field(description="Consecutive failures")
    success_count: int
    total_failures: int
    last_failure: str | None
    last_error: str | None
    last_state_change: str | None
    last_call: str | None
    opened_at: str | None


class Breakers(Answer):
    circuit_breakers: list[Breaker]
    timestamp: str


class BreakerReset(Answer):
    name: str
    previous_state: State
    new_state: Literal["closed"]
    message: str
    timestamp: str


@bp.get("/api/system/circuit-breakers")
@endpoint(
    response=Breakers,
    summary="Every AI service's circuit breaker, with its state and counters",
    tags=["breakers"],
    errors={503: "Redis unavailable"},
    links={"ResetBreaker": Link("breakers.reset_breaker", {"name": "$response.body#/circuit_breakers/0/name"})},
)
def list_breakers():
    with dependencies_required():
        return {"circuit_breakers": breakers.all_breakers(current_settings()), "timestamp": iso_now()}


@bp.post("/api/system/circuit-breakers/<name>/reset")
@endpoint(
    path=BreakerPath,
    response=BreakerReset,
    summary="Reset a circuit breaker to closed",
    tags=["breakers"],
    errors={404: "No such breaker", 503: "Redis unavailable"},
)
def reset_breaker(name: str):
    with dependencies_required():
        body = breakers.reset_breaker(name, current_settings())
    body["timestamp"] = iso_now()
    return body
