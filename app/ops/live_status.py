"""The live events that come from watching state rather than from an action: `camera.status_changed`
(first seen, silent, offline, back) and `system.health_changed`.

No single place changes a camera's status (it follows from the time of its last upload) or the
overall health (it follows from the checks), so the service host's `live_monitor` compares what it
sees every VIGIL_LIVE_CHECK_INTERVAL seconds with what it saw last (kept in Redis, so a restarted host
does not announce every camera again) and publishes the differences.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from app.core.db import session_scope
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.live import bus as live
from app.models import Camera
from app.ops import health
from app.pipeline.cameras import status_of, thresholds

CAMERAS_KEY = KEY_PREFIX + "live:camera_status"  # hash camera_id -> status last announced
HEALTH_KEY = KEY_PREFIX + "live:health"  # the overall verdict last announced


def _reason(previous: str, status: str) -> str:
    if previous == "unknown":
        return "first_seen"
    if status == "online":
        return "back"
    return status  # silent or offline


def check_cameras(settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Publish each camera whose status differs from the one last announced; returns what was published.
    A camera never announced is `first_seen` when it is online (a camera created by its first upload)."""
    now = now or datetime.now(UTC)
    limits = thresholds(settings)
    with session_scope(settings) as session:
        rows = session.execute(select(Camera.id, Camera.last_seen_at)).all()
    client = get_redis(settings)
    known = client.hgetall(CAMERAS_KEY)
    changes, published = {}, []
    for camera_id, last_seen in rows:
        seen = last_seen if last_seen is None or last_seen.tzinfo else last_seen.replace(tzinfo=UTC)
        status = status_of(seen, now, limits["silent_after_seconds"], limits["offline_after_seconds"])
        previous = known.get(camera_id, "unknown")
        if previous == status or (previous == "unknown" and status != "online"):
            if previous == "unknown":
                changes[camera_id] = status  # an old camera, offline before we watched: remember quietly
            continue
        changes[camera_id] = status
        payload = {
            "camera_id": camera_id,
            "status": status,
            "previous": previous,
            "reason": _reason(previous, status),
            "last_seen_at": iso_utc(seen),
        }
        live.publish("camera.status_changed", payload, settings)
        published.append(payload)
    gone = set(known) - {r[0] for r in rows}
    if changes:
        client.hset(CAMERAS_KEY, mapping=changes)
    if gone:
        client.hdel(CAMERAS_KEY, *gone)
    return published


def check_health(settings: Settings) -> dict[str, Any] | None:
    """Publish `system.health_changed` when the overall verdict differs from the last one announced."""
    results = health.run_checks(
        {
            "database": lambda: health.check_database(settings),
            "redis": lambda: health.check_redis(settings),
            "ai": lambda: health.check_ai(settings),
        },
        settings.health_timeout,
    )
    status = health.overall(results)
    client = get_redis(settings)
    previous = client.get(HEALTH_KEY) or "unknown"
    if previous == status:
        return None
    client.set(HEALTH_KEY, status)
    payload = {"status": status, "previous": previous, "components": {n: r.status for n, r in results.items()}}
    live.publish("system.health_changed", payload, settings)
    return payload
