"""Pipeline telemetry from recorded stage timestamps.

Every stage writes a sample when it *happens*, computed from timestamps it recorded, never from an
estimate:

| sample | from | to | written by |
| --- | --- | --- | --- |
| `watch` | file's last write (mtime) | watcher saw it complete (`seen_at`) | detection task |
| `watch_to_detect` | `seen_at` | detection task started | detection task |
| `detect` | detector call started | detector answered | detection task |
| `detect_to_batch` | detector answered | detections added to the camera's batch | detection task |
| `batch` | batch opened | batch closed | batch handoff |
| `batch_to_analyze` | batch closed | analysis task started | analysis task |
| `analyze` | analyser call started | analyser answered | analysis task |
| `total_pipeline` | first file of the batch seen | event written | analysis task |

Samples are members of one Redis sorted set per stage, scored by when they happened, so a window
("the last 60 minutes") is one ZRANGEBYSCORE; samples older than `latency_retention_hours` are
trimmed as new ones arrive.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import redis
from sqlalchemy import func, select

from app.celery.broker import Broker
from app.core.db import session_scope
from app.core.redis_client import KEY_PREFIX, get_broker_redis, get_redis
from app.core.settings import Settings
from app.core.stats import summarize
from app.core.time import iso_now, iso_utc
from app.models import Camera, Detection, Event

log = logging.getLogger(__name__)

SAMPLE_KEY = KEY_PREFIX + "lat:"
TELEMETRY_STAGES = ("watch", "detect", "batch", "analyze")
LATENCY_STAGES = ("watch_to_detect", "detect_to_batch", "batch_to_analyze", "total_pipeline")
STAGES = frozenset(TELEMETRY_STAGES + LATENCY_STAGES)
MAX_SAMPLES_READ = 200_000


def record(
    settings: Settings, stage: str, duration_ms: float, at: float | None = None, client: redis.Redis | None = None
) -> None:
    """Record one stage sample. Telemetry must never fail the work it describes: errors are logged."""
    record_many(settings, [(stage, duration_ms, at)], client)


def record_many(
    settings: Settings, samples: list[tuple[str, float, float | None]], client: redis.Redis | None = None
) -> None:
    """Record (stage, duration ms, at) samples in one round trip: a task that times several stages
    pays one, not one per stage."""
    try:
        client = client or get_redis(settings)
        with client.pipeline(transaction=False) as pipe:
            queue_samples(pipe, settings, samples)
            pipe.execute()
    except redis.RedisError:
        log.warning("could not record %s latency samples", ", ".join(s for s, _, _ in samples), exc_info=True)


def queue_samples(
    pipe: redis.client.Pipeline, settings: Settings, samples: list[tuple[str, float, float | None]]
) -> None:
    """`record_many`'s commands, queued on a pipeline the caller sends with its own writes."""
    now = time.time()
    retention = settings.latency_retention_hours * 3600
    for stage, _, _ in samples:
        if stage not in STAGES:
            raise ValueError(f"unknown pipeline stage {stage!r}")
    for stage, duration_ms, at in samples:
        at = now if at is None else at
        member = f"{at:.6f}:{max(0.0, float(duration_ms)):.3f}:{os.urandom(3).hex()}"
        pipe.zadd(SAMPLE_KEY + stage, {member: at})
        pipe.zremrangebyscore(SAMPLE_KEY + stage, "-inf", at - retention)


def _samples(client: redis.Redis, stage: str, since: float, until: float = math.inf) -> list[tuple[float, float]]:
    members = client.zrevrangebyscore(
        SAMPLE_KEY + stage, "+inf" if until == math.inf else until, since, start=0, num=MAX_SAMPLES_READ
    )
    out = []
    for m in members:
        ts, _, rest = m.partition(":")
        out.append((float(ts), float(rest.partition(":")[0])))
    return out


def latency(settings: Settings, window_minutes: int) -> dict[str, Any]:
    """GET /api/system/pipeline-latency."""
    client = get_redis(settings)
    since = time.time() - window_minutes * 60
    body: dict[str, Any] = {
        stage: summarize([v for _, v in _samples(client, stage, since)]) for stage in LATENCY_STAGES
    }
    body.update(window_minutes=window_minutes, timestamp=iso_now())
    return body


def latency_history(settings: Settings, since_minutes: int, bucket_seconds: int) -> dict[str, Any]:
    """GET /api/system/pipeline-latency/history: one snapshot per bucket that has samples."""
    client = get_redis(settings)
    now = time.time()
    since = now - since_minutes * 60
    buckets: dict[int, dict[str, list[float]]] = {}
    for stage in LATENCY_STAGES:
        for ts, value in _samples(client, stage, since):
            start = int(ts // bucket_seconds) * bucket_seconds
            buckets.setdefault(start, {}).setdefault(stage, []).append(value)
    snapshots = []
    for start in sorted(buckets):
        snap: dict[str, Any] = {"timestamp": iso_utc(start)}
        for stage in LATENCY_STAGES:
            s = summarize(buckets[start].get(stage, []))
            snap[stage] = None if s is None else {k: s[k] for k in ("avg_ms", "p50_ms", "p95_ms", "sample_count")}
        snapshots.append(snap)
    return {"snapshots": snapshots, "count": len(snapshots), "since": since_minutes, "bucket_seconds": bucket_seconds}


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in the broker, every priority level counted (app/celery/broker.py)."""
    waiting = Broker(get_broker_redis(settings)).waiting_counts(["detection:high", "detection", "analysis"])
    return {"detection_queue": waiting["detection:high"] + waiting["detection"], "analysis_queue": waiting["analysis"]}


def telemetry(settings: Settings, window_minutes: int = 60) -> dict[str, Any]:
    """GET /api/system/telemetry: queue depths and per-stage latencies over the last hour."""
    client = get_redis(settings)
    since = time.time() - window_minutes * 60
    return {
        "queues": queue_depths(settings),
        "latencies": {stage: summarize([v for _, v in _samples(client, stage, since)]) for stage in TELEMETRY_STAGES},
        "window_minutes": window_minutes,
        "timestamp": iso_now(),
    }


def stats(settings: Settings, started_at: float) -> dict[str, Any]:
    """GET /api/system/stats."""
    with session_scope(settings) as session:
        cameras = session.execute(select(func.count()).select_from(Camera)).scalar_one()
        events = session.execute(select(func.count()).select_from(Event)).scalar_one()
        detections = session.execute(select(func.count()).select_from(Detection)).scalar_one()
    return {
        "total_cameras": cameras,
        "total_events": events,
        "total_detections": detections,
        "uptime_seconds": round(time.time() - started_at, 1),
        "timestamp": iso_now(),
    }
