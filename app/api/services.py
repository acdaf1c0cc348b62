"""Services management (System Operations API): list services by category; restart, start, enable, disable.

Supervised workers (in-process services, Celery worker groups, beat, and under `make run` the API and
Flower processes) are acted on through the supervisor. The database and Redis are external to Vigil:
they are listed with their health, and asking Vigil to restart them is a 400 that says so rather
than a pretend success. Under compose the API is not supervised by Vigil either (its container is).
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.supervisor import ACTED_ON, ActedOn, WorkerName, command
from app.core.errors import InvalidInput
from app.ops import health, supervisor

bp = Blueprint("services", __name__)

CATEGORIES = ("infrastructure", "ai", "monitoring")
ERRORS = {
    400: "External or disabled service, already running, or invalid name",
    404: "Unknown service",
    503: "Supervisor not running",
}


Category = Literal["infrastructure", "ai", "monitoring"]


class ServiceInfo(Answer):
    name: str
    status: str
    enabled: bool
    failure_count: int


class ServiceAnswer(Answer):
    action: str
    service: str
    success: bool
    confirmed: bool = Field(
        description="True (200) once the supervisor observed the effect; false (202) when it is still under way"
    )
    message: str
    acted_on: ActedOn | None = Field(None, description=ACTED_ON)
    service_info: ServiceInfo | None = None


class ServiceOut(Answer):
    name: str
    category: Category
    status: str = Field(
        description="A supervised worker's status (`running`, `stopped`, `crashed`, `restarting`, `failed`; "
        "`unknown` while no supervisor runs); `running` or `unhealthy` for the external database and Redis"
    )
    enabled: bool
    failure_count: int = Field(description="Automatic restarts in a row")
    last_restart: str | None
    managed_by: Literal["supervisor", "process manager", "external"] = Field(
        description="`supervisor`: Vigil's supervisor acts on it; `process manager`: its process manager does "
        "(compose's container runtime); `external`: not run by Vigil at all"
    )
    kind: str | None = Field(None, description="Supervised workers: as GET /api/system/supervisor")
    error: str | None = Field(None, description="Supervised workers: why it last crashed or failed")
    process_manager: str | None = Field(None, description="Supervised workers: `supervisord` under `make run`")
    message: str | None = Field(None, description="External services: their health check's message")
    target: str | None = Field(None, description="External services: where Vigil reaches them (no credentials)")


class CategorySummary(Answer):
    total: int
    healthy: int
    unhealthy: int


class ServiceList(Answer):
    services: list[ServiceOut]
    summaries: dict[str, CategorySummary] = Field(description="Per category (only the asked one when filtered)")
    supervisor_running: bool


class ServicesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: Category | None = Field(None, description="Only this category")


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
@endpoint(
    summary="Managed services and their health, by category",
    query=ServicesQuery,
    tags=["services"],
    response=ServiceList,
)
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
    result = command(action, name)
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


ACTIONS = {
    "restart": "Restart a service",
    "start": "Start a stopped service",
    "enable": "Enable a service (self-healing restarts resume)",
    "disable": "Disable a service (crashes are no longer restarted automatically)",
}


def _route(action: str, summary: str) -> None:
    def view(name: str):
        return _act(action, name)

    view.__name__ = view.__qualname__ = f"{action}_service"
    declared = endpoint(
        summary=summary,
        path=WorkerName,
        tags=["services"],
        errors=ERRORS,
        response=ServiceAnswer,
        responses={202: ServiceAnswer},
    )(view)
    bp.add_url_rule(f"/api/system/services/<name>/{action}", view_func=declared, methods=["POST"])


for _action, _summary in ACTIONS.items():
    _route(_action, _summary)
