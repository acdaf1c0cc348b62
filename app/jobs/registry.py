"""The job registry: a durable record of every Celery job, listable by queue and state.

Celery itself only knows a job while a worker holds it (and Flower only remembers what it saw since
it started). Vigil records every job from Celery's signals:

    publish  -> waiting      (before_task_publish, in whichever process sends the task)
    prerun   -> active       (attempts + 1, worker name, started_at)
    success  -> completed    (result, finished_at)
    failure  -> failed       (error message and traceback)
    retry    -> waiting again when Celery re-publishes it; the retry reason is kept
    revoked  -> revoked

Storage (see docs/architecture.md, "Job registry"):

* Redis, next to the broker, is the live index: a hash per job and one sorted set per
  (queue, state) scored by the time the job entered that state. Each transition is one Lua call, so
  a task pays two round trips (start, finish) and listings are O(log n) with exact totals.
  Redis runs with AOF, so the registry is exactly as durable as the broker messages it describes.
* SQL (`jobs` table) is the history: finished jobs are queued on `vigil:jobs:archive` by the same
  Lua call and flushed in batches by the service host's registry archiver
  (`workers/host/services/registry_archiver.py`), never on a task's hot path. Finished jobs leave
  the Redis index after their retention; `get` falls back to SQL.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import delete

from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.time import iso_utc
from app.jobs.archive import upsert_jobs
from app.live import bus as live
from app.models import AuditLog, Job

log = logging.getLogger(__name__)

STATES = ("waiting", "active", "completed", "failed", "revoked")
TERMINAL = frozenset({"completed", "failed", "revoked"})
MAX_RESULT_BYTES = 64 * 1024
MAX_TRACEBACK_BYTES = 64 * 1024

JOB_KEY = KEY_PREFIX + "job:"
INDEX_KEY = KEY_PREFIX + "jobs:"  # + "{queue}:{state}"
DELETED_SUFFIX = ":deleted"  # JOB_KEY + id + this: the job was deleted (see JobRegistry.forget)
DELETED_TTL = 3600
ARCHIVE_KEY = KEY_PREFIX + "jobs:archive"
ARCHIVE_LOCK = KEY_PREFIX + "lock:archive"
# Audit entries written in Redis in the same script as the job they record (app/jobs/enqueue.py),
# so an enqueue pays no SQL; flushed into `audit_log` with the job archive.
AUDIT_KEY = KEY_PREFIX + "audit:pending"

# KEYS[1] job hash, KEYS[2] archive list. ARGV: index prefix, now, job id, then one or more
# groups: event, n, field1, value1, ... fieldn, valuen. The events apply in order, atomically, so
# a worker can write a job's start and its outcome in one call; a field `at` dates its event (else
# the call's time). Returns the final state, or false when no event applied (revoking a finished
# job; an outcome for a deleted job).
# The script is built from two parts: `LUA_APPLY` (the header and the `apply` function) is shared
# with the enqueue script in app/jobs/enqueue.py, which records a publish with the same code.
LUA_APPLY = """
local h, archive = KEYS[1], KEYS[2]
local prefix, now, id = ARGV[1], ARGV[2], ARGV[3]
local function apply(event, first, last)
  local t = now  -- or the event's own `at`: a quick job's start is written with its outcome
  local cur = redis.call('HGET', h, 'state')
  local old_queue = redis.call('HGET', h, 'queue')
  local new
  -- Only a publish or a start creates a record: an outcome for a job whose record was deleted
  -- (DELETE /jobs/{id} while it ran) must not bring it back.
  if not cur and event ~= 'publish' and event ~= 'start' then return false end
  -- Nor a start written late (with its outcome) for a job deleted meanwhile: `forget` leaves a marker.
  if not cur and event == 'start' and redis.call('EXISTS', h .. ':deleted') == 1 then return false end
  if event == 'publish' then new = 'waiting'
  elseif event == 'start' then new = 'active'
  elseif event == 'success' then new = 'completed'
  elseif event == 'failure' then new = 'failed'
  elseif event == 'revoke' then
    if cur == 'completed' or cur == 'failed' or cur == 'revoked' then return false end
    new = 'revoked'
  elseif event == 'note' then new = cur
  end
  for i = first, last, 2 do
    local f, v = ARGV[i], ARGV[i + 1]
    if f == 'at' then
      t = v
    elseif f == 'reset_attempts' then
      redis.call('HSET', h, 'attempts', 0)
      redis.call('HDEL', h, 'error', 'traceback', 'result', 'finished_at', 'started_at', 'worker', 'progress')
    elseif (f == 'task' or f == 'args' or f == 'kwargs') and cur and event ~= 'publish' then
      -- a worker's view of these never overrides what the publisher recorded
    else
      redis.call('HSET', h, f, v)
    end
  end
  if not cur then
    redis.call('HSET', h, 'id', id, 'created_at', t)
    redis.call('HSETNX', h, 'attempts', 0)
  end
  if event == 'start' then
    redis.call('HINCRBY', h, 'attempts', 1)
    redis.call('HSET', h, 'started_at', t)
    redis.call('HDEL', h, 'finished_at')
  elseif event == 'publish' then
    redis.call('HDEL', h, 'finished_at')
  elseif new ~= cur and (new == 'completed' or new == 'failed' or new == 'revoked') then
    redis.call('HSET', h, 'finished_at', t)
    redis.call('RPUSH', archive, id)
  end
  redis.call('HSET', h, 'state', new, 'updated_at', t)
  local queue = redis.call('HGET', h, 'queue') or ''
  if cur and old_queue and (cur ~= new or old_queue ~= queue) then
    redis.call('ZREM', prefix .. old_queue .. ':' .. cur, id)
  end
  if new ~= cur or old_queue ~= queue or event == 'publish' or event == 'start' then
    redis.call('ZADD', prefix .. queue .. ':' .. new, t, id)
  end
  return new
