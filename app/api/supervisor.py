"""Worker supervisor (System Monitoring guide): status, start/stop/restart/reset, restart history.

Handlers only read what the supervisor publishes and hand commands to it
(app/ops/supervisor.py); the supervisor itself runs in the service host.
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.auth import actor
from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import audited
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


NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_]{0,63}$"  # app/ops/supervisor.py valid_worker_name, as a schema says it


class WorkerName(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Worker name: a letter, then letters, digits or `_` (1-64)")


ActedOn = Literal["process", "consumers", "pool", "thread"]
ACTED_ON = (
    "What the command changed: `process` (supervisord stopped or started the real process, `make run`), "
    "`consumers` (a Celery group stopped or resumed consuming; its process stays up, compose), `pool` (a "
    "Celery group's pool processes replaced, compose), `thread` (an in-process service of the service "
    "host); null when nothing had to change"
)


class WorkerOut(Answer):
    """A supervised worker as the supervisor publishes it (app/ops/supervisor.py `public_worker`)."""

    name: str
    status: str = Field(description="`running`, `stopped`, `crashed`, `restarting` or `failed`")
    restart_count: int = Field(description="Automatic restarts in a row (reset by a stable run or a reset)")
    max_restarts: int
    last_started_at: str | None
    last_crashed_at: str | None
    error: str | None = Field(description="Why it last crashed or failed")
    kind: str | None = Field(
        description="`service` (a thread of the service host), `celery` (a worker group), `beat` or `process`"
    )
    category: str | None = Field(description="`infrastructure`, `ai` or `monitoring`")
    enabled: bool = Field(description="false: a crash is not restarted automatically")
    controllable: bool = Field(description="false: its process manager, not Vigil, starts and stops it")
    next_restart_at: str | None = Field(description="When the backoff ends, while `crashed`")
    nodes: list[str] = Field(description="Celery node names of a worker group (from their heartbeats)")
    pid: int | None
    process: str | None = Field(description="The supervisord program under `make run`")
    managed_by: str | None = Field(description="`supervisord` under `make run`; null when Vigil owns no process")


class CommandAnswer(Answer):
    success: bool
    message: str
    worker_name: str
    confirmed: bool = Field(
        description="True (200) once the supervisor observed the effect; false (202) when it "
        "accepted the command and the effect is still under way"
    )
    acted_on: ActedOn | None = Field(None, description=ACTED_ON)
    worker: WorkerOut | None = Field(None, description="The worker as GET /api/system/supervisor lists it")


class SupervisorInfo(Answer):
    node: str | None = Field(description="The service host's node name")
    pid: int | None
    started_at: str | None


class SupervisorStatus(Answer):
    running: bool
    worker_count: int
    workers: list[WorkerOut] = Field(description="Services first, then Celery groups, beat and processes")
    supervisor: SupervisorInfo
    timestamp: str


class RestartEvent(Answer):
    worker_name: str
    timestamp: str | None
    attempt: int = Field(description="The restart's number in a row (0 for a crash)")
    status: str = Field(description="`success`, `crashed`, `failed` or `manual`")
    error: str | None
    action: str | None = Field(description="For `manual`: start, stop, restart, reset, enable or disable")
    node: str | None


class HistoryPagination(Answer):
    total: int
    limit: int
    offset: int
    items_count: int
    has_more: bool


class RestartHistory(Answer):
    items: list[RestartEvent]
    pagination: HistoryPagination


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_name: str | None = Field(None, pattern=NAME_PATTERN, description="Only this worker's events")
    limit: int = Field(50, ge=1, le=100, description="Events per page (1-100)")
    offset: int = Field(0, ge=0, le=2**62, description="Events to skip")


def ordered(workers: dict) -> list[dict]:
    return [
        supervisor.public_worker(w)
        for w in sorted(workers.values(), key=lambda w: (KIND_ORDER.get(w.get("kind"), 9), w["name"]))
    ]


@bp.get("/api/system/supervisor")
@endpoint(
    summary="Supervisor status and every supervised worker",
    tags=["supervisor"],
    response=SupervisorStatus,
    errors={503: "Supervisor not running"},
)
def supervisor_status():
    return _status()


@bp.get("/api/system/supervisor/status")
@endpoint(
    summary="Alias of GET /api/system/supervisor",
    tags=["supervisor"],
    response=SupervisorStatus,
    errors={503: "Supervisor not running"},
)
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


def command(action: str, name: str) -> supervisor.CommandResult:
    """Hand `action` on worker `name` to the supervisor and audit it (both the supervisor and the services
    families act through here): the audit row says who asked, and what the supervisor answered."""
    result = supervisor.send_command(
        current_settings(), action, name, actor=actor(), request_id=getattr(g, "request_id", None)
    )
    audited(
        f"worker_{action}",
        "worker",
        name,
        {"confirmed": result.status == 200, "acted_on": result.acted_on or None, "message": result.message},
    )
    return result


def _act(action: str, name: str):
    result = command(action, name)
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


ACTIONS = {  # action: (path, summary)
    "start": ("/api/system/supervisor/workers/<name>/start", "Start a stopped or failed worker"),
    "stop": (
        "/api/system/supervisor/workers/<name>/stop",
        "Stop a running worker (its process under make run; a Celery group stops consuming under compose)",
    ),
    "restart": (
        "/api/system/supervisor/workers/<name>/restart",
        "Restart a worker (its process under make run; a Celery group's pool under compose)",
    ),
    "reset": (
        "/api/system/supervisor/reset/<name>",
        "Reset a worker's restart count (a failed worker is started again)",
    ),
}


def _route(action: str, rule: str, summary: str) -> None:
    def view(name: str):
        return _act(action, name)

    view.__name__ = view.__qualname__ = f"{action}_worker"
    declared = endpoint(
        summary=summary,
        path=WorkerName,
        tags=["supervisor"],
        errors=ERRORS,
        response=CommandAnswer,
        responses={202: CommandAnswer},
    )(view)
    bp.add_url_rule(rule, view_func=declared, methods=["POST"])


for _action, (_rule, _summary) in ACTIONS.items():
    _route(_action, _rule, _summary)


@bp.get("/api/system/supervisor/restart-history")
@endpoint(summary="Restart history, newest first", query=HistoryQuery, tags=["supervisor"], response=RestartHistory)
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
