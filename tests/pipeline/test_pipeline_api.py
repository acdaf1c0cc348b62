"""Pipeline endpoints and health with configured AI backends: validation, degradation modes, AI
probes against real local servers, full health, and analysis falling back to rules."""

import time
import uuid

import pytest
from sqlalchemy import select

from app import create_app
from app.core.db import session_scope
from app.core.settings import replace
from app.models import DetectionBatch, Event
from app.pipeline import status
from app.pipeline import telemetry as pipeline
from app.pipeline.ai.breakers import breaker
from tests.servers import free_port


def app_for(settings, **changes):
    flask_app = create_app(replace(settings, **changes))
    flask_app.testing = True
    return flask_app.test_client()


@pytest.mark.parametrize(
    "url",
    [
        "/api/system/pipeline-latency?window_minutes=0",
        "/api/system/pipeline-latency?window_minutes=1441",
        "/api/system/pipeline-latency?window_minutes=abc",
        "/api/system/pipeline-latency/history?since=0",
        "/api/system/pipeline-latency/history?bucket_seconds=5",
        "/api/system/pipeline-latency/history?bucket_seconds=3601",
    ],
)
def test_latency_query_validation_is_400(client, url):
    r = client.get(url)
    assert r.status_code == 400 and "detail" in r.get_json() and r.get_json()["errors"]


def test_latency_statistics_from_samples(client, settings, redis_client):
    stage = "detect_to_batch"
    redis_client.delete(pipeline.SAMPLE_KEY + stage)
    now = time.time()
    for i, value in enumerate([10, 20, 30, 40, 1000]):
        pipeline.record(settings, stage, value, now - i)
    pipeline.record(settings, stage, 5, now - 7200)  # outside a 60-minute window
    body = client.get("/api/system/pipeline-latency").get_json()
    got = body[stage]
    assert got["sample_count"] == 5 and got["min_ms"] == 10 and got["max_ms"] == 1000
    assert got["p50_ms"] == 30 and got["avg_ms"] == 220 and body["window_minutes"] == 60
    assert client.get("/api/system/pipeline-latency?window_minutes=180").get_json()[stage]["sample_count"] == 6
    hist = client.get("/api/system/pipeline-latency/history?since=180&bucket_seconds=3600").get_json()
    assert sum((s[stage] or {}).get("sample_count", 0) for s in hist["snapshots"]) == 6


def test_degradation_modes_follow_breakers(settings, reset_ai_breakers):
    assert status.degradation(settings)["mode"] == "normal"

    def fail():
        raise OSError("down")

    ana = breaker("analyser", settings)
    for _ in range(5):
        with pytest.raises(OSError):
            ana.call(fail)
    d = status.degradation(settings)
    assert d["mode"] == "degraded" and "analysis" in d["available_features"]  # rules fall back
    assert status.degradation(replace(settings, analysis_fallback=False))["mode"] == "minimal"
    det = breaker("detector", settings)
    for _ in range(5):
        with pytest.raises(OSError):
            det.call(fail)
    d = status.degradation(settings)
    assert d["mode"] == "minimal" and "detection" not in d["available_features"]
    services = {s["name"]: s for s in d["services"]}
    assert services["detector"]["status"] == "unhealthy" and services["detector"]["consecutive_failures"] == 5
    assert status.degradation(replace(settings, analysis_fallback=False))["mode"] == "offline"