end
"""
_TRANSITION = (
    LUA_APPLY
    + """
local result = false
local i = 4
while i <= #ARGV do
  local event, n = ARGV[i], tonumber(ARGV[i + 1])
  local state = apply(event, i + 2, i + 1 + 2 * n)
  if state then result = state end
  i = i + 2 + 2 * n
end
return result
"""
)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _now() -> float:
    return time.time()


def _dump(value: Any, limit: int) -> str:
    text = json.dumps(value, default=repr, separators=(",", ":"))
    if len(text) > limit:
        text = json.dumps({"truncated": True, "preview": text[: limit - 100]})
    return text


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 20] + "\n...[truncated]"


class JobRegistry:
    """Reads and writes the registry; one instance per Redis client is enough."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self._transition = client.register_script(_TRANSITION)
        self._release = client.register_script(_RELEASE)

    # ---- writes (called from Celery signals and the operations services) ------------------
    def _apply(self, job_id: str, event: str, fields: dict[str, Any], *, pipe=None) -> str | None:
        return self.apply_many(job_id, [(event, fields)], pipe=pipe)

    def apply_many(self, job_id: str, events: list[tuple[str, dict[str, Any]]], *, pipe=None) -> str | None:
        """Apply several transitions of one job atomically, in one round trip."""
        argv: list[Any] = [INDEX_KEY, repr(_now()), job_id]
        for event, fields in events:
            pairs = [(k, v) for k, v in fields.items() if v is not None]
            argv.extend((event, len(pairs)))
            for key, value in pairs:
                argv.extend((key, value))
        result = self._transition(keys=[JOB_KEY + job_id, ARCHIVE_KEY], args=argv, client=pipe)
        return result if pipe is None else None

    @staticmethod
    def start_fields(
        worker: str | None,
        task: str | None = None,
        queue: str | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # Dated here: the write may wait for the outcome (app/jobs/signals.py holds quick starts back).
        fields: dict[str, Any] = {"worker": worker, "task": task, "queue": queue or None, "at": repr(_now())}
        if args is not None:
            fields["args"] = _dump(list(args), MAX_RESULT_BYTES)
        if kwargs is not None:
            fields["kwargs"] = _dump(kwargs, MAX_RESULT_BYTES)
        return fields

    @staticmethod
    def success_fields(result: Any) -> dict[str, Any]:
        return {"result": _dump(result, MAX_RESULT_BYTES), "at": repr(_now())}

    @staticmethod
    def failure_fields(error: str, traceback: str | None) -> dict[str, Any]:
        return {"error": _clip(error, 4096), "traceback": _clip(traceback, MAX_TRACEBACK_BYTES), "at": repr(_now())}

    @staticmethod
    def publish_fields(
        *,
        task: str,
        queue: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        eta: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        reset_attempts: bool = False,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "task": task,
            "queue": queue,
            "args": _dump(list(args), MAX_RESULT_BYTES),
            "kwargs": _dump(kwargs or {}, MAX_RESULT_BYTES),
            "eta": eta,
            "request_id": request_id,
            "idempotency_key": idempotency_key,
        }
        if reset_attempts:
            fields["reset_attempts"] = 1
        return fields

    def record_published(
        self,
        job_id: str,
        *,
        task: str,
        queue: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        eta: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        reset_attempts: bool = False,
        pipe=None,
    ) -> None:
        self._apply(
            job_id,
            "publish",
            self.publish_fields(
                task=task,
                queue=queue,
                args=args,
                kwargs=kwargs,
                eta=eta,
                request_id=request_id,
                idempotency_key=idempotency_key,
                reset_attempts=reset_attempts,
            ),
            pipe=pipe,
        )

    def record_started(
        self,
        job_id: str,
        *,
        worker: str | None,
        task: str | None = None,
        queue: str | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._apply(job_id, "start", self.start_fields(worker, task, queue, args, kwargs))

    def record_succeeded(self, job_id: str, result: Any) -> None:
        self._apply(job_id, "success", self.success_fields(result))

    def record_failed(self, job_id: str, error: str, traceback: str | None) -> None:
        self._apply(job_id, "failure", self.failure_fields(error, traceback))

    def record_retry(self, job_id: str, reason: str) -> None:
        # State is set by the re-publish that Celery's retry performs; only the reason is noted.
        self._apply(job_id, "note", {"error": _clip(reason, 4096)})

    def record_revoked(self, job_id: str, reason: str) -> str | None:
        return self._apply(job_id, "revoke", {"error": _clip(reason, 4096)})

    def record_requeued(self, job_id: str, reason: str) -> None:
        """The broker handed the job back (its worker died): waiting again, with the reason."""
        self._apply(job_id, "publish", {"error": _clip(reason, 4096)})

    def record_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._apply(job_id, "note", {"progress": _dump(progress, 8192)})
        record = self.get(job_id) or {}
        live.publish_quietly(
            "job.progress",
            {"job_id": job_id, "task": record.get("task"), "queue": record.get("queue"), "progress": progress},
        )

    def forget(self, job_id: str) -> bool:
        """Remove a job's record from the live index (not from SQL history). A marker stays for
        DELETED_TTL seconds: a worker still running the job writes its start with its outcome, and
        that late start must not bring the record back (GET would answer 200 after the DELETE)."""
        data = self.r.hmget(JOB_KEY + job_id, "queue", "state")
        if data[0] is None and data[1] is None:
            return False
        with self.r.pipeline() as pipe:
            if data[0] and data[1]:
                pipe.zrem(f"{INDEX_KEY}{data[0]}:{data[1]}", job_id)
            pipe.delete(JOB_KEY + job_id)
            pipe.set(JOB_KEY + job_id + DELETED_SUFFIX, 1, ex=DELETED_TTL)
            pipe.execute()
        return True

    # ---- reads ------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(JOB_KEY + job_id)
        return self._decode(job_id, raw) if raw else None

    def count(self, queue: str, state: str) -> int:
        return int(self.r.zcard(f"{INDEX_KEY}{queue}:{state}"))

    def count_since(self, queue: str, state: str, since: float) -> int:
        return int(self.r.zcount(f"{INDEX_KEY}{queue}:{state}", since, "+inf"))

    def list(
        self, queue: str, state: str, *, offset: int = 0, limit: int = 50, newest_first: bool = True
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of a (queue, state) index with its exact total."""
        key = f"{INDEX_KEY}{queue}:{state}"
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            if newest_first:
                pipe.zrevrange(key, offset, offset + limit - 1)
            else:
                pipe.zrange(key, offset, offset + limit - 1)
            total, ids = pipe.execute()
        return int(total), self.get_many(ids)

    def get_many(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(JOB_KEY + job_id)
            rows = pipe.execute()
        return [self._decode(job_id, raw) for job_id, raw in zip(ids, rows) if raw]

    @staticmethod
    def _decode(job_id: str, raw: dict[str, str]) -> dict[str, Any]:
        def loads(name: str, default: Any) -> Any:
            value = raw.get(name)
            if value in (None, ""):
                return default
            try:
                return json.loads(value)
            except ValueError:
                return value

        return {
            "id": job_id,
            "task": raw.get("task"),
            "queue": raw.get("queue"),
            "state": raw.get("state"),
            "args": loads("args", []),
            "kwargs": loads("kwargs", {}),
            "attempts": int(raw.get("attempts") or 0),
            "worker": raw.get("worker"),
            "error": raw.get("error"),
            "traceback": raw.get("traceback"),
            "result": loads("result", None),
            "progress": loads("progress", None),
            "eta": raw.get("eta"),
            "request_id": raw.get("request_id"),
            "idempotency_key": raw.get("idempotency_key"),
            "created_at": iso_utc(raw.get("created_at")),
            "started_at": iso_utc(raw.get("started_at")),
            "finished_at": iso_utc(raw.get("finished_at")),
            "updated_at": iso_utc(raw.get("updated_at")),
        }

    # ---- archive: Redis -> SQL ----------------------------------------------------------------
    def archive_backlog(self) -> int:
        return int(self.r.llen(ARCHIVE_KEY))

    @contextmanager
    def _archive_lock(self, wait: float = 0.0) -> Iterator[bool]:
        """The lock that orders archiving against purging: a flush that read a job before it was
        deleted must not write it back to SQL after the delete. Yields whether it was acquired."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        acquired = bool(self.r.set(ARCHIVE_LOCK, token, nx=True, px=30_000))
        while not acquired and time.monotonic() < deadline:
            time.sleep(0.01)
            acquired = bool(self.r.set(ARCHIVE_LOCK, token, nx=True, px=30_000))
        try:
            yield acquired
        finally:
            if acquired:
                self._release(keys=[ARCHIVE_LOCK], args=[token])

    def flush_archive(self, session_factory, batch: int = 500, on_batch=None) -> int:
        """Copy finished jobs queued for archiving into the SQL `jobs` table; returns rows written.

        One flusher at a time; the list is trimmed only after the SQL commit, so a crash in between
        re-writes the same rows, which the upsert makes harmless. `on_batch(session, jobs)` runs in the
        same transaction just before each upsert (the monitoring rollups count finished jobs there).
        """
        written = 0
        with self._archive_lock() as acquired:
            if not acquired:
                return 0
            while True:
                ids = self.r.lrange(ARCHIVE_KEY, 0, batch - 1)
                if not ids:
                    break
                jobs = self.get_many(list(dict.fromkeys(ids)))
                if jobs:
                    with session_factory() as session:
                        if on_batch is not None:
                            on_batch(session, jobs)
                        upsert_jobs(session, jobs)
                        session.commit()
                self.r.ltrim(ARCHIVE_KEY, len(ids), -1)
                written += len(jobs)
                if len(ids) < batch:
                    break
            self._flush_audit(session_factory, batch)
        return written

    def audit_backlog(self) -> int:
        return int(self.r.llen(AUDIT_KEY))

    def _flush_audit(self, session_factory, batch: int) -> int:
        """Audit entries queued by enqueues into `audit_log`; like the jobs, trimmed only after the
        commit (a crash in between writes an entry twice, never loses one)."""
        written = 0
        while True:
            raw = self.r.lrange(AUDIT_KEY, 0, batch - 1)
            if not raw:
                return written
            rows = []
            for text in raw:
                try:
                    entry = json.loads(text)
                    rows.append(
                        AuditLog(
                            timestamp=datetime.fromtimestamp(float(entry["at"]), UTC),
                            action=str(entry["action"]),
                            resource_type=str(entry["resource_type"]),
                            resource_id=entry.get("resource_id"),
                            actor=entry.get("actor"),
                            details=entry.get("details"),
                            ip_address=entry.get("ip_address"),
                            request_id=entry.get("request_id"),
                        )
                    )
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable audit entry dropped: %.200s", text)
            if rows:
                with session_factory() as session:
                    session.add_all(rows)
                    session.commit()
            self.r.ltrim(AUDIT_KEY, len(raw), -1)
            written += len(rows)
            if len(raw) < batch:
                return written

    def purge(self, ids: list[str], session_factory) -> None:
        """Delete jobs for good: live index and SQL history, ordered against the archiver."""
        if not ids:
            return
        with self._archive_lock(wait=10.0) as acquired:
            if not acquired:
                raise RuntimeError("job archive lock is held; try again")
            for job_id in ids:
                self.forget(job_id)

            with session_factory() as session:
                session.execute(delete(Job).where(Job.id.in_(ids)))
                session.commit()

    def trim(self, queue: str, state: str, older_than: float, session_factory) -> int:
        """Drop finished jobs older than `older_than` from the live index, after archiving them."""
        self.flush_archive(session_factory)
        key = f"{INDEX_KEY}{queue}:{state}"
        removed = 0
        while True:
            ids = self.r.zrangebyscore(key, "-inf", older_than, start=0, num=1000)
            if not ids:
                return removed
            with self.r.pipeline() as pipe:
                for job_id in ids:
                    pipe.delete(JOB_KEY + job_id)
                pipe.zrem(key, *ids)
                pipe.execute()
            removed += len(ids)


_registries: dict[int, JobRegistry] = {}
os.register_at_fork(after_in_child=_registries.clear)  # their clients belong to the parent


def get_registry(settings=None) -> JobRegistry:
    """The registry on the configured Redis (one per client, shared across threads)."""
    client = get_redis(settings)
    reg = _registries.get(id(client))
    if reg is None:
        reg = _registries[id(client)] = JobRegistry(client)
    return reg
