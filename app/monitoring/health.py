"""GET /api/v1/monitoring/health: the parts of the AI Monitoring API's system health that Vigil has. The API itself
(with its database round trip), the model providers behind each agent (the backends' health calls,
breakers included) and the cache (Redis, with the hit rate from `INFO stats`). The AI Monitoring API's `vector_db`
and other components Vigil does not have are left out, not faked."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from app.core.db import session_scope
from app.core.redis_client import get_redis
from app.core.settings import Settings
from app.core.time import iso_now
from app.pipeline.ai.probes import probe_all


def system_health(settings: Settings, version: str) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        with session_scope(settings) as session:
            session.execute(text("SELECT 1"))
        api = {"name": "api", "status": "healthy", "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
    except Exception as exc:
        api = {"name": "api", "status": "degraded", "latency_ms": None, "error": f"database: {type(exc).__name__}"}
    components.append(api)
    providers = [
        {
            "name": p["name"],
            "status": p["status"],
            "backend": p["backend"],
            "latency_ms": p["response_time_ms"],
            "error": p["error"],
        }
        for p in probe_all(settings)
    ]
    healthy = sum(1 for p in providers if p["status"] == "healthy")
    components.append(
        {
            "name": "model_providers",
            "status": "healthy" if healthy == len(providers) else "degraded" if healthy else "unhealthy",
            "providers": providers,
        }
    )
    t0 = time.perf_counter()
    try:
        stats = get_redis(settings).info("stats")
        hits, misses = int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))
        cache = {
            "name": "cache",
            "status": "healthy",
            "latency_ms": round((time.perf_counter() - t0) * 1000, 2),
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        }
    except Exception as exc:
        cache = {
            "name": "cache",
            "status": "unhealthy",
            "latency_ms": None,
            "hit_rate": None,
            "error": f"{type(exc).__name__}",
        }
    components.append(cache)
    worst = {c["status"] for c in components}
    status = (
        "unhealthy"
        if "unhealthy" in worst and cache["status"] == "unhealthy"
        else ("healthy" if worst == {"healthy"} else "degraded")
    )
    return {"status": status, "timestamp": iso_now(), "components": components, "version": version}
