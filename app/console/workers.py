"""Workers: the supervisor's workers with their status, restarts and history; start, stop, restart and reset.
Commands go to the supervisor in the service host through `app.ops.supervisor.send_command`, with the user as the
command's actor (the supervisor logs it), as the API's supervisor endpoints do; the console also writes an audit
entry for each command the supervisor carried out or accepted, so every console action is in the audit trail."""

from __future__ import annotations

from flask import Blueprint, Response, g, render_template

from app.api.kit.current import current_settings
from app.console.auth import audited, require_operator
from app.console.web import back, failed, ok
from app.core.db import session_scope
from app.core.errors import ServiceError
from app.ops import supervisor

bp = Blueprint("workers", __name__)

KIND_ORDER = {"service": 0, "celery": 1, "beat": 2, "process": 3}
AUDIT_ACTIONS = {
    "start": "worker_started",
    "stop": "worker_stopped",
    "restart": "worker_restarted",
    "reset": "worker_reset",
}
HISTORY = 20


def actions_for(worker: dict) -> list[str]:
    """The commands that make sense for a worker in its state (the supervisor refuses the others anyway)."""
    if not worker.get("controllable", True):
        return []
    running = worker["status"] in ("running", "restarting")
    out = ["stop", "restart"] if running else ["start"]
    if worker.get("restart_count") or worker["status"] == "failed":
        out.append("reset")
    return out


@bp.get("/workers")
def index() -> str:
    settings = current_settings()
    current = supervisor.view(settings)
    workers = [
        supervisor.public_worker(w)
        for w in sorted(current.workers.values(), key=lambda w: (KIND_ORDER.get(w.get("kind"), 9), w["name"]))
    ]
    with session_scope(settings) as session:
        total, history = supervisor.restart_history(session, None, HISTORY, 0)
    return render_template(
        "console/workers.html",
        running=current.running,
        beat=current.beat or {},
        workers=[dict(w, actions=actions_for(w)) for w in workers],
        history=history,
        history_total=total,
    )


@bp.post("/workers/<name>/<any(start, stop, restart, reset):action>")
def act(name: str, action: str) -> Response:
    current = require_operator()
    try:
        result = supervisor.send_command(
            current_settings(), action, name, actor=current.actor, request_id=getattr(g, "request_id", None)
        )
    except ServiceError as err:
        failed(err.message)
    else:
        audited(AUDIT_ACTIONS[action], "worker", name, {"confirmed": result.status == 200, "acted_on": result.acted_on})
        ok(result.message or f"{action.capitalize()} of {name} done.")
    return back("workers.index")
