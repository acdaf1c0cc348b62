"""Performance figures (System Operations API `GET /api/system/performance`) and their stored history.

`collect` builds the snapshot from what is already published (the GPU monitor's latest sample, the
job registry, heartbeats) plus cheap direct reads (PostgreSQL/SQLite size and connections, Redis
INFO, psutil). Each part fails on its own: an unreachable database makes `databases.postgres`
say so, it does not make the endpoint a 500. The performance monitor (workers/host/services/performance_monitor.py)
stores one snapshot every `VIGIL_PERFORMANCE_INTERVAL` seconds for the history endpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from app.core.db import get_engine, session_scope
from app.core.redis_client import get_redis
from app.core.settings import Settings
from app.core.time import iso_now, iso_utc
from app.jobs import heartbeats
from app.jobs.registry import get_registry
from app.models import PerformanceSnapshot
from app.models import PerformanceSnapshot as P  # short: the queries below read as SQL
from app.ops import gpu, health

log = logging.getLogger(__name__)

TIME_RANGES = {"5m": 300, "15m": 900, "60m": 3600}
# Thresholds above which the snapshot carries an alert (percent, or Celsius for the GPU).
THRESHOLDS = {"cpu_percent": 90.0, "ram_percent": 90.0, "disk_percent": 90.0, "gpu_temperature_c": 85.0}
MB = 1024 * 1024


def _now_iso() -> str:
    return iso_now()


def _part(name: str, fn: Callable[[], Any], fallback: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        log.debug("performance part %s failed", name, exc_info=True)
        if isinstance(fallback, dict):
            return dict(fallback, status="unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
        return fallback


def gpu_part(settings: Settings) -> dict[str, Any]:
    with session_scope(settings) as session:
        sample = gpu.latest(session, max_age=3 * settings.gpu_poll_interval)
    sample = sample or gpu.empty_sample()
    return {
        "gpu_name": sample["gpu_name"],
        "utilization": sample["utilization"],
        "memory_used_mb": sample["memory_used"],
        "memory_total_mb": sample["memory_total"],
        "temperature_c": sample["temperature"],
        "power_watts": sample["power_usage"],
    }


def database_part(settings: Settings) -> dict[str, Any]:
    engine = get_engine(settings)
    with engine.connect() as conn:
        if settings.is_sqlite:
            path = engine.url.database or ""
            size = os.path.getsize(path) if path and os.path.exists(path) else None
            conn.execute(text("SELECT 1")).all()
            return {"status": "healthy", "size_bytes": size, "connections": None}
        connections = conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        ).scalar_one()
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    return {"status": "healthy", "connections": int(connections), "size_bytes": int(size)}


def redis_part(settings: Settings) -> dict[str, Any]:
    info = get_redis(settings).info()
    return {
        "status": "healthy",
        "memory_mb": round(int(info.get("used_memory", 0)) / MB, 2),
        "connected_clients": info.get("connected_clients"),
        "ops_per_sec": info.get("instantaneous_ops_per_sec"),
        "version": info.get("redis_version"),
    }


def host_part(settings: Settings, cpu_interval: float | None) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(settings.var_dir if settings.var_dir.exists() else "/"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "cpu_percent": psutil.cpu_percent(interval=cpu_interval),
        "cpu_count": psutil.cpu_count(),
        "load_1m": load[0],
        "ram_percent": memory.percent,
        "ram_used_mb": round(memory.used / MB, 1),
        "ram_total_mb": round(memory.total / MB, 1),
        "disk_percent": disk.percent,
    }


def processes_part(settings: Settings) -> list[dict[str, Any]]:
    """Vigil's processes as their heartbeats show them (any host); silent ones as `unresponsive`."""
    client = get_redis(settings)
    alive = {b["node"]: b for b in heartbeats.alive(client, settings.heartbeat_ttl)}
    out = []
    for node, last in sorted(heartbeats.last_seen(client).items()):
        beat = alive.get(node)
        out.append(
            {
                "name": node,
                "group": node.split("@", 1)[0],
                "status": "running" if beat else "unresponsive",
                "kind": beat.get("kind") if beat else None,
                "pid": beat.get("pid") if beat else None,
                "last_seen": iso_utc(last),
            }
        )
    return out


def alerts_for(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    host, gpu_figures = snapshot.get("host") or {}, snapshot.get("gpu") or {}
    values = {
        "cpu_percent": host.get("cpu_percent"),
        "ram_percent": host.get("ram_percent"),
        "disk_percent": host.get("disk_percent"),
        "gpu_temperature_c": gpu_figures.get("temperature_c"),
    }
    return [
        {
            "metric": metric,
            "value": value,
            "threshold": THRESHOLDS[metric],
            "severity": "warning",
            "message": f"{metric} is {value:g} (threshold {THRESHOLDS[metric]:g})",
        }
        for metric, value in values.items()
        if value is not None and value >= THRESHOLDS[metric]
    ]


def collect(settings: Settings, cpu_interval: float | None = 0.1) -> dict[str, Any]:
    """The current snapshot. `cpu_interval` None measures CPU since the previous call (the monitor,
    which calls every few seconds); the API passes a short interval because it has no previous call."""
    ai = health.run_checks({"ai": lambda: health.check_ai(settings)}, settings.health_timeout)["ai"].details or {}
    snapshot: dict[str, Any] = {
        "gpu": _part("gpu", lambda: gpu_part(settings), {}),
        "ai_models": {
            name: {"status": value, "vram_mb": None} for name, value in ai.items() if name not in ("status", "error")
        },
        "inference": _part("inference", lambda: gpu.inference_latency(get_registry(settings)), {}),
        "databases": {
            "sqlite" if settings.is_sqlite else "postgres": _part("database", lambda: database_part(settings), {}),
            "redis": _part("redis", lambda: redis_part(settings), {}),
        },
        "host": _part("host", lambda: host_part(settings, cpu_interval), {}),
        "containers": _part("processes", lambda: processes_part(settings), []),
    }
    snapshot["alerts"] = alerts_for(snapshot)
    snapshot["timestamp"] = _now_iso()
    return snapshot


# ---- history -------------------------------------------------------------------------------------
def store(session: Session, snapshot: dict[str, Any]) -> None:

    session.add(PerformanceSnapshot(timestamp=datetime.now(UTC), data=snapshot))


def prune(session_factory, older_than: datetime, batch: int = 1000) -> int:
    """Delete snapshots older than `older_than`, a batch per transaction."""
    removed = 0
    while True:
        with session_factory() as session:
            ids = session.execute(select(P.id).where(P.timestamp < older_than).limit(batch)).scalars().all()
            if not ids:
                return removed
            session.execute(delete(P).where(P.id.in_(ids)))
            session.commit()
        removed += len(ids)


def history(session: Session, time_range: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Stored snapshots of the last `time_range`, oldest first."""
    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=TIME_RANGES[time_range])
    rows = (
        session.execute(select(P).where(P.timestamp >= since).order_by(P.timestamp.asc(), P.id.asc())).scalars().all()
    )
    return [dict(row.data or {}, timestamp=iso_utc(row.timestamp)) for row in rows]
