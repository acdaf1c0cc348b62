"""Queue state for the operations API: counts, listings, pause and resume.

Pausing is persisted in Redis *and* broadcast with Celery's `cancel_consumer`; workers re-apply
the persisted state when they start and on every heartbeat (`workers/hooks/bootsteps.py`), so a worker that
starts later, or missed the broadcast, converges on it. Resuming broadcasts `add_consumer` only to
the workers whose `-Q` included the queue, so no worker starts consuming a queue it never had.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from app.celery.app import celery
from app.celery.broker import Broker
from app.celery.queues import QUEUE_NAMES, QUEUES, QUEUES_BY_NAME
from app.core.errors import NotFound
from app.core.redis_client import KEY_PREFIX, get_broker_redis, get_redis
from app.core.settings import Settings, get_settings
from app.core.time import iso_now
from app.jobs import heartbeats
from app.jobs.registry import INDEX_KEY, JOB_KEY, get_registry
from app.live import bus as live

PAUSED_KEY = KEY_PREFIX + "queues:paused"  # set of queue names
STOPPED_GROUPS_KEY = KEY_PREFIX + "workers:stopped"  # set of worker group names

WARNING_WAITING = 100
CRITICAL_WAITING = 1000
CRITICAL_FAILURES = 10


def stopped_groups(client: redis.Redis) -> set[str]:
    return set(client.smembers(STOPPED_GROUPS_KEY))


def desired_queues(client: redis.Redis, group: str, assigned: list[str]) -> list[str]:
    """The queues a worker of `group`, started with `assigned`, should consume right now."""
    with client.pipeline(transaction=False) as pipe:
        pipe.smembers(PAUSED_KEY)
        pipe.sismember(STOPPED_GROUPS_KEY, group)
        paused, stopped = pipe.execute()
    if stopped:
        return []
    return [q for q in assigned if q not in paused]


def require_queue(name: str) -> None:
    if name not in QUEUES_BY_NAME:
        raise NotFound(f"Unknown queue '{name}'; queues are: {', '.join(QUEUE_NAMES)}", code="queue_not_found")


def queue_status(waiting: int, failed: int, consumers: int | None = None) -> str:
    """The platform API's thresholds: healthy < 100 waiting; warning 100-1000; critical > 1000 or > 10 failures.
    Jobs waiting with no consumer (paused, stopped or no worker at all) are at least a warning:
    they will not run until someone acts."""
    if waiting > CRITICAL_WAITING or failed > CRITICAL_FAILURES:
        return "critical"
    if waiting >= WARNING_WAITING or (consumers == 0 and waiting > 0):
        return "warning"
    return "healthy"


def overview(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every named queue with its counts, in three Redis round trips and no worker broadcast.

    waiting: the broker's own lists (every priority level); active: registry jobs held by a worker
    whose heartbeat is alive (jobs of a dead worker are counted as `orphaned` until re-run);
    completed_last_hour and failed: the registry's indexes; consumers: live heartbeats of groups
    not stopped.
    """
    settings = settings or get_settings()
    client = get_redis(settings)
    now = time.time()
    waiting = Broker(get_broker_redis(settings)).waiting_counts(list(QUEUE_NAMES))
    with client.pipeline(transaction=False) as pipe:
        for q in QUEUE_NAMES:
            pipe.zrange(f"{INDEX_KEY}{q}:active", 0, -1)
            pipe.zcount(f"{INDEX_KEY}{q}:completed", now - 3600, "+inf")
            pipe.zcard(f"{INDEX_KEY}{q}:failed")
        pipe.smembers(PAUSED_KEY)
        pipe.smembers(STOPPED_GROUPS_KEY)
        pipe.zrangebyscore(heartbeats.HB_INDEX, now - settings.heartbeat_ttl, "+inf")
        *per_queue, paused, stopped, live_nodes = pipe.execute()
    beats = heartbeats.load(client, live_nodes)
    active_ids = [jid for i in range(len(QUEUE_NAMES)) for jid in per_queue[3 * i]]
    holders: dict[str, str | None] = {}
    if active_ids:
        with client.pipeline(transaction=False) as pipe:
            for jid in active_ids:
                pipe.hget(JOB_KEY + jid, "worker")
            holders = dict(zip(active_ids, pipe.execute()))
    alive = {b["node"] for b in beats}
    out = []
    for i, spec in enumerate(QUEUES):
        active_list, completed, failed = per_queue[3 * i : 3 * i + 3]
        live = sum(1 for jid in active_list if holders.get(jid) in alive)
        # A stopped group's workers still beat until their next tick drops the queue: not consumers.
        consumers = sorted(
            b["node"] for b in beats if spec.name in (b.get("queues") or []) and b.get("group") not in stopped
        )
        out.append(
            {
                "name": spec.name,
                "priority": spec.priority,
                "active_jobs": live,
                "waiting_jobs": waiting[spec.name],
                "completed_last_hour": int(completed),
                "failed_jobs": int(failed),
                "status": queue_status(waiting[spec.name], int(failed), len(consumers)),
                "paused": spec.name in paused,
                "consumers": len(consumers),
                "consumer_nodes": consumers,
                "orphaned_active_jobs": len(active_list) - live,
            }
        )
    return out


