"""The worker supervisor as the API sees it: published state, commands, restart history.

The supervisor itself runs in the service host (`workers/host/supervisor.py`, the Procfile's `watcher`
process). It is the only writer of supervisor state; the API never controls a worker directly:

* state: the supervisor rewrites `vigil:supervisor:workers` (hash: worker name -> JSON) on every
  change and every heartbeat interval, and publishes its own heartbeat `supervisor@<host>`. No
  heartbeat means the supervisor is down, and every supervisor endpoint answers 503.
* commands: the API pushes `{id, action, worker}` on `vigil:supervisor:commands` and waits, at most
  `supervisor_command_timeout` seconds, for the reply the supervisor pushes on
  `vigil:supervisor:reply:<id>` once the effect is observed (a thread running, a pool's heartbeats
  showing its queues dropped). When the wait runs out, the API takes its command back (LREM): if it
  was still queued nothing happened (503); if the supervisor had taken it, it is in progress (202).
* history: crashes, restarts and manual actions go to the `worker_restart_events` table.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput, NotFound, ServiceError, Unavailable
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs import heartbeats

WORKER_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
STATE_KEY = KEY_PREFIX + "supervisor:workers"
COMMANDS_KEY = KEY_PREFIX + "supervisor:commands"
REPLY_KEY = KEY_PREFIX + "supervisor:reply:"
SUPERVISOR_GROUP = "supervisor"
ACTIONS = ("start", "stop", "restart", "reset", "enable", "disable")
COMMAND_MAX_AGE = 300.0  # a command older than this (its API request died) is dropped unanswered
REPLY_TTL = 120


class SupervisorError(ServiceError):
    """The supervisor failed while carrying out a command (its log has the traceback)."""

    status = 500
    code = "supervisor_error"


def valid_worker_name(name: str) -> bool:
    return bool(WORKER_NAME.match(name)) and len(name) <= 64


# ---- state ----------------------------------------------------------------------------------
def supervisor_beat(client: redis.Redis, ttl: float) -> dict[str, Any] | None:
    """The freshest supervisor heartbeat, or None when no supervisor is alive."""
    beats = [b for b in heartbeats.alive(client, ttl) if b.get("group") == SUPERVISOR_GROUP]
    return max(beats, key=lambda b: b.get("ts", 0)) if beats else None


def read_workers(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every supervised worker's last published state, by name."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in client.hgetall(STATE_KEY).items():
        try:
            out[name] = json.loads(raw)
        except ValueError:
            continue
    return out


def public_worker(state: dict[str, Any]) -> dict[str, Any]:
    """A worker in the shape the System Monitoring guide shows, plus what ops need to act on it (kind, nodes,
    enabled)."""
    return {
        "name": state["name"],
        "status": state["status"],
        "restart_count": state.get("restart_count", 0),
        "max_restarts": state.get("max_restarts", 0),
        "last_started_at": iso_utc(state.get("last_started_at")),
        "last_crashed_at": iso_utc(state.get("last_crashed_at")),
        "error": state.get("error"),
        "kind": state.get("kind"),
        "category": state.get("category"),
        "enabled": state.get("enabled", True),
        "controllable": state.get("controllable", True),
        "next_restart_at": iso_utc(state.get("next_restart_at")),
        "nodes": state.get("nodes", []),
        "pid": state.get("pid"),
        "process": state.get("process"),
        "managed_by": state.get("managed_by"),
    }


@dataclass
class SupervisorView:
    beat: dict[str, Any] | None
    workers: dict[str, dict[str, Any]]

    @property
    def running(self) -> bool:
        return self.beat is not None


def view(settings: Settings) -> SupervisorView:
    client = get_redis(settings)
    return SupervisorView(supervisor_beat(client, settings.heartbeat_ttl), read_workers(client))


def require_running(settings: Settings) -> SupervisorView:
    """The supervisor's view, or 503 when no supervisor heartbeat is fresh."""
    current = view(settings)
    if not current.running:
        raise Unavailable(
            "Worker supervisor is not running (no heartbeat from the service host, `python -m workers.host`)",
            extra={"running": False},
        )
    return current


