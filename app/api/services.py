"""Services management (004): list services by category; restart, start, enable, disable.

Supervised workers (in-process services, Celery worker groups, beat, and under `make run` the API and
Flower processes) are acted on through the supervisor. The database and Redis are external to Vigil:
they are listed with their health, and asking Vigil to restart them is a 400 that says so rather
than a pretend success. Under compose the API is not supervised by Vigil either (its container is).
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.auth import actor
from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.supervisor import ACTED_ON, ActedOn, WorkerName
from app.core.errors import InvalidInput
from app.ops import health, supervisor

bp = Blueprint("services", __name__)

CATEGORIES = ("infrastructure", "ai", "monitoring")
ERRORS = {
    400: "External or disabled service, already running, or invalid name",
    404: "Unknown service",
    503: "Supervisor not running",
}


class ServiceAnswer(BaseModel):
    action: str
    service: str
    success: bool
    confirmed: bool = Field(
        description="True (200) once the supervisor observed the effect; false (202) when it is still under way"
    )
    message: str
    acted_on: ActedOn | None = Field(None, description=ACTED_ON)
    service_info: dict[str, Any] | None = None


class ServicesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: Literal["infrastructure", "ai", "monitoring"] | None = Field(None, description="Only this category")


def _external(settings) -> list[dict]:
    """Services Vigil depends on but does not run: their health, never controls."""
    results = health.run_checks(
        {"database": lambda: health.check_database(settings), "redis": lambda: health.check_redis(settings)},
        settings.health_timeout,
    )
    where = {"database": settings.database_url.split("@")[-1].split("?")[0], "redis": settings.redis_url.split("@")[-1]}
    return [
        {
            "name": name,
            "category": "infrastructure",
            "status": "running" if r.status == "healthy" else "unhealthy",
            "enabled": True,
            "failure_count": 0,
            "last_restart": None,
            "managed_by": "external",
            "message": r.message,
            "target": where[name],
        }
        for name, r in results.items()
    ]


def _managed(settings) -> tuple[bool, list[dict]]:
    current = supervisor.view(settings)
    out = []
    for w in current.workers.values():
        public = supervisor.public_worker(w)
        out.append(
            {
                "name": w["name"],
                "category": w.get("category") or "infrastructure",
                "status": public["status"] if current.running else "unknown",
                "enabled": public["enabled"],
                "failure_count": public["restart_count"],
                "last_restart": public["last_started_at"] if public["restart_count"] else None,
                "managed_by": "supervisor" if public["controllable"] else "process manager",
                "kind": public["kind"],
                "error": public["error"],
                "process_manager": public["managed_by"],
            }
        )
    return current.running, sorted(out, key=lambda s: (s["category"], s["name"]))


EXTERNAL = {
    "database": "the database (PostgreSQL or SQLite) is not run by Vigil; restart it with its own service manager",
    "redis": "Redis is not run by Vigil; restart it with its own service manager (compose: "
    "`docker compose restart redis`)",
    "api": "the API is run by gunicorn in its container; restart it there",
}


@bp.get("/api/system/services")
@endpoint(summary="Managed services and their health, by category", query=ServicesQuery, tags=["services"])
def list_services(query: ServicesQuery):
    settings = current_settings()
    running, managed = _managed(settings)
    api = (
        []
        if any(s["name"] == "api" for s in managed)
        else [
            {
                "name": "api",
                "category": "infrastructure",
                "status": "running",
                "enabled": True,
                "failure_count": 0,
                "last_restart": None,
                "managed_by": "process manager",
            }
        ]
    )  # compose: its container, not Vigil, runs it
    services = _external(settings) + api + managed
    if query.category:
        services = [s for s in services if s["category"] == query.category]
    summaries = {}
    for category in CATEGORIES:
        members = [s for s in services if s["category"] == category]
        if query.category and category != query.category:
            continue
        healthy = sum(1 for s in members if s["status"] == "running")
        summaries[category] = {"total": len(members), "healthy": healthy, "unhealthy": len(members) - healthy}
    return {"services": services, "summaries": summaries, "supervisor_running": running}


def _act(action: str, name: str):
    settings = current_settings()
    if name in EXTERNAL and not (name == "api" and "api" in supervisor.view(settings).workers):
        raise InvalidInput(f"Cannot {action} '{name}': {EXTERNAL[name]}", code="not_managed")
    result = supervisor.send_command(settings, action, name, actor=actor(), request_id=getattr(g, "request_id", None))
    info = supervisor.public_worker(result.worker) if result.worker else None
    body = {
        "action": action,
        "service": name,
        "success": True,
        "confirmed": result.status == 200,
        "message": result.message,
        "acted_on": result.acted_on or None,
        "service_info": {
            "name": name,
            "status": info["status"],
            "enabled": info["enabled"],
            "failure_count": info["restart_count"],
        }
        if info
        else None,
    }
    return body, result.status


@bp.post("/api/system/services/<name>/restart")
@endpoint(
    summary="Restart a service",
    path=WorkerName,
    tags=["services"],
    errors=ERRORS,
    response=ServiceAnswer,
    responses={202: ServiceAnswer},
)
def restart_service(name: str):
    return _act("restart", name)


@bp.post("/api/system/services/<name>/start")
@endpoint(
    summary="Start a stopped service",
    path=WorkerName,
    tags=["services"],
    errors=ERRORS,
    response=ServiceAnswer,
    responses={202: ServiceAnswer},
)
def start_service(name: str):
    return _act("start", name)


@bp.post("/api/system/services/<name>/enable")
@endpoint(
    summary="Enable a service (self-healing restarts resume)",
    path=WorkerName,
    tags=["services"],
    errors=ERRORS,
    response=ServiceAnswer,
    responses={202: ServiceAnswer},
)
def enable_service(name: str):
    return _act("enable", name)


@bp.post("/api/system/services/<name>/disable")
@endpoint(
    summary="Disable a service (crashes are no longer restarted automatically)",
    path=WorkerName,
    tags=["services"],
    errors=ERRORS,
    response=ServiceAnswer,
    responses={202: ServiceAnswer},
)
def disable_service(name: str):
    return _act("disable", name)