def list_jobs(
    queue: str, state: str, offset: int, limit: int, settings: Settings | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """One page of a queue's jobs in `state`, with the exact total.

    Waiting jobs come from the broker's lists in the order they will run, enriched with their
    registry records; the other states from the registry (active oldest first, finished newest
    first).
    """
    settings = settings or get_settings()
    require_queue(queue)
    registry = get_registry(settings)
    if state == "waiting":
        total, messages = Broker(get_broker_redis(settings)).page(queue, offset, limit)
        records = {r["id"]: r for r in registry.get_many([m.id for m in messages])}
        jobs = []
        for m in messages:
            record = records.get(m.id) or {}
            job = {**_empty_record(m.id), **record}
            job.update(
                {
                    "task": m.task,
                    "queue": queue,
                    "state": "waiting",
                    "args": m.args,
                    "kwargs": m.kwargs,
                    "priority": m.priority,
                    "eta": m.eta,
                }
            )
            jobs.append(job)
        return total, jobs
    return registry.list(queue, state, offset=offset, limit=limit, newest_first=state != "active")


def _empty_record(job_id: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "attempts": 0,
        "worker": None,
        "error": None,
        "traceback": None,
        "result": None,
        "progress": None,
        "created_at": None,
        "started_at": None,
        "finished_at": None,
        "updated_at": None,
    }


def _now_iso() -> str:
    return iso_now()


def pause(queue: str, settings: Settings | None = None) -> dict[str, Any]:

    settings = settings or get_settings()
    require_queue(queue)
    get_redis(settings).sadd(PAUSED_KEY, queue)
    celery.control.cancel_consumer(queue, reply=False)
    live.publish_quietly("queue.paused", {"queue": queue, "status": "paused"}, settings)
    return {"queue": queue, "status": "paused", "timestamp": _now_iso()}


def resume(queue: str, settings: Settings | None = None) -> dict[str, Any]:

    settings = settings or get_settings()
    require_queue(queue)
    client = get_redis(settings)
    client.srem(PAUSED_KEY, queue)
    stopped = stopped_groups(client)
    targets = [
        b["node"]
        for b in heartbeats.alive(client, settings.heartbeat_ttl)
        if queue in (b.get("assigned_queues") or []) and b.get("group") not in stopped
    ]
    if targets:
        celery.control.add_consumer(queue, destination=targets, reply=False)
    live.publish_quietly("queue.resumed", {"queue": queue, "status": "active"}, settings)
    return {"queue": queue, "status": "active", "timestamp": _now_iso(), "notified_workers": len(targets)}
