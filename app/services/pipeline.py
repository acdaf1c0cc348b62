"""Pipeline telemetry from recorded stage timestamps, and the pipeline's status at a glance.

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
from datetime import datetime, timezone
from typing import Any

import redis
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Camera, Detection, Event
from app.redis_client import KEY_PREFIX, get_broker_redis, get_redis
from app.services import heartbeats
from app.services.broker import Broker
from app.settings import Settings
from app.stats import summarize

log = logging.getLogger(__name__)

SAMPLE_KEY = KEY_PREFIX + "lat:"
TELEMETRY_STAGES = ("watch", "detect", "batch", "analyze")
LATENCY_STAGES = ("watch_to_detect", "detect_to_batch", "batch_to_analyze", "total_pipeline")
STAGES = frozenset(TELEMETRY_STAGES + LATENCY_STAGES)
MAX_SAMPLES_READ = 200_000


def record(settings: Settings, stage: str, duration_ms: float, at: float | None = None,
           client: redis.Redis | None = None) -> None:
    """Record one stage sample. Telemetry must never fail the work it describes: errors are logged."""
    if stage not in STAGES:
        raise ValueError(f"unknown pipeline stage {stage!r}")
    at = time.time() if at is None else at
    duration_ms = max(0.0, float(duration_ms))
    member = f"{at:.6f}:{duration_ms:.3f}:{os.urandom(3).hex()}"
    try:
        client = client or get_redis(settings)
        with client.pipeline(transaction=False) as pipe:
            pipe.zadd(SAMPLE_KEY + stage, {member: at})
            pipe.zremrangebyscore(SAMPLE_KEY + stage, "-inf", at - settings.latency_retention_hours * 3600)
            pipe.execute()
    except redis.RedisError:
        log.warning("could not record %s latency sample", stage, exc_info=True)


def _samples(client: redis.Redis, stage: str, since: float, until: float = math.inf) -> list[tuple[float, float]]:
    members = client.zrevrangebyscore(SAMPLE_KEY + stage, "+inf" if until == math.inf else until, since,
                                      start=0, num=MAX_SAMPLES_READ)
    out = []
    for m in members:
        ts, _, rest = m.partition(":")
        out.append((float(ts), float(rest.partition(":")[0])))
    return out


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def latency(settings: Settings, window_minutes: int) -> dict[str, Any]:
    """GET /api/system/pipeline-latency."""
    client = get_redis(settings)
    since = time.time() - window_minutes * 60
    body: dict[str, Any] = {stage: summarize([v for _, v in _samples(client, stage, since)])
                            for stage in LATENCY_STAGES}
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
        snap: dict[str, Any] = {"timestamp": datetime.fromtimestamp(start, tz=timezone.utc).isoformat()
                                .replace("+00:00", "Z")}
        for stage in LATENCY_STAGES:
            s = summarize(buckets[start].get(stage, []))
            snap[stage] = None if s is None else {k: s[k] for k in ("avg_ms", "p50_ms", "p95_ms", "sample_count")}
        snapshots.append(snap)
    return {"snapshots": snapshots, "count": len(snapshots), "since": since_minutes,
            "bucket_seconds": bucket_seconds}


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in the broker, every priority level counted (app/services/broker.py)."""
    waiting = Broker(get_broker_redis(settings)).waiting_counts(["detection:high", "detection", "analysis"])
    return {"detection_queue": waiting["detection:high"] + waiting["detection"],
            "analysis_queue": waiting["analysis"]}


def telemetry(settings: Settings, window_minutes: int = 60) -> dict[str, Any]:
    """GET /api/system/telemetry: queue depths and per-stage latencies over the last hour."""
    client = get_redis(settings)
    since = time.time() - window_minutes * 60
    return {"queues": queue_depths(settings),
            "latencies": {stage: summarize([v for _, v in _samples(client, stage, since)])
                          for stage in TELEMETRY_STAGES},
            "window_minutes": window_minutes, "timestamp": iso_now()}


def stats(settings: Settings, started_at: float) -> dict[str, Any]:
    """GET /api/system/stats."""
    with session_scope(settings) as session:
        cameras = session.execute(select(func.count()).select_from(Camera)).scalar_one()
        events = session.execute(select(func.count()).select_from(Event)).scalar_one()
        detections = session.execute(select(func.count()).select_from(Detection)).scalar_one()
    return {"total_cameras": cameras, "total_events": events, "total_detections": detections,
            "uptime_seconds": round(time.time() - started_at, 1), "timestamp": iso_now()}


