"""Health probes against real Redis and SQLite; workers are judged by heartbeats only."""

import socket
import time

import pytest

from app import create_app
from app.core.settings import replace
from app.jobs import heartbeats
from tests.servers import free_port


@pytest.fixture
def isolated(settings, redis_db):
    """Settings on an empty Redis database: no heartbeats from any session worker."""
    return redis_db.settings(settings)


def test_liveness_does_no_io(settings):
    """Redis and the database on a server that takes connections and never answers: a liveness
    check that asked either would wait for its socket timeout (seconds)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        dead = replace(
            settings,
            redis_url=f"redis://127.0.0.1:{port}/0",
            database_url=f"postgresql+psycopg2://nobody@127.0.0.1:{port}/none",
        )
        c = create_app(dead).test_client()
        for path in ("/health", "/api/system/health/live"):
            t0 = time.perf_counter()
            r = c.get(path)
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200 and r.get_json() == {"status": "alive"}
            assert elapsed < 0.5, f"{path} took {elapsed:.2f}s: it waited on a dependency"


def test_ready_is_503_without_pipeline_workers(isolated):
    c = create_app(isolated).test_client()
    r = c.get("/ready")
    assert r.status_code == 503
    body = r.get_json()
    assert body["ready"] is False and body["status"] == "not_ready"
    assert any("detection_worker" in reason for reason in body["reasons"])
    detail = c.get("/api/system/health/ready")
    assert detail.status_code == 503
    d = detail.get_json()
    assert d["services"]["database"]["status"] == "healthy" and d["services"]["redis"]["status"] == "healthy"
    assert {w["name"]: w["running"] for w in d["workers"]}["analysis_worker"] is False


def test_ready_follows_heartbeats(isolated):
    import redis

    client = redis.Redis.from_url(isolated.redis_url, decode_responses=True)
    for group in ("detection_worker", "analysis_worker"):
        heartbeats.publish(client, f"{group}@probe", {"kind": "celery", "queues": []}, ttl=1.0)
    c = create_app(isolated).test_client()
    r = c.get("/api/system/health/ready")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["ready"] is True and body["status"] in ("ready", "degraded")
    time.sleep(1.6)  # heartbeats expire: the workers are gone as far as readiness knows
    assert c.get("/ready").status_code == 503


def test_health_reports_redis_down_quickly(settings):
    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", health_timeout=1.0)
    c = create_app(dead).test_client()
    t0 = time.perf_counter()
    r = c.get("/api/system/health")
    assert time.perf_counter() - t0 < 2.5
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "unhealthy"
    assert body["services"]["redis"]["status"] == "unhealthy"
    assert body["services"]["database"]["status"] == "healthy"
    r = c.get("/ready")
    assert r.status_code == 503 and any(reason.startswith("redis") for reason in r.get_json()["reasons"])


def test_health_healthy(client):
    r = client.get("/api/system/health")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "healthy"
    assert body["services"]["redis"]["details"]["redis_version"]
    assert body["timestamp"].endswith("Z")
