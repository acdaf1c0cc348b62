"""The batch aggregator: per camera, detections collect in an open batch in Redis until it closes.

A batch opens with a camera's first detection and closes `batch_window_seconds` after it opened or
`batch_idle_timeout_seconds` after its last detection, whichever comes first. Several detection
workers add to the same camera's batch at once, so every change is one Lua call:

* `add` joins the camera's open batch or opens one, and moves the batch's deadline
  (`min(opened + window, last + idle)`) in the deadline set. A detection that arrives after the
  deadline closes the old batch on the spot and opens the next, so a late closer never stretches
  a window.
* `close_due` closes every batch whose deadline has passed and puts it in the outbox.
  It is driven by a timer (`workers/host/services/batch_closer.py`, a service in the service host), not by the
  next upload: a camera that goes quiet still gets its batch analysed.
* `handoff` turns each batch in the outbox into its SQL record and an `analysis` job, with the
  idempotency key `batch:<id>`, and only then takes it out of the outbox. A crash in between
  repeats the handoff, which the key and the upsert make harmless: nothing closed is lost, and
  no batch is analysed twice.

Keys (the scripts derive per-batch keys from ids; Vigil's Redis is a single node):
`vigil:batch:open:<camera>` -> open batch id, `vigil:batch:<id>` hash, `vigil:batch:<id>:dets`
set of detection ids, `vigil:batches:deadlines` zset, `vigil:batches:outbox` zset.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import func, select

from app.core.db import session_scope, upsert_insert
from app.core.errors import NotFound
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs.enqueue import enqueue
from app.models import Detection, DetectionBatch
from app.pipeline import telemetry

log = logging.getLogger(__name__)

BATCH_KEY = KEY_PREFIX + "batch:"
OPEN_KEY = KEY_PREFIX + "batch:open:"
DEADLINES = KEY_PREFIX + "batches:deadlines"
OUTBOX = KEY_PREFIX + "batches:outbox"
ANALYSED_TTL = 24 * 3600  # a batch's Redis keys outlive its analysis by this much
IDEMPOTENCY_TTL = 7 * 24 * 3600  # a closed batch maps to one analysis job for this long

_CLOSE_FN = """
local function close(bid, now, deadlines, outbox, prefix, open_prefix)
  local h = prefix .. bid
  local camera = redis.call('HGET', h, 'camera_id')
  if camera and redis.call('GET', open_prefix .. camera) == bid then
    redis.call('DEL', open_prefix .. camera)
  end
  redis.call('ZREM', deadlines, bid)
  local opened = tonumber(redis.call('HGET', h, 'opened_at') or now)
  local window = tonumber(redis.call('HGET', h, 'window') or 0)
  local reason = 'idle'
  if tonumber(now) >= opened + window then reason = 'window' end
  redis.call('HSET', h, 'status', 'closed', 'closed_at', now, 'close_reason', reason)
  redis.call('ZADD', outbox, now, bid)
end
"""

# KEYS: open key, deadlines, outbox. ARGV: camera, new id, now, window, idle, seen_at|'', prefix,
# open prefix, detection ids... Returns {batch id, detection count, opened (1|0)}.
_ADD = (
    _CLOSE_FN
    + """
local openk, deadlines, outbox = KEYS[1], KEYS[2], KEYS[3]
local camera, newid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local window, idle, seen, prefix, open_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local bid = redis.call('GET', openk)
if bid then
  local h = prefix .. bid
  local opened = tonumber(redis.call('HGET', h, 'opened_at'))
  local last = tonumber(redis.call('HGET', h, 'last_at'))
  local win = tonumber(redis.call('HGET', h, 'window'))
  local idl = tonumber(redis.call('HGET', h, 'idle'))
  if now >= opened + win or now >= last + idl then
    close(bid, ARGV[3], deadlines, outbox, prefix, open_prefix)
    bid = false
  end
end
local created = 0
if not bid then
  bid = newid
  created = 1
  redis.call('HSET', prefix .. bid, 'id', bid, 'camera_id', camera, 'opened_at', ARGV[3], 'window', window,
             'status', 'open')
  redis.call('SET', openk, bid)