# ---- status -------------------------------------------------------------------------------------
def file_watcher_status(settings: Settings, beats: list[dict[str, Any]]) -> dict[str, Any]:
    """What the watcher publishes in its heartbeat (the API never looks at the file system)."""
    mine = heartbeats.by_group(beats).get("file_watcher", [])
    if not mine:
        return {"running": False, "camera_root": str(settings.camera_root), "pending_tasks": 0,
                "observer_type": None}
    beat = max(mine, key=lambda b: b.get("ts", 0))
    return {"running": True, "camera_root": beat.get("camera_root") or str(settings.camera_root),
            "pending_tasks": int(beat.get("pending_tasks") or 0), "observer_type": beat.get("observer_type"),
            "enqueued": beat.get("enqueued"), "duplicates": beat.get("duplicates"), "node": beat.get("node")}


def batch_status(settings: Settings) -> dict[str, Any]:
    from app.services import runtime_config
    from app.services.batches import get_aggregator

    now = time.time()
    batches = []
    for b in get_aggregator(settings).open_batches():
        batches.append({"batch_id": b["id"], "camera_id": b.get("camera_id"),
                        "detection_count": b["detection_count"], "started_at": b.get("opened_at"),
                        "age_seconds": round(now - b.get("opened_at", now), 1),
                        "last_activity_seconds": round(now - b.get("last_at", now), 1)})
    config = runtime_config.effective(settings)
    return {"active_batches": len(batches), "batches": batches,
            "batch_window_seconds": config["batch_window_seconds"],
            "idle_timeout_seconds": config["batch_idle_timeout_seconds"]}


def degradation(settings: Settings, redis_ok: bool | None = None) -> dict[str, Any]:
    """The mode the pipeline runs in, from its breakers and Redis.

    normal: Redis up, every breaker closed. degraded: a breaker is testing recovery (half-open), or
    the analyser is open while rule-based fallback scores events. minimal: the detector is open
    (nothing new is detected; queued batches are still analysed), or the analyser is open without
    fallback. offline: Redis is down (nothing can be queued or batched), or neither detection nor
    analysis can run.
    """
    from app.services.breakers import all_breakers

    client = get_redis(settings)
    if redis_ok is None:
        try:
            redis_ok = bool(client.ping())
        except redis.RedisError:
            redis_ok = False
    breakers = {}
    if redis_ok:
        try:
            breakers = {b["name"]: b for b in all_breakers(settings)}
        except redis.RedisError:
            redis_ok = False
    services = []
    for name in ("detector", "analyser"):
        b = breakers.get(name)
        state = b["state"] if b else "unknown"
        status = {"closed": "healthy", "half_open": "degraded", "open": "unhealthy"}.get(state, "unknown")
        services.append({"name": name, "status": status, "circuit_state": state,
                         "last_check": b.get("last_call") if b else None,
                         "consecutive_failures": b["failure_count"] if b else 0,
                         "error_message": (b.get("last_error") if b and state != "closed" else None)})
    det = breakers.get("detector", {}).get("state", "closed")
    ana = breakers.get("analyser", {}).get("state", "closed")
    analysis_ok = ana != "open" or settings.analysis_fallback
    if not redis_ok or (det == "open" and not analysis_ok):
        mode = "offline"
    elif det == "open" or not analysis_ok:
        mode = "minimal"
    elif ana == "open" or "half_open" in (det, ana):
        mode = "degraded"
    else:
        mode = "normal"
    features = []
    if redis_ok:
        if det != "open":
            features.append("detection")
        features.append("batching")
        if analysis_ok:
            features.append("analysis")
        if settings.analyser_backend == "llm" and ana != "open":
            features.append("llm_analysis")
    return {"mode": mode, "is_degraded": mode != "normal", "redis_healthy": redis_ok, "memory_queue_size": 0,
            "fallback_queues": {}, "services": services, "available_features": features}


def pipeline_status(settings: Settings) -> dict[str, Any]:
    """GET /api/system/pipeline: watcher, open batches and degradation, each from what processes
    published (heartbeats, Redis), so it answers in a few Redis calls."""
    client = get_redis(settings)
    beats = heartbeats.alive(client, settings.heartbeat_ttl)
    return {"file_watcher": file_watcher_status(settings, beats), "batch_aggregator": batch_status(settings),
            "degradation": degradation(settings, redis_ok=True), "timestamp": iso_now()}
