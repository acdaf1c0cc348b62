"""Performance figures (live and stored snapshots) against real Redis and both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from app import create_app
from app.core.db import session_scope
from app.jobs import heartbeats
from app.models import PerformanceSnapshot
from app.ops import performance
from workers.host.services.performance_monitor import PerformanceMonitor


@pytest.fixture
def perf_settings(settings, db_url, redis_db):
    """Settings on the parametrised database and a Redis database of their own (no session workers)."""
    return redis_db.settings(settings, database_url=db_url)


def test_current_performance(perf_settings):
    s = perf_settings
    client = redis.Redis.from_url(s.redis_url, decode_responses=True)
    heartbeats.publish(client, "detection_worker@box", {"kind": "celery", "pid": 42}, 30)
    body = create_app(s).test_client().get("/api/system/performance").get_json()
    assert set(body) >= {"gpu", "ai_models", "inference", "databases", "host", "containers", "alerts", "timestamp"}
    db = body["databases"]["sqlite" if s.is_sqlite else "postgres"]
    assert db["status"] == "healthy" and db["size_bytes"] > 0
    if not s.is_sqlite:
        assert db["connections"] >= 1
    assert body["databases"]["redis"]["status"] == "healthy" and body["databases"]["redis"]["memory_mb"] > 0
    host = body["host"]
    assert 0 <= host["cpu_percent"] <= 100 and 0 < host["ram_percent"] < 100 and 0 < host["disk_percent"] <= 100
    assert {
        "name": "detection_worker@box",
        "group": "detection_worker",
        "status": "running",
        "kind": "celery",
        "pid": 42,
    }.items() <= next(c for c in body["containers"] if c["name"] == "detection_worker@box").items()
    assert body["inference"]["sample_count"] == 0 and body["inference"]["avg_latency_ms"] is None


def test_alerts_follow_thresholds():
    snap = {"host": {"cpu_percent": 95.0, "ram_percent": 10.0, "disk_percent": 91.0}, "gpu": {"temperature_c": None}}
    assert [a["metric"] for a in performance.alerts_for(snap)] == ["cpu_percent", "disk_percent"]


def test_history_reads_stored_snapshots(perf_settings):
    s = perf_settings
    monitor = PerformanceMonitor(s)
    for _ in range(3):
        assert monitor.snapshot_once() is not None
    with session_scope(s) as session:
        session.add(
            PerformanceSnapshot(
                timestamp=datetime.now(UTC) - timedelta(minutes=10), data={"host": {"cpu_percent": 1.0}}
            )
        )
        session.add(PerformanceSnapshot(timestamp=datetime.now(UTC) - timedelta(hours=30), data={}))
    api = create_app(s).test_client()
    five = api.get("/api/system/performance/history").get_json()
    assert five["time_range"] == "5m" and five["count"] == 3 and len(five["snapshots"]) == 3
    stamps = [x["timestamp"] for x in five["snapshots"]]
    assert stamps == sorted(stamps) and all("host" in x and "databases" in x for x in five["snapshots"])
    assert api.get("/api/system/performance/history?time_range=15m").get_json()["count"] == 4
    assert api.get("/api/system/performance/history?time_range=60m").get_json()["count"] == 4
    for bad in ("time_range=2h", "time_range=", "x=1"):
        r = api.get(f"/api/system/performance/history?{bad}")
        assert r.status_code == 400 and "time_range" in r.get_json()["detail"] or bad == "x=1"
    from app.core.db import get_sessionmaker

    removed = performance.prune(get_sessionmaker(s), datetime.now(UTC) - timedelta(hours=24))
    assert removed == 1