end
local h = prefix .. bid
redis.call('HSET', h, 'last_at', ARGV[3], 'idle', idle)
if seen ~= '' then
  local first = redis.call('HGET', h, 'first_seen_at')
  if (not first) or tonumber(seen) < tonumber(first) then redis.call('HSET', h, 'first_seen_at', seen) end
end
for i = 9, #ARGV do redis.call('SADD', h .. ':dets', ARGV[i]) end
local count = redis.call('SCARD', h .. ':dets')
redis.call('HSET', h, 'detection_count', count)
local opened = tonumber(redis.call('HGET', h, 'opened_at'))
local win = tonumber(redis.call('HGET', h, 'window'))
redis.call('ZADD', deadlines, math.min(opened + win, now + idle), bid)
return {bid, count, created}
"""
)

# KEYS: deadlines, outbox. ARGV: now, prefix, open prefix, limit. Returns the ids it closed.
_CLOSE_DUE = (
    _CLOSE_FN
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, bid in ipairs(due) do close(bid, ARGV[1], KEYS[1], KEYS[2], ARGV[2], ARGV[3]) end
return due
"""
)


class BatchAggregator:
    def __init__(self, client: redis.Redis):
        self.r = client
        self._add = client.register_script(_ADD)
        self._close_due = client.register_script(_CLOSE_DUE)

    def add(
        self,
        camera_id: str,
        detection_ids: list[int],
        *,
        window: float,
        idle: float,
        seen_at: float | None = None,
        now: float | None = None,
    ) -> tuple[str, int, bool]:
        """Add detections to the camera's open batch (opening one if needed); returns
        (batch id, detections in it, whether this call opened it)."""
        now = time.time() if now is None else now
        bid, count, created = self._add(
            keys=[OPEN_KEY + camera_id, DEADLINES, OUTBOX],
            args=[
                camera_id,
                uuid.uuid4().hex,
                repr(now),
                window,
                idle,
                "" if seen_at is None else repr(seen_at),
                BATCH_KEY,
                OPEN_KEY,
                *[str(i) for i in detection_ids],
            ],
        )
        return bid, int(count), bool(created)

    def close_due(self, now: float | None = None, limit: int = 500) -> list[str]:
        now = time.time() if now is None else now
        return list(self._close_due(keys=[DEADLINES, OUTBOX], args=[repr(now), BATCH_KEY, OPEN_KEY, limit]))

    def get(self, batch_id: str) -> dict[str, Any] | None:
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(BATCH_KEY + batch_id)
            pipe.smembers(BATCH_KEY + batch_id + ":dets")
            raw, dets = pipe.execute()
        if not raw:
            return None
        out: dict[str, Any] = dict(raw)
        for name in ("opened_at", "last_at", "closed_at", "first_seen_at", "window", "idle"):
            if out.get(name) not in (None, ""):
                out[name] = float(out[name])
        out["detection_count"] = int(out.get("detection_count") or 0)
        out["detection_ids"] = sorted(int(d) for d in dets)
        return out

    def open_batches(self) -> list[dict[str, Any]]:
        ids = self.r.zrange(DEADLINES, 0, -1)
        batches = [self.get(bid) for bid in ids]
        return [b for b in batches if b]

    def outbox(self, limit: int = 500) -> list[str]:
        return list(self.r.zrange(OUTBOX, 0, limit - 1))

    def mark(self, batch_id: str, **fields: Any) -> None:
        self.r.hset(BATCH_KEY + batch_id, mapping={k: v for k, v in fields.items() if v is not None})

    def open_batch(self, camera_id: str) -> dict[str, Any] | None:
        """The camera's open batch, if it has one."""
        batch_id = self.r.get(OPEN_KEY + camera_id)
        batch = self.get(batch_id) if batch_id else None
        return batch if batch and batch.get("status") == "open" else None

    def discard_camera(self, camera_id: str) -> list[str]:
        """Drop a camera's open batch and any of its closed batches still in the outbox (the camera is
        being deleted: handed to analysis, they would name a camera that no longer exists)."""
        ids = [b for b in [self.r.get(OPEN_KEY + camera_id)] if b]
        ids += [b for b in self.outbox() if self.r.hget(BATCH_KEY + b, "camera_id") == camera_id]
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(OPEN_KEY + camera_id)
            for batch_id in ids:
                pipe.zrem(DEADLINES, batch_id)
                pipe.zrem(OUTBOX, batch_id)
                pipe.delete(BATCH_KEY + batch_id, BATCH_KEY + batch_id + ":dets")
            pipe.execute()
        return ids

    def retire(self, batch_id: str) -> None:
        """After analysis: keep the keys a day for inspection, then let Redis drop them."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.expire(BATCH_KEY + batch_id, ANALYSED_TTL)
            pipe.expire(BATCH_KEY + batch_id + ":dets", ANALYSED_TTL)
            pipe.execute()


def get_aggregator(settings: Settings | None = None) -> BatchAggregator:
    return BatchAggregator(get_redis(settings))


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def record_closed(settings: Settings, batch: dict[str, Any], analysis_job_id: str | None) -> None:
    """Insert (or complete) the SQL record of a closed batch; safe to repeat."""
    row = {
        "id": batch["id"],
        "camera_id": batch["camera_id"],
        "status": "closed",
        "close_reason": batch.get("close_reason") or "window",
        "detection_count": batch["detection_count"],
        "first_seen_at": _dt(batch.get("first_seen_at")),
        "opened_at": _dt(batch["opened_at"]),
        "last_detection_at": _dt(batch["last_at"]),
        "closed_at": _dt(batch["closed_at"]),
        "analysis_job_id": analysis_job_id,
        "created_at": datetime.now(UTC),
    }
    with session_scope(settings) as session:
        insert = upsert_insert(session)
        stmt = insert(DetectionBatch).values(row)
        if analysis_job_id is None:
            session.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
        else:
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"], set_={"analysis_job_id": stmt.excluded.analysis_job_id}
                )
            )


_failing: set[str] = set()  # batches whose handoff failed: the traceback is logged once, not every tick


def handoff(
    settings: Settings, aggregator: BatchAggregator | None = None, enqueue_fn: Callable[..., Any] | None = None
) -> list[str]:
    """Closed batches -> SQL record + one analysis job each; returns the batch ids handed off.

    A batch leaves the outbox only after both happened; one that fails stays for the next tick.
    """

    enqueue_fn = enqueue_fn or enqueue
    aggregator = aggregator or get_aggregator(settings)
    done = []
    for batch_id in aggregator.outbox():
        batch = aggregator.get(batch_id)
        if batch is None or "closed_at" not in batch:
            aggregator.r.zrem(OUTBOX, batch_id)  # expired or never complete: nothing to analyse
            continue
        try:
            record_closed(settings, batch, None)  # before the job exists, so the analysis finds it
            job = enqueue_fn(
                "analysis",
                {"batch_id": batch_id, "camera_id": batch["camera_id"]},
                idempotency_key=f"batch:{batch_id}",
                idempotency_ttl=IDEMPOTENCY_TTL,
                settings=settings,
            )
            record_closed(settings, batch, job.job_id)
        except Exception:
            log.warning(
                "could not hand batch %s to analysis yet; will retry", batch_id, exc_info=batch_id not in _failing
            )
            _failing.add(batch_id)
            continue
        _failing.discard(batch_id)
        aggregator.mark(batch_id, analysis_job_id=job.job_id)
        aggregator.r.zrem(OUTBOX, batch_id)
        if job.created:
            telemetry.record(settings, "batch", (batch["closed_at"] - batch["opened_at"]) * 1000, batch["closed_at"])
        done.append(batch_id)
    return done


# ---- reading batches (GET /api/batches) ------------------------------------------------------------------------
def open_dict(batch: dict[str, Any]) -> dict[str, Any]:
    """An open batch from its Redis hash, in the shape of a closed one; `closes_at` is its deadline
    as things stand (a new detection moves it, up to the window's end)."""
    opened, last = batch.get("opened_at"), batch.get("last_at")
    closes = min(opened + batch.get("window", 0), last + batch.get("idle", 0)) if opened and last else None
    return {
        "id": batch["id"],
        "camera_id": batch.get("camera_id"),
        "status": "open",
        "close_reason": None,
        "detection_count": batch["detection_count"],
        "first_seen_at": iso_utc(batch.get("first_seen_at")),
        "opened_at": iso_utc(opened),
        "last_detection_at": iso_utc(last),
        "closes_at": iso_utc(closes),
        "closed_at": None,
        "analysis_job_id": None,
        "analysis_started_at": None,
        "analysed_at": None,
        "event_id": None,
    }


def closed_dict(row: DetectionBatch) -> dict[str, Any]:
    return {
        "id": row.id,
        "camera_id": row.camera_id,
        "status": row.status,
        "close_reason": row.close_reason,
        "detection_count": row.detection_count,
        "first_seen_at": iso_utc(row.first_seen_at),
        "opened_at": iso_utc(row.opened_at),
        "last_detection_at": iso_utc(row.last_detection_at),
        "closes_at": None,
        "closed_at": iso_utc(row.closed_at),
        "analysis_job_id": row.analysis_job_id,
        "analysis_started_at": iso_utc(row.analysis_started_at),
        "analysed_at": iso_utc(row.analysed_at),
        "event_id": row.event_id,
    }


def list_batches(
    settings: Settings, *, camera_id: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[int, int, list[dict[str, Any]]]:
    """Open batches (Redis, newest first) and then closed ones (SQL, newest closed first), as one list:
    returns (how many match, how many of those are open, this page). Open batches number at most one
    per camera, so they always lead the first page."""
    aggregator = get_aggregator(settings)
    opens: list[dict[str, Any]] = []
    if status in (None, "open"):
        found = [aggregator.open_batch(camera_id)] if camera_id else aggregator.open_batches()
        opens = sorted(
            (open_dict(b) for b in found if b and b.get("status") == "open"),
            key=lambda b: (b["opened_at"] or "", b["id"]),
            reverse=True,
        )
    page = opens[offset : offset + limit]
    closed = 0
    if status != "open":
        where = [
            c
            for c in (
                DetectionBatch.camera_id == camera_id if camera_id else None,
                DetectionBatch.status == status if status else None,
            )
            if c is not None
        ]
        with session_scope(settings) as session:
            closed = session.execute(select(func.count()).select_from(DetectionBatch).where(*where)).scalar_one()
            if len(page) < limit:
                rows = session.execute(
                    select(DetectionBatch)
                    .where(*where)
                    .order_by(DetectionBatch.closed_at.desc(), DetectionBatch.id.desc())
                    .limit(limit - len(page))
                    .offset(max(0, offset - len(opens)))
                ).scalars()
                page += [closed_dict(r) for r in rows]
    return len(opens) + closed, len(opens), page


def get_batch(settings: Settings, batch_id: str) -> dict[str, Any]:
    """A closed batch from its SQL record, else an open one from Redis; with its detection ids."""
    with session_scope(settings) as session:
        row = session.get(DetectionBatch, batch_id)
        if row is not None:
            out = closed_dict(row)
            out["detection_ids"] = sorted(
                session.execute(select(Detection.id).where(Detection.batch_id == batch_id)).scalars()
            )
            return out
    batch = get_aggregator(settings).get(batch_id)
    if batch is None or batch.get("status") != "open":
        # closed in Redis but not recorded yet (the handoff runs every `batch_check_interval`), or unknown
        if batch is not None:
            raise NotFound(
                f"Batch '{batch_id}' has just closed and is being handed to analysis; ask again in a second",
                code="batch_not_found",
            )
        raise NotFound(f"No batch with id '{batch_id}'", code="batch_not_found")
    out = open_dict(batch)
    out["detection_ids"] = batch["detection_ids"]
    return out
