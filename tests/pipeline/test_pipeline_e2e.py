"""The whole pipeline with real parts: a real file watcher and batch closer (the service host),
real Celery detection and analysis workers, real Redis and SQL. Photographs copied into a camera
folder become detections, one batch for the camera's window, one analysis and one event with a
risk score, and the latency endpoints report every stage."""

import time
import uuid

import pytest
from sqlalchemy import delete, select

from app.core.db import session_scope
from app.jobs.enqueue import enqueue
from app.jobs.registry import get_registry
from app.models import Detection, DetectionBatch, Event, RuntimeConfig
from app.pipeline import runtime_config
from tests.helpers import unique_jpeg
from workers.host.services.batch_closer import BatchCloser
from workers.host.services.watcher import FileWatcher
from workers.host.supervisor import ServiceHost


@pytest.fixture
def short_windows(client, api_headers):
    """Batch window 6 s, idle timeout 3 s, set the way an operator would (PATCH /api/system/config);
    the workers read it from the runtime config. Restored to the defaults afterwards."""
    r = client.patch(
        "/api/system/config", json={"batch_window_seconds": 6, "batch_idle_timeout_seconds": 3}, headers=api_headers
    )
    assert r.status_code == 200, r.get_json()
    yield
    with session_scope() as session:
        session.execute(
            delete(RuntimeConfig).where(RuntimeConfig.key.in_(["batch_window_seconds", "batch_idle_timeout_seconds"]))
        )
    runtime_config.invalidate()


@pytest.fixture
def service_host(settings):
    host = ServiceHost([FileWatcher(settings), BatchCloser(settings)], settings)
    host.start()
    watcher = host.services["file_watcher"]
    deadline = time.time() + 10
    while watcher.observer_type is None and time.time() < deadline:
        time.sleep(0.05)
    yield host
    host.stop()


def completed_jobs(queue):
    _total, jobs = get_registry().list(queue, "completed", limit=500)
    return jobs


@pytest.mark.slow
def test_photos_become_one_batch_one_analysis_one_event(
    celery_workers, short_windows, service_host, settings, photos, client, wait
):
    folder = f"E2E Door {uuid.uuid4().hex[:6]}"
    camera_id = folder.lower().replace(" ", "_")
    cam_dir = settings.camera_root / folder
    cam_dir.mkdir(parents=True)
    (cam_dir / "astro.jpg").write_bytes(unique_jpeg(photos["astronaut"]))
    (cam_dir / "coffee.jpg").write_bytes(unique_jpeg(photos["coffee"]))
    time.sleep(0.5)
    (cam_dir / "astro2.jpg").write_bytes(unique_jpeg(photos["astronaut_flipped"]))  # same window, other bytes

    def event():
        with session_scope() as s:
            return s.execute(select(Event).where(Event.camera_id == camera_id)).scalar_one_or_none()

    ev = wait(event, 90, interval=0.25, what="the camera's event")
    time.sleep(1.0)  # anything that would wrongly make a second batch or event has had time to

    with session_scope() as s:
        detections = list(s.execute(select(Detection).where(Detection.camera_id == camera_id)).scalars())
        batches = list(s.execute(select(DetectionBatch).where(DetectionBatch.camera_id == camera_id)).scalars())
        events = list(s.execute(select(Event).where(Event.camera_id == camera_id)).scalars())
    # detections: both astronaut pictures, nothing from the coffee cup
    files = {d.file_path.rsplit("/", 1)[-1] for d in detections}
    assert files == {"astro.jpg", "astro2.jpg"}, files
    assert all(d.confidence >= 0.5 and d.object_type in ("person", "face") for d in detections)
    assert all(d.thumbnail_path and d.bbox_width > 0 for d in detections)
    # one batch for the camera's window, holding every detection
    assert len(batches) == 1
    batch = batches[0]
    assert {d.batch_id for d in detections} == {batch.id}
    assert batch.detection_count == len(detections) and batch.status == "analysed"
    assert batch.close_reason in ("idle", "window") and batch.analysis_started_at and batch.event_id == ev.id
    # one analysis job, one event with a risk score and a severity from the thresholds
    analyses = [j for j in completed_jobs("analysis") if j["kwargs"].get("batch_id") == batch.id]
    assert len(analyses) == 1 and analyses[0]["result"]["event_id"] == ev.id
    assert len(events) == 1
    assert 0 <= ev.risk_score <= 100 and ev.risk_level in ("low", "medium", "high", "critical")
    assert ev.detection_count == len(detections) and sorted(ev.detection_ids) == sorted(d.id for d in detections)
    assert ev.analyser == "builtin" and "on " in ev.summary
    assert runtime_config.severity_for(ev.risk_score, runtime_config.thresholds(settings)) == ev.risk_level
    # the coffee picture was detected too, and found nothing
    coffee = [j for j in completed_jobs("detection") if j["kwargs"].get("path", "").endswith(f"{folder}/coffee.jpg")]
    assert len(coffee) == 1 and coffee[0]["result"]["detections_kept"] == 0

    # a repeated analysis of the same batch makes no second event
    job = enqueue("analysis", {"batch_id": batch.id, "camera_id": camera_id})
    again = wait(
        lambda: (get_registry().get(job.job_id) or {}).get("state") == "completed" and get_registry().get(job.job_id),
        30,
        what="the repeated analysis",
    )
    assert again["result"]["event_id"] == ev.id and again["result"]["created"] is False
    with session_scope() as s:
        assert len(list(s.execute(select(Event).where(Event.camera_id == camera_id)).scalars())) == 1

    # the latency endpoints report every stage, from recorded timestamps
    latency = client.get("/api/system/pipeline-latency?window_minutes=5").get_json()
    for stage in ("watch_to_detect", "detect_to_batch", "batch_to_analyze", "total_pipeline"):
        assert latency[stage] and latency[stage]["sample_count"] >= 1, (stage, latency)
    assert latency["watch_to_detect"]["sample_count"] >= 3
    assert latency["total_pipeline"]["max_ms"] >= 3000  # at least the idle timeout the batch waited out
    history = client.get("/api/system/pipeline-latency/history?since=5&bucket_seconds=60").get_json()
    assert history["count"] >= 1 and any(s["batch_to_analyze"] for s in history["snapshots"])
    telemetry = client.get("/api/system/telemetry").get_json()
    assert all(telemetry["latencies"][k] for k in ("watch", "detect", "batch", "analyze"))
    assert set(telemetry["queues"]) == {"detection_queue", "analysis_queue"}

    status = client.get("/api/system/pipeline").get_json()
    assert status["file_watcher"]["running"] is True and status["file_watcher"]["observer_type"] == "native"
    assert status["file_watcher"]["camera_root"] == str(settings.camera_root.resolve())
    assert status["batch_aggregator"]["batch_window_seconds"] == 6
    assert status["degradation"]["mode"] == "normal"
    stats = client.get("/api/system/stats").get_json()
    assert stats["total_events"] >= 1 and stats["total_detections"] >= len(detections)

    full = client.get("/api/system/health/full")
    body = full.get_json()
    assert {w["name"]: w["running"] for w in body["workers"]}["file_watcher"] is True
    assert [s["status"] for s in body["ai_services"]] == ["healthy", "healthy"]
    assert body["circuit_breakers"]["breakers"] == {"detector": "closed", "analyser": "closed"}
    assert full.status_code == 200 and body["status"] in ("healthy", "degraded"), body
