"""Controls on the real system behind an agent: pause, resume, restart, scale. Each is audited by the
blueprint and shows in GET /agents/{id} at once.

* pause: the agent's queues get the same persisted pause as POST .../queues/{name}/pause
  (app/jobs/queues.py: workers stop consuming them), plus a record with `reason` and `resume_at`; the
  service host's monitoring service resumes it at `resume_at` with nobody calling (`resume_due`).
  The answer waits at most VIGIL_MONITORING_DRAIN_SECONDS for the agent's running jobs to finish and
  says whether they did (`active_requests_drained`).
* restart: the supervisor's `restart` of the agent's pool (app/ops/supervisor.py): pool processes are
  replaced, busy ones after their job; `force` revokes and terminates the running jobs first (Celery
  re-delivers nothing it terminated: they fail and can be retried). It shows in the restart history.
* scale: the pool's process count through Celery remote control (`vigil_pool_scale`: `pool_grow` or
  `pool_shrink` by the difference to the target, so a repeat does not add up) and
  persisted in app/jobs/pools.py, so a restarted worker keeps it; answered once the heartbeats show it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from app.celery.app import celery
from app.core.errors import Conflict, InvalidInput, Unavailable
from app.core.redis_client import get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs import heartbeats, queues
from app.jobs.pools import set_desired_concurrency
from app.monitoring import agents, webhooks
from app.ops import supervisor


def _active(settings: Settings, spec: agents.AgentSpec) -> int:
    return sum(q["active_jobs"] for q in queues.overview(settings) if q["name"] in spec.queues)


def pause(
    settings: Settings, agent_id: str, reason: str | None, duration_minutes: float | None, actor: str | None
) -> dict[str, Any]:
    spec = agents.require(agent_id)
    live = agents.live_state(settings)
    if agents.is_paused(spec, live):
        raise Conflict(f"Agent '{agent_id}' is already paused", code="agent_already_paused")
    previous, _ = agents.status_of(spec, live, None)
    now = time.time()
    resume_at = now + duration_minutes * 60 if duration_minutes else None
    record = {"paused_at": now, "resume_at": resume_at, "reason": reason, "by": actor}
    get_redis(settings).set(agents.PAUSE_KEY + agent_id, json.dumps(record))
    for queue in spec.queues:
        queues.pause(queue, settings)
    deadline = time.monotonic() + settings.monitoring_drain_seconds
    active = _active(settings, spec)
    while active and time.monotonic() < deadline:
        time.sleep(0.2)
        active = _active(settings, spec)
    webhooks.emit(
        settings,
        "monitoring.agent_status_changed",
        {"agent_id": agent_id, "previous_status": previous, "current_status": "paused", "reason": reason},
    )
    return {
        "agent_id": agent_id,
        "previous_status": previous,
        "current_status": "paused",
        "paused_at": iso_utc(now),
        "resume_at": iso_utc(resume_at),
        "active_requests_drained": active == 0,
        "active_requests": active,
        "reason": reason,
    }


def resume(settings: Settings, agent_id: str, why: str = "resumed by an operator") -> dict[str, Any]:
    spec = agents.require(agent_id)
    live = agents.live_state(settings)
    was_paused = any(q in live.paused_queues for q in spec.queues)
    previous, _ = agents.status_of(spec, live, None)
    notified = 0
    for queue in spec.queues:
        notified += queues.resume(queue, settings).get("notified_workers", 0)
    get_redis(settings).delete(agents.PAUSE_KEY + agent_id)
    current, _ = agents.status_of(spec, agents.live_state(settings), None)
    if was_paused:
        webhooks.emit(
            settings,
            "monitoring.agent_status_changed",
            {"agent_id": agent_id, "previous_status": previous, "current_status": current, "reason": why},
        )
    return {
        "agent_id": agent_id,
        "previous_status": previous,
        "current_status": current,
        "resumed_at": iso_utc(time.time()),
        "was_paused": was_paused,
        "notified_workers": notified,
    }


def resume_due(settings: Settings, now: float | None = None) -> list[str]:
    """Resume every agent whose pause has reached its `resume_at` (the monitoring service's tick)."""
    now = time.time() if now is None else now
    live = agents.live_state(settings)
    done = []
    for agent_id, record in live.pauses.items():
        resume_at = record.get("resume_at")
        if resume_at is not None and float(resume_at) <= now:
            resume(settings, agent_id, "resume_at reached")
            done.append(agent_id)
    return done


def restart(
    settings: Settings,
    agent_id: str,
    reason: str | None,
    force: bool,
    actor: str | None,
    request_id: str | None,
) -> dict[str, Any]:
    spec = agents.require(agent_id)
    previous, _ = agents.status_of(spec, agents.live_state(settings), None)
    terminated: list[str] = []
    if force:
        live = agents.live_state(settings)
        terminated = [jid for b in live.pool(spec) for jid in (b.get("active_ids") or [])]
        if terminated:
            celery.control.revoke(terminated, terminate=True, signal="SIGKILL")
    result = supervisor.send_command(settings, "restart", spec.group, actor=actor, request_id=request_id)
    webhooks.emit(
        settings,
        "monitoring.agent_restarted",
        {"agent_id": agent_id, "reason": reason, "force": force, "confirmed": result.status == 200},
    )
    current, _ = agents.status_of(spec, agents.live_state(settings), None)
    return {
        "agent_id": agent_id,
        "previous_status": previous,
        "current_status": current,
        "restarted_at": iso_utc(time.time()),
        "confirmed": result.status == 200,
        "message": result.message,
        "force": force,
        "terminated_requests": len(terminated),
        "reason": reason,
    }


def scale(settings: Settings, agent_id: str, replicas: int, reason: str | None) -> dict[str, Any]:
    spec = agents.require(agent_id)
    if replicas > settings.monitoring_max_replicas:
        raise InvalidInput(
            f"replicas {replicas} is above the maximum of {settings.monitoring_max_replicas} "
            "(VIGIL_MONITORING_MAX_REPLICAS)",
            code="invalid_replicas",
        )
    client = get_redis(settings)
    live = agents.live_state(settings)
    pool = live.pool(spec)
    if not pool:
        raise Unavailable(f"Agent '{agent_id}' has no live worker of {spec.group} to scale")
    previous = live.concurrency(spec)
    set_desired_concurrency(client, spec.group, replicas)
    celery.control.broadcast(
        "vigil_pool_scale", arguments={"processes": replicas}, destination=[b["node"] for b in pool], reply=False
    )
    deadline = time.monotonic() + settings.monitoring_scale_timeout
    nodes = [b["node"] for b in pool]
    current = previous
    while time.monotonic() < deadline:
        beats = heartbeats.load(client, nodes)
        # a fresh beat of every node, each showing the new count
        if beats and all(int(b.get("concurrency") or 0) == replicas for b in beats):
            current = sum(int(b.get("concurrency") or 0) for b in beats)
            break
        time.sleep(0.2)
    else:
        current = agents.live_state(settings).concurrency(spec)
    confirmed = current == replicas * len(nodes)
    return {
        "agent_id": agent_id,
        "previous_replicas": previous,
        "current_replicas": current,
        "requested_replicas": replicas,
        "workers": len(nodes),
        "confirmed": confirmed,
        "max_replicas": settings.monitoring_max_replicas,
        "reason": reason,
        "scaled_at": iso_utc(time.time()),
    }