def check_name(name: str) -> None:
    if not valid_worker_name(name):
        raise InvalidInput(
            f"Invalid worker name '{name[:80]}': must match ^[a-zA-Z][a-zA-Z0-9_]*$",
            errors=[{"location": "path", "field": "name", "message": "must match ^[a-zA-Z][a-zA-Z0-9_]*$"}],
        )


# ---- commands -------------------------------------------------------------------------------------
@dataclass
class CommandResult:
    status: int  # 200 done, 202 accepted but not yet confirmed
    message: str
    worker: dict[str, Any] | None
    acted_on: str | None = None  # process | consumers | pool | thread: what the command changed


def send_command(
    settings: Settings,
    action: str,
    name: str,
    *,
    actor: str | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> CommandResult:
    """Ask the supervisor to act on a worker and wait (bounded) for its answer.

    Raises InvalidInput (bad name or the worker cannot do that), NotFound, Unavailable (no
    supervisor, or it did not pick the command up in time).
    """
    if action not in ACTIONS:
        raise InvalidInput(f"Unknown action '{action}'")
    check_name(name)
    current = require_running(settings)
    if name not in current.workers:
        raise NotFound(f"Unknown worker '{name}'; supervised workers: {', '.join(sorted(current.workers))}")
    client = get_redis(settings)
    timeout = settings.supervisor_command_timeout if timeout is None else timeout
    now = time.time()
    command = {
        "id": uuid.uuid4().hex,
        "action": action,
        "worker": name,
        "issued_at": now,
        "deadline": now + timeout,
        "actor": actor,
        "request_id": request_id,
    }
    raw = json.dumps(command, separators=(",", ":"))
    reply_key = REPLY_KEY + command["id"]
    client.lpush(COMMANDS_KEY, raw)
    deadline = now + timeout
    reply = None
    while reply is None:
        left = deadline - time.time()
        if left <= 0:
            break
        # Short blocking pops: the shared client's socket timeout is a few seconds.
        popped = client.brpop([reply_key], timeout=max(0.05, min(1.0, left)))
        if popped:
            reply = json.loads(popped[1])
    if reply is None:
        if client.lrem(COMMANDS_KEY, 1, raw):
            raise Unavailable(
                f"The supervisor did not take the {action} command for '{name}' within {timeout:g}s; nothing was done"
            )
        return CommandResult(
            202,
            f"{action.capitalize()} of worker '{name}' is in progress; the supervisor "
            f"has not confirmed it within {timeout:g}s",
            current.workers.get(name),
        )
    code = int(reply.get("code", 500))
    if code >= 400:
        error = {400: InvalidInput, 404: NotFound, 503: Unavailable}.get(code, SupervisorError)
        raise error(reply.get("message") or f"{action} failed")
    return CommandResult(code, reply.get("message", ""), reply.get("worker"), reply.get("acted_on"))


# ---- restart history ---------------------------------------------------------------------------------
def record_events(session: Session, events: Iterable[dict[str, Any]]) -> int:
    """Insert restart-history rows (dicts with worker_name, timestamp (epoch), attempt, status, ...)."""
    from app.models import WorkerRestartEvent

    rows = [
        WorkerRestartEvent(
            worker_name=e["worker_name"],
            timestamp=datetime.fromtimestamp(e["timestamp"], tz=UTC),
            attempt=int(e.get("attempt", 0)),
            status=e["status"],
            action=e.get("action"),
            error=e.get("error"),
            node=e.get("node"),
        )
        for e in events
    ]
    session.add_all(rows)
    return len(rows)


def restart_history(
    session: Session, worker_name: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """A page of restart events, newest first, with the exact total."""
    from app.models import WorkerRestartEvent as E

    where = [E.worker_name == worker_name] if worker_name else []
    total = session.execute(select(func.count()).select_from(E).where(*where)).scalar_one()
    rows = (
        session.execute(select(E).where(*where).order_by(E.timestamp.desc(), E.id.desc()).limit(limit).offset(offset))
        .scalars()
        .all()
    )
    items = [
        {
            "worker_name": r.worker_name,
            "timestamp": iso_utc(r.timestamp),
            "attempt": r.attempt,
            "status": r.status,
            "error": r.error,
            "action": r.action,
            "node": r.node,
        }
        for r in rows
    ]
    return int(total), items
