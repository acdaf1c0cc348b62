"""Operations on individual jobs and on sets of jobs: inspect, retry, delete.

They act through Celery and the broker, never around them: a retry re-publishes the same task with
the same id through Celery; deleting a waiting job removes that exact message from the broker's
list; deleting a job a worker already holds revokes it (and terminates it if it is running) with
Celery's remote control.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from app.celery.app import celery
from app.celery.broker import Broker
from app.core.db import get_sessionmaker, session_scope
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.redis_client import get_broker_redis
from app.core.settings import Settings, get_settings
from app.jobs.archive import job_from_sql
from app.jobs.queues import require_queue
from app.jobs.registry import INDEX_KEY, JOB_KEY, JobRegistry, get_registry

RESET_HEADER = "vigil_reset_attempts"
BULK_CHUNK = 500


def get_job(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """A job's full record: the live index first, then SQL history."""
    settings = settings or get_settings()
    job = get_registry(settings).get(job_id)
    if job is None:
        with session_scope(settings) as session:
            job = job_from_sql(session, job_id)
    if job is None:
        raise NotFound(f"No job with id '{job_id}'", code="job_not_found")
    return job


def _republish(job: dict[str, Any]) -> None:

    celery.send_task(
        job["task"],
        args=job["args"],
        kwargs=job["kwargs"],
        queue=job["queue"],
        task_id=job["id"],
        headers={RESET_HEADER: 1},
    )


def retry_job(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Re-queue a failed job: same task, arguments, queue and id; attempts start again from 0."""
    job = get_job(job_id, settings)
    if job["state"] != "failed":
        raise Conflict(f"Job '{job_id}' is {job['state']}; only failed jobs can be retried", code="job_not_failed")
    _republish(job)
    return {"job_id": job_id, "status": "queued", "attempts_reset": True, "queue": job["queue"]}


def delete_job(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Remove a job. What that means depends on where it is, and the answer says which:

    * waiting in the broker's list: that exact message is removed (`removed_from_queue`);
    * waiting but already fetched by a worker (prefetched, or scheduled with an ETA): revoked, so
      the worker discards it (`revoked`);
    * running: revoked and its process terminated (`revoked_and_terminated`);
    * finished: only the record goes (`record_removed`).
    The registry record and its SQL history are removed in every case.
    """

    settings = settings or get_settings()
    job = get_job(job_id, settings)
    state = job["state"]
    action = "record_removed"
    if state == "waiting":
        broker = Broker(get_broker_redis(settings))
        found = broker.find(job["queue"], job_id) if job.get("queue") else None
        if found is not None and broker.remove(*found):
            action = "removed_from_queue"
        else:
            celery.control.revoke(job_id, reply=False)
            action = "revoked"
    elif state == "active":
        celery.control.revoke(job_id, terminate=True, signal="SIGTERM", reply=False)
        action = "revoked_and_terminated"
    _forget(get_registry(settings), [job_id], settings)
    return {"job_id": job_id, "deleted": True, "previous_state": state, "action": action}


def _forget(registry: JobRegistry, ids: list[str], settings: Settings) -> None:
    registry.purge(ids, get_sessionmaker(settings))


def retry_failed(queue: str, settings: Settings | None = None) -> dict[str, Any]:
    """Retry every failed job of a queue; returns how many were re-queued."""
    settings = settings or get_settings()
    require_queue(queue)
    registry = get_registry(settings)
    key = f"{INDEX_KEY}{queue}:failed"
    retried = 0
    while True:
        ids = registry.r.zrange(key, 0, BULK_CHUNK - 1)
        if not ids:
            break
        for job in registry.get_many(ids):
            if job["state"] == "failed":
                _republish(job)  # moves it out of the failed index
                retried += 1
            else:
                registry.r.zrem(key, job["id"])
    return {"queue": queue, "retried": retried}


def delete_matching(
    queue: str,
    state: str,
    *,
    task: str | None = None,
    older_than: float | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Delete a queue's jobs in `state`, optionally only of one task and older than a time (when
    they were created for waiting jobs, when they finished otherwise)."""
    settings = settings or get_settings()
    require_queue(queue)
    if state == "active":
        raise InvalidInput(
            "Running jobs are deleted one at a time (DELETE /jobs/{id} terminates them)",
            errors=[{"location": "query", "field": "status", "message": "active not allowed"}],
        )
    registry = get_registry(settings)
    if state == "waiting":
        deleted = _delete_waiting(queue, task, older_than, registry, settings)
    else:
        deleted = _delete_indexed(queue, state, task, older_than, registry, settings)
    return {"queue": queue, "status": state, "deleted": deleted}


def _delete_waiting(
    queue: str, task: str | None, older_than: float | None, registry: JobRegistry, settings: Settings
) -> int:
    broker = Broker(get_broker_redis(settings))
    matches = [(key, msg) for key, msg in broker.scan(queue) if task is None or msg.task == task]
    if older_than is not None and matches:
        created = _created_at(registry, [m.id for _, m in matches])
        matches = [(k, m) for k, m in matches if created.get(m.id) is not None and created[m.id] < older_than]
    removed: list[str] = []
    for key, msg in matches:
        if broker.remove(key, msg):
            removed.append(msg.id)
    _forget(registry, removed, settings)
    return len(removed)


def _created_at(registry: JobRegistry, ids: list[str]) -> dict[str, float | None]:

    out: dict[str, float | None] = {}
    for start in range(0, len(ids), BULK_CHUNK):
        chunk = ids[start : start + BULK_CHUNK]
        with registry.r.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.hget(JOB_KEY + job_id, "created_at")
            for job_id, value in zip(chunk, pipe.execute()):
                out[job_id] = float(value) if value else None
    return out


def _delete_indexed(
    queue: str, state: str, task: str | None, older_than: float | None, registry: JobRegistry, settings: Settings
) -> int:
    key = f"{INDEX_KEY}{queue}:{state}"
    ceiling: Any = older_than if older_than is not None else "+inf"
    deleted = 0
    cursor = 0
    while True:
        ids = registry.r.zrangebyscore(key, "-inf", ceiling, start=cursor, num=BULK_CHUNK)
        if not ids:
            return deleted
        if task is not None:
            keep = [j["id"] for j in registry.get_many(ids) if j["task"] == task]
            cursor += len(ids) - len(keep)  # non-matching ones stay in the index
            ids = keep
        _forget(registry, ids, settings)
        deleted += len(ids)


def parse_age(value: str | None, now: float | None = None) -> float | None:
    """`older_than`: an ISO 8601 time, or an age such as `90s`, `15m`, `24h`, `7d`; as epoch seconds."""
    if value in (None, ""):
        return None
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("use an ISO 8601 time or an age like 90s, 15m, 24h, 7d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
