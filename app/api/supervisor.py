"""Worker supervisor (001): status, start/stop/restart/reset, restart history.

Handlers only read what the supervisor publishes and hand commands to it
(app/ops/supervisor.py); the supervisor itself runs in the service host.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.kit.auth import actor
from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.core.db import session_scope
from app.core.time import iso_now, iso_utc
from app.ops import supervisor

bp = Blueprint("supervisor", __name__)

KIND_ORDER = {"service": 0, "celery": 1, "beat": 2, "process": 3}
ERRORS = {
    400: "Invalid worker name, or the worker cannot do that now",
    404: "Unknown worker",
    503: "Supervisor not running, or it did not take the command in time",
}


class WorkerName(BaseModel):
    name: str = Field(description="Worker name, `^[a-zA-Z][a-zA-Z0-9_]*$`")

    @field_validator("name")
    @classmethod
    def _valid(cls, v: str) -> str:
        if not supervisor.valid_worker_name(v):
            raise ValueError("must match ^[a-zA-Z][a-zA-Z0-9_]*$ (at most 64 characters)")
        return v


ActedOn = Literal["process", "consumers", "pool", "thread"]
ACTED_ON = (
    "What the command changed: `process` (supervisord stopped or started the real process, `make run`), "
    "`consumers` (a Celery group stopped or resumed consuming; its process stays up, compose), `pool` (a "
    "Celery group's pool processes replaced, compose), `thread` (an in-process service of the service "
    "host); null when nothing had to change"
)


class CommandAnswer(BaseModel):
    success: bool
    message: str
    worker_name: str
    confirmed: bool = Field(
        description="True (200) once the supervisor observed the effect; false (202) when it "
        "accepted the command and the effect is still under way"
    )
    acted_on: ActedOn | None = Field(None, description=ACTED_ON)
    worker: dict[str, Any] | None = Field(None, description="The worker as GET /api/system/supervisor lists it")


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_name: str | None = Field(None, description="Only this worker's events")
    limit: int = Field(50, ge=1, le=100, description="Events per page (1-100)")
    offset: int = Field(0, ge=0, description="Events to skip")

    @field_validator("worker_name")
    @classmethod
    def _valid(cls, v: str | None) -> str | None:
        if v is not None and not supervisor.valid_worker_name(v):
            raise ValueError("must match ^[a-zA-Z][a-zA-Z0-9_]*$ (at most 64 characters)")
        return v


def ordered(workers: dict) -> list[dict]:
    return [
        supervisor.public_worker(w)
        for w in sorted(workers.values(), key=lambda w: (KIND_ORDER.get(w.get("kind"), 9), w["name"]))
    ]


@bp.get("/api/system/supervisor")
@endpoint(
    summary="Supervisor status and every supervised worker", tags=["supervisor"], errors={503: "Supervisor not running"}
)
def supervisor_status():
    return _status()


@bp.get("/api/system/supervisor/status")
@endpoint(summary="Alias of GET /api/system/supervisor", tags=["supervisor"], errors={503: "Supervisor not running"})
def supervisor_status_alias():
    return _status()


def _status() -> dict:
    current = supervisor.require_running(current_settings())
    workers = ordered(current.workers)
    beat = current.beat or {}
    return {
        "running": True,
        "worker_count": len(workers),
        "workers": workers,
        "supervisor": {"node": beat.get("node"), "pid": beat.get("pid"), "started_at": iso_utc(beat.get("started_at"))},
        "timestamp": iso_now(),
    }


def _act(action: str, name: str):
    result = supervisor.send_command(
        current_settings(), action, name, actor=actor(), request_id=getattr(g, "request_id", None)
    )
    body = {
        "success": True,
        "message": result.message,
        "worker_name": name,
        "confirmed": result.status == 200,
        "acted_on": result.acted_on or None,
    }
    if result.worker:
        body["worker"] = supervisor.public_worker(result.worker)
    return body, result.status


@bp.post("/api/system/supervisor/workers/<name>/start")
@endpoint(
    summary="Start a stopped or failed worker",
    path=WorkerName,
    tags=["supervisor"],
    errors=ERRORS,
    response=CommandAnswer,
    responses={202: CommandAnswer},
)
def start_worker(name: str):
    return _act("start", name)


@bp.post("/api/system/supervisor/workers/<name>/stop")
@endpoint(
    summary="Stop a running worker (its process under make run; a Celery group stops consuming under compose)",
    path=WorkerName,
    tags=["supervisor"],
    errors=ERRORS,
    response=CommandAnswer,
    responses={202: CommandAnswer},
)
def stop_worker(name: str):
    return _act("stop", name)


@bp.post("/api/system/supervisor/workers/<name>/restart")
@endpoint(
    summary="Restart a worker (its process under make run; a Celery group's pool under compose)",
    path=WorkerName,
    tags=["supervisor"],
    errors=ERRORS,
    response=CommandAnswer,
    responses={202: CommandAnswer},
)
def restart_worker(name: str):
    return _act("restart", name)


@bp.post("/api/system/supervisor/reset/<name>")
@endpoint(
    summary="Reset a worker's restart count (a failed worker is started again)",
    path=WorkerName,
    tags=["supervisor"],
    errors=ERRORS,
    response=CommandAnswer,
    responses={202: CommandAnswer},
)
def reset_worker(name: str):
    body, status = _act("reset", name)
    return body, status


@bp.get("/api/system/supervisor/restart-history")
@endpoint(summary="Restart history, newest first", query=HistoryQuery, tags=["supervisor"])
def restart_history(query: HistoryQuery):
    with session_scope(current_settings()) as session:
        total, items = supervisor.restart_history(session, query.worker_name, query.limit, query.offset)
    return {
        "items": items,
        "pagination": {
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
            "items_count": len(items),
            "has_more": query.offset + len(items) < total,
        },
    }
