"""The pipeline's status at a glance: watcher, open batches and the degradation mode, each read
from what processes publish (heartbeats, Redis, breakers), so it answers in a few Redis calls."""

from __future__ import annotations

import time
from typing import Any

import redis

from app.core.redis_client import get_redis
from app.core.settings import Settings
from app.core.time import iso_now
from app.jobs import heartbeats
from app.pipeline import runtime_config
from app.pipeline.ai.breakers import all_breakers
from app.pipeline.batches import get_aggregator


def file_watcher_status(settings: Settings, beats: list[dict[str, Any]]) -> dict[str, Any]:
    """What the watcher publishes in its heartbeat (the API never looks at the file system)."""
    mine = heartbeats.by_group(beats).get("file_watcher", [])
    if not mine:
        return {"running": False, "camera_root": str(settings.camera_root), "pending_tasks": 0, "observer_type": None}
    beat = max(mine, key=lambda b: b.get("ts", 0))
    return {
        "running": True,
        "camera_root": beat.get("camera_root") or str(settings.camera_root),
        "pending_tasks": int(beat.get("pending_tasks") or 0),
        "observer_type": beat.get("observer_type"),
        "enqueued": beat.get("enqueued"),
        "duplicates": beat.get("duplicates"),
        # Files that settled without being a complete image: reported, not left waiting (each also
        # has an upload row with outcome `skipped` and the reason).
        "skipped": beat.get("skipped"),
        "recent_skipped": beat.get("recent_skipped"),
        "reconciled": beat.get("reconciled"),
        "last_reconcile": beat.get("last_reconcile"),
        "node": beat.get("node"),
    }


def batch_status(settings: Settings) -> dict[str, Any]:
    now = time.time()
    batches = []
    for b in get_aggregator(settings).open_batches():
        batches.append(
            {
                "batch_id": b["id"],
                "camera_id": b.get("camera_id"),
                "detection_count": b["detection_count"],
                "started_at": b.get("opened_at"),
                "age_seconds": round(now - b.get("opened_at", now), 1),
                "last_activity_seconds": round(now - b.get("last_at", now), 1),
            }
        )
    config = runtime_config.effective(settings)
    return {
        "active_batches": len(batches),
        "batches": batches,
        "batch_window_seconds": config["batch_window_seconds"],
        "idle_timeout_seconds": config["batch_idle_timeout_seconds"],
    }


def degradation(settings: Settings, redis_ok: bool | None = None) -> dict[str, Any]:
    """The mode the pipeline runs in, from its breakers and Redis.

    normal: Redis up, every breaker closed. degraded: a breaker is testing recovery (half-open), or
    the analyser is open while rule-based fallback scores events. minimal: the detector is open
    (nothing new is detected; queued batches are still analysed), or the analyser is open without
    fallback. offline: Redis is down (nothing can be queued or batched), or neither detection nor
    analysis can run.
    """
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
        services.append(
            {
                "name": name,
                "status": status,
                "circuit_state": state,
                "last_check": b.get("last_call") if b else None,
                "consecutive_failures": b["failure_count"] if b else 0,
                "error_message": (b.get("last_error") if b and state != "closed" else None),
            }
        )
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
    return {
        "mode": mode,
        "is_degraded": mode != "normal",
        "redis_healthy": redis_ok,
        "memory_queue_size": 0,
        "fallback_queues": {},
        "services": services,
        "available_features": features,
    }


def pipeline_status(settings: Settings) -> dict[str, Any]:
    """GET /api/system/pipeline: watcher, open batches and degradation, each from what processes
    published (heartbeats, Redis), so it answers in a few Redis calls."""
    client = get_redis(settings)
    beats = heartbeats.alive(client, settings.heartbeat_ttl)
    return {
        "file_watcher": file_watcher_status(settings, beats),
        "batch_aggregator": batch_status(settings),
        "degradation": degradation(settings, redis_ok=True),
        "timestamp": iso_now(),
    }