def test_pipeline_endpoints_answer_503_when_redis_is_down(settings):
    c = app_for(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    for url in (
        "/api/system/pipeline",
        "/api/system/telemetry",
        "/api/system/pipeline-latency",
        "/api/system/circuit-breakers",
    ):
        r = c.get(url)
        assert r.status_code == 503 and "Redis" in r.get_json()["detail"]


def test_health_probes_http_backends(settings, scripted_server, reset_ai_breakers):
    up = scripted_server(lambda req: (200, {"status": "ok", "data": []}, 0))
    c = app_for(settings, detector_backend="http", detector_url=up.url, analyser_backend="llm", llm_url=up.url + "/v1")
    r = c.get("/api/system/health")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["services"]["ai"]["details"] == {"detector": "healthy", "analyser": "healthy"}
    assert {q.path for q in up.requests} == {"/health", "/v1/models"}

    down = f"http://127.0.0.1:{free_port()}"
    c = app_for(settings, detector_backend="http", detector_url=down, health_timeout=1.0)
    t0 = time.perf_counter()
    r = c.get("/api/system/health")
    assert time.perf_counter() - t0 < 3
    body = r.get_json()
    assert r.status_code == 503 and body["status"] == "degraded"
    assert body["services"]["ai"]["status"] == "unhealthy" and "detector" in body["services"]["ai"]["message"]

    hung = scripted_server(lambda req: (200, {}, 3.0))
    c = app_for(settings, detector_backend="http", detector_url=hung.url, health_timeout=0.5)
    t0 = time.perf_counter()
    assert c.get("/api/system/health").get_json()["services"]["ai"]["status"] == "unhealthy"
    assert time.perf_counter() - t0 < 2.5


def test_full_health_shape_and_critical_rule(settings, scripted_server, reset_ai_breakers):
    c = app_for(settings)
    body = c.get("/api/system/health/full").get_json()
    assert {
        "status",
        "ready",
        "message",
        "postgres",
        "redis",
        "infrastructure",
        "ai_services",
        "circuit_breakers",
        "workers",
        "timestamp",
        "version",
    } <= set(body)
    assert [s["name"] for s in body["ai_services"]] == ["detector", "analyser"]
    assert {w["name"]: w["critical"] for w in body["workers"]}["file_watcher"] is True

    down = f"http://127.0.0.1:{free_port()}"
    c = app_for(settings, analyser_backend="llm", llm_url=down)
    r = c.get("/api/system/health/full")
    body = r.get_json()
    assert r.status_code == 503 and body["status"] == "unhealthy" and body["ready"] is False
    assert "analyser" in body["message"]
    analyser = [s for s in body["ai_services"] if s["name"] == "analyser"][0]
    assert analyser["status"] == "unhealthy" and analyser["url"] == down and analyser["error"]


def test_analysis_falls_back_to_rules_while_the_llm_breaker_is_open(settings, scripted_server, reset_ai_breakers):
    """The analyser's breaker is open: the batch is still scored, by the rules, and the event says so.
    Running the same batch again returns that event instead of writing another."""
    from app.pipeline.batches import get_aggregator, record_closed
    from app.pipeline.cameras import ensure_camera
    from app.pipeline.events import analyse_batch

    server = scripted_server(lambda req: (500, "boom", 0))
    s = replace(settings, analyser_backend="llm", llm_url=server.url + "/v1")
    camera = f"fb_{uuid.uuid4().hex[:8]}"
    with session_scope(s) as session:
        ensure_camera(session, camera, "Back Gate", "/tmp")
    agg = get_aggregator(s)
    bid, _, _ = agg.add(camera, [], window=1, idle=1, now=time.time() - 5)
    agg.close_due()
    record_closed(s, agg.get(bid), None)
    from app.core.redis_client import get_redis

    get_redis(s).zrem("vigil:batches:outbox", bid)

    def fail():
        raise OSError("down")

    b = breaker("analyser", s)
    for _ in range(5):
        with pytest.raises(OSError):
            b.call(fail)
    out = analyse_batch(s, bid, started_at=time.time(), first_attempt=True, final_attempt=False)
    assert out["created"] is True and out["analyser"].startswith("builtin (fallback: llm circuit open)")
    assert server.requests == []  # the open breaker kept the LLM out of it
    again = analyse_batch(s, bid, started_at=time.time(), first_attempt=False, final_attempt=False)
    assert again["created"] is False and again["event_id"] == out["event_id"]
    with session_scope(s) as session:
        assert len(list(session.execute(select(Event).where(Event.batch_id == bid)).scalars())) == 1
        row = session.get(DetectionBatch, bid)
        assert row.status == "analysed" and row.event_id == out["event_id"]


def test_llm_analysis_records_tokens_and_takes_severity_from_thresholds(settings, scripted_server, reset_ai_breakers):
    from app.core.redis_client import get_redis
    from app.pipeline.batches import get_aggregator, record_closed
    from app.pipeline.cameras import ensure_camera
    from app.pipeline.events import analyse_batch
    from tests.ai_servers import completion

    content = '{"risk_score": 64, "risk_level": "critical", "summary": "Someone at the gate", "reasoning": "late"}'
    server = scripted_server(lambda req: (200, completion(content, 812, 47), 0))
    s = replace(settings, analyser_backend="llm", llm_url=server.url + "/v1", llm_model="nemotron-mini")
    camera = f"llm_{uuid.uuid4().hex[:8]}"
    with session_scope(s) as session:
        ensure_camera(session, camera, "Gate", "/tmp")
    agg = get_aggregator(s)
    bid, _, _ = agg.add(camera, [], window=1, idle=1, now=time.time() - 5)
    agg.close_due()
    record_closed(s, agg.get(bid), None)
    get_redis(s).zrem("vigil:batches:outbox", bid)
    out = analyse_batch(s, bid, started_at=time.time(), first_attempt=True, final_attempt=False)
    with session_scope(s) as session:
        event = session.get(Event, out["event_id"])
    assert (event.risk_score, event.input_tokens, event.output_tokens) == (64, 812, 47)
    assert event.risk_level == "high"  # 60-84 by the thresholds, whatever the model called it
    assert event.analyser == "llm:nemotron-mini" and event.summary == "Someone at the gate"


@pytest.mark.slow
def test_detection_job_retries_a_failing_model_server_until_it_answers(
    settings, scripted_server, photos, tmp_path, redis_db
):
    """A real detection worker on the HTTP backend: two 503s, then an answer. The job is retried
    with backoff (not failed, not lost) and completes with the detections."""
    from app.celery.app import create_celery
    from app.jobs.registry import JobRegistry
    from tests.ai_servers import YOLO_ANSWER
    from tests.helpers import worker_env
    from tests.servers import CeleryWorker

    answers = [(503, "warming up", 0), (503, "warming up", 0)]
    server = scripted_server(lambda req: answers.pop(0) if answers else (200, YOLO_ANSWER, 0))
    # A broker of its own: no other worker competes.
    env = worker_env(REDIS_URL=redis_db.url, VIGIL_DETECTOR_BACKEND="http", VIGIL_DETECTOR_URL=server.url)
    worker = CeleryWorker(env, "detection_worker", ["detection"], concurrency=1).start()
    try:
        cam = settings.camera_root / f"retry_{uuid.uuid4().hex[:6]}"
        cam.mkdir(parents=True)
        image = cam / "a.jpg"
        image.write_bytes(photos["astronaut"].read_bytes())
        s = redis_db.settings(settings)
        job_id = str(uuid.uuid4())
        create_celery(s).send_task(
            "vigil.detection.detect",
            queue="detection",
            task_id=job_id,
            kwargs={"camera_id": cam.name, "path": str(image), "seen_at": time.time()},
        )
        registry = JobRegistry(redis_db.client(decode_responses=True))
        job = wait_for_state(registry, job_id, "completed", 40)
        assert job["attempts"] == 3 and job["result"]["detections_kept"] == 1, job
        assert server.calls("/detect") == 3
    finally:
        worker.stop()


def wait_for_state(registry, job_id, state, timeout):
    from tests.servers import wait_for

    return wait_for(
        lambda: (registry.get(job_id) or {}).get("state") == state and registry.get(job_id),
        timeout,
        interval=0.2,
        what=f"job {job_id} {state}",
    )
