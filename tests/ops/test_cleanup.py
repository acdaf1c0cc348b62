"""Retention cleanup on SQLite and PostgreSQL with rows and files on both sides of the cutoff, run
directly and as a real job on the cleanup queue; one cleanup at a time; orphaned files."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import create_app
from app.core.db import session_scope
from app.core.redis_client import get_redis
from app.core.settings import replace
from app.jobs.registry import get_registry
from app.models import Camera, Detection, Event, GpuStat, Log, RuntimeConfig, Upload
from app.ops import cleanup
from tests.helpers import API_KEY, worker_env
from tests.servers import CeleryWorker

HEADERS = {"X-API-Key": API_KEY}
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
CUTOFF = NOW - timedelta(days=30)  # retention_days=30 in seed()
NEW = NOW - timedelta(days=5)
TABLES = (Detection, Event, GpuStat, Log, Upload)


@pytest.fixture
def cl_settings(settings, db_url, tmp_path):
    s = replace(
        settings,
        database_url=db_url,
        camera_root=tmp_path / "cameras",
        thumbnail_dir=tmp_path / "thumbs",
        clips_dir=tmp_path / "clips",
        retention_days=7,
        delete_images=True,
        cleanup_batch_size=2,
    )
    for d in (s.camera_root / "cam1", s.thumbnail_dir, s.clips_dir, tmp_path / "elsewhere"):
        d.mkdir(parents=True, exist_ok=True)
    return s


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def seed(s) -> dict:
    """Rows and files on both sides of a 30-day cutoff; returns what a cleanup must delete."""
    cam, thumbs = s.camera_root / "cam1", s.thumbnail_dir
    old_img, shared_img, new_img = (
        _file(cam / "old.jpg", 1000),
        _file(cam / "shared.jpg", 2000),
        _file(cam / "new.jpg", 3000),
    )
    old1, old2, new1 = _file(thumbs / "old1.jpg", 100), _file(thumbs / "old2.jpg", 200), _file(thumbs / "new1.jpg", 300)
    outside = _file(thumbs.parent / "elsewhere" / "secret.jpg", 50)
    det = dict(camera_id="cam1", object_type="person", confidence=0.9, bbox_x=0, bbox_y=0, bbox_width=1, bbox_height=1)
    with session_scope(s) as session:
        session.add(Camera(id="cam1", name="cam1", folder_path=str(cam)))
        session.add(RuntimeConfig(key="retention_days", value=30))  # wins over the setting (7)
        session.flush()
        session.add_all(
            [
                Detection(file_path=str(old_img), thumbnail_path="old1.jpg", detected_at=OLD, **det),
                Detection(file_path=str(old_img), thumbnail_path=str(old2), detected_at=OLD, **det),
                Detection(file_path=str(shared_img), thumbnail_path="missing.jpg", detected_at=OLD, **det),
                Detection(file_path=str(shared_img), thumbnail_path=str(outside), detected_at=OLD, **det),
                Detection(file_path=str(shared_img), thumbnail_path=str(new1), detected_at=NEW, **det),
                Detection(file_path=str(new_img), thumbnail_path=None, detected_at=NEW, **det),
            ]
            + [
                Detection(file_path=str(cam / f"gone{i}.jpg"), detected_at=OLD - timedelta(hours=i), **det)
                for i in range(5)
            ]
        )
        session.add_all(
            [
                Event(
                    batch_id=f"b{i}",
                    camera_id="cam1",
                    started_at=t,
                    ended_at=t,
                    risk_score=10,
                    risk_level="low",
                    created_at=t,
                )
                for i, t in enumerate([OLD] * 3 + [NEW] * 2)
            ]
        )
        session.add_all([GpuStat(recorded_at=t, gpu_index=0) for t in [OLD] * 4 + [NEW]])
        session.add_all([Log(timestamp=t, level="INFO", component="test", message="m") for t in [OLD] * 6 + [NEW] * 2])
        # Uploads: 40 days old go; 20 days old stay (past the reconcile window, not past retention) as do 5 days old.
        session.add_all(
            [
                Upload(camera_id="cam1", path=f"/u/{i}.jpg", size=1, mtime_ns=i, first_seen_at=t, outcome="detected")
                for i, t in enumerate([OLD] * 2 + [NOW - timedelta(days=20), NEW])
            ]
        )
    return {
        "events_deleted": 3,
        "detections_deleted": 9,
        "gpu_stats_deleted": 4,
        "logs_deleted": 6,
        "uploads_deleted": 2,
        "thumbnails_deleted": 2,
        "images_deleted": 1,
        "space_reclaimed": 100 + 200 + 1000,
        "retention_days": 30,
        "files_skipped": 1,
        "_gone": [old_img, old1, old2],
        "_kept": [shared_img, new_img, new1, outside],
    }


AGE = {
    Detection: Detection.detected_at,
    Event: Event.created_at,
    GpuStat: GpuStat.recorded_at,
    Log: Log.timestamp,
    Upload: Upload.first_seen_at,
}


def counts(s, older_than: datetime | None = None) -> dict:
    """Rows per table; `older_than` counts only rows past that time (a live worker keeps writing its
    own fresh log lines to the logs table)."""
    with session_scope(s) as session:
        return {
            m.__tablename__: session.execute(
                select(func.count()).select_from(m).where(*([AGE[m] < older_than] if older_than else []))
            ).scalar_one()
            for m in TABLES
        }


FIGURES = (
    "events_deleted",
    "detections_deleted",
    "gpu_stats_deleted",
    "logs_deleted",
    "uploads_deleted",
    "thumbnails_deleted",
    "images_deleted",
    "space_reclaimed",
    "retention_days",
    "files_skipped",
)


def test_dry_run_predicts_exactly_what_the_real_run_deletes(cl_settings):
    from app.core.db import get_sessionmaker

    expected = seed(cl_settings)
    before = counts(cl_settings)
    sessions = get_sessionmaker(cl_settings)
    dry = cleanup.run_retention_cleanup(cl_settings, sessions, dry_run=True)
    assert {k: dry[k] for k in FIGURES} == {k: expected[k] for k in FIGURES}
    assert dry["dry_run"] is True and counts(cl_settings) == before
    assert all(p.exists() for p in expected["_gone"] + expected["_kept"])

    progress = []
    real = cleanup.run_retention_cleanup(cl_settings, sessions, dry_run=False, progress=progress.append)
    assert {k: real[k] for k in FIGURES} == {k: dry[k] for k in FIGURES}
    assert real["dry_run"] is False and real["batches"] >= 12  # batches of 2 rows
    assert [p["detections_deleted"] for p in progress[:5]] == [2, 4, 6, 8, 9]
    assert counts(cl_settings) == {"detections": 2, "events": 2, "gpu_stats": 1, "logs": 2, "uploads": 2}
    assert not any(p.exists() for p in expected["_gone"])
    assert all(p.exists() for p in expected["_kept"])  # shared image still used by a kept detection
    with session_scope(cl_settings) as session:
        assert {d for (d,) in session.execute(select(Detection.detected_at))} == {NEW}
    again = cleanup.run_retention_cleanup(cl_settings, sessions, dry_run=True)
    assert all(again[k] == 0 for k in FIGURES if k not in ("retention_days",))


def test_originals_stay_unless_delete_images(cl_settings):
    from app.core.db import get_sessionmaker

    expected = seed(cl_settings)
    s = replace(cl_settings, delete_images=False)
    report = cleanup.run_retention_cleanup(s, get_sessionmaker(s), dry_run=False)
    assert report["images_deleted"] == 0 and report["thumbnails_deleted"] == 2
    assert report["space_reclaimed"] == 300 and (cl_settings.camera_root / "cam1" / "old.jpg").exists()
    assert report["detections_deleted"] == expected["detections_deleted"]


@pytest.fixture
def cleanup_workers(cl_settings):
    started = []

    def start(n: int = 1, **extra: str) -> list[CeleryWorker]:
        env = worker_env(
            DATABASE_URL=cl_settings.database_url,
            VIGIL_CAMERA_ROOT=str(cl_settings.camera_root),
            VIGIL_THUMBNAIL_DIR=str(cl_settings.thumbnail_dir),
            VIGIL_DELETE_IMAGES="true",
            VIGIL_RETENTION_DAYS="7",
            VIGIL_CLEANUP_BATCH_SIZE="2",
            **extra,
        )
        ws = [CeleryWorker(env, "cleanup_service", ["cleanup"], concurrency=1).start(wait=False) for _ in range(n)]
        started.extend(ws)
        for w in ws:
            w.wait_ready(60)
        return ws

    yield start
    for w in started:
        w.stop()


@pytest.mark.slow
def test_cleanup_endpoint_runs_a_job_on_the_cleanup_queue(cl_settings, cleanup_workers):
    expected = seed(cl_settings)
    api = create_app(cl_settings).test_client()
    assert api.post("/api/system/cleanup").status_code == 401
    r = api.post("/api/system/cleanup?dry_run=true", headers=HEADERS)
    assert r.status_code == 503 and "cleanup" in r.get_json()["detail"]  # no worker: nothing enqueued
    cleanup_workers(1)
    before = counts(cl_settings, older_than=CUTOFF)
    r = api.post("/api/system/cleanup?dry_run=true", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    dry = r.get_json()
    assert {k: dry[k] for k in FIGURES} == {k: expected[k] for k in FIGURES} and dry["dry_run"] is True
    assert counts(cl_settings, older_than=CUTOFF) == before
    r = api.post("/api/system/cleanup", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    real = r.get_json()
    assert {k: real[k] for k in FIGURES} == {k: dry[k] for k in FIGURES} and real["dry_run"] is False
    assert real["timestamp"].endswith("Z") and real["trigger"] == "manual"
    job = get_registry().get(real["job_id"])
    assert job["queue"] == "cleanup" and job["task"] == "vigil.cleanup.run" and job["state"] == "completed"
    assert job["progress"]["logs_deleted"] == 6 and job["progress"]["detections_deleted"] == 9
    status = api.get("/api/system/cleanup/status").get_json()
    assert status["running"] is True and status["retention_days"] == 30 and status["cleanup_time"] == "03:00"
    assert status["delete_images"] is True and status["next_cleanup"].endswith("Z")
    assert status["last_run"]["job_id"] == real["job_id"] and status["in_progress"] is None
    for bad in ("dry_run=maybe", "other=1"):
        assert api.post(f"/api/system/cleanup?{bad}", headers=HEADERS).status_code == 400


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_one_cleanup_at_a_time_across_workers(cl_settings, cleanup_workers, wait):
    from app.celery.app import celery
    from app.jobs.enqueue import enqueue

    expected = seed(cl_settings)
    cleanup_workers(2, VIGIL_CLEANUP_BATCH_PAUSE="0.3")  # ~6 s per run: long enough to overlap
    api = create_app(cl_settings).test_client()
    first = enqueue("cleanup", {"dry_run": False}, settings=cl_settings).job_id
    second = celery.send_task("vigil.cleanup.run", kwargs={"trigger": "beat"}, queue="cleanup").id  # a 2nd beat
    registry = get_registry()
    wait(lambda: cleanup.current_holder(get_redis(cl_settings)), 15, what="a cleanup holding the lock")
    r = api.post("/api/system/cleanup", headers=HEADERS)
    assert r.status_code == 409 and "Another cleanup is running" in r.get_json()["detail"]
    assert api.get("/api/system/cleanup/status").get_json()["in_progress"]["job_id"] in (first, second)
    wait(
        lambda: all((registry.get(j) or {}).get("state") == "completed" for j in (first, second)),
        60,
        what="both jobs finished",
    )
    results = [registry.get(j)["result"] for j in (first, second)]
    skipped = [r for r in results if r.get("skipped")]
    ran = [r for r in results if not r.get("skipped")]
    assert len(skipped) == 1 and len(ran) == 1, results
    assert {k: ran[0][k] for k in FIGURES} == {k: expected[k] for k in FIGURES}
    assert "Another cleanup is running" in skipped[0]["reason"]
    assert cleanup.current_holder(get_redis(cl_settings)) is None


def test_next_cleanup_comes_from_the_beat_schedule(client):
    body = client.get("/api/system/cleanup/status").get_json()
    upcoming = datetime.fromisoformat(body["next_cleanup"].replace("Z", "+00:00"))
    now = datetime.now(UTC)
    assert (upcoming.hour, upcoming.minute) == (3, 0) and now < upcoming <= now + timedelta(days=1)
    assert body["cleanup_time"] == "03:00"


def test_orphaned_files(cl_settings):
    thumbs = cl_settings.thumbnail_dir
    api = create_app(cl_settings).test_client()
    (thumbs / "sub").mkdir()
    ref_rel, ref_abs = _file(thumbs / "ref1.jpg", 10), _file(thumbs / "sub" / "ref2.jpg", 10)
    orphan = _file(thumbs / "orphan.jpg", 123)
    young = _file(thumbs / "young.jpg", 5)
    _file(cl_settings.clips_dir / "clip.mp4", 99)
    hours_ago = time.time() - 7200
    for p in (ref_rel, ref_abs, orphan, cl_settings.clips_dir / "clip.mp4"):
        os.utime(p, (hours_ago, hours_ago))
    with session_scope(cl_settings) as session:
        session.add(Camera(id="cam1", name="cam1", folder_path="x"))
        session.flush()
        det = dict(
            camera_id="cam1",
            file_path="x.jpg",
            object_type="car",
            confidence=0.5,
            bbox_x=0,
            bbox_y=0,
            bbox_width=1,
            bbox_height=1,
        )
        session.add_all([Detection(thumbnail_path="ref1.jpg", **det), Detection(thumbnail_path=str(ref_abs), **det)])

    dry = api.post("/api/system/cleanup/orphaned-files", headers=HEADERS).get_json()
    assert dry["dry_run"] is True and dry["thumbnails"]["files"] == ["orphan.jpg"]
    assert dry["thumbnails"]["orphaned_count"] == 1 and dry["thumbnails"]["orphaned_size_bytes"] == 123
    assert dry["thumbnails"]["total_files"] == 4 and dry["total_orphaned_files"] == 1
    assert "skipped" in dry["clips"] and dry["total_size_bytes"] == 123  # nothing references clips yet
    assert orphan.exists()
    real = api.post("/api/system/cleanup/orphaned-files?dry_run=false", headers=HEADERS).get_json()
    assert real["thumbnails"]["deleted_count"] == 1 and not orphan.exists()
    assert ref_rel.exists() and ref_abs.exists() and young.exists() and (cl_settings.clips_dir / "clip.mp4").exists()

    many = [_file(thumbs / f"stray{i}.jpg", 1) for i in range(4)]  # 4 of 7 files: more than half
    for p in many:
        os.utime(p, (hours_ago, hours_ago))
    r = api.post("/api/system/cleanup/orphaned-files?dry_run=false", headers=HEADERS)
    assert r.status_code == 409 and "more than half" in r.get_json()["detail"]
    assert all(p.exists() for p in many)
    preview = api.post("/api/system/cleanup/orphaned-files", headers=HEADERS).get_json()
    assert preview["thumbnails"]["requires_force"] is True
    forced = api.post("/api/system/cleanup/orphaned-files?dry_run=false&force=true", headers=HEADERS).get_json()
    assert forced["thumbnails"]["deleted_count"] == 4 and not any(p.exists() for p in many)
    assert ref_rel.exists() and ref_abs.exists()


def test_storage_reports_real_figures(cl_settings):
    seed(cl_settings)
    _file(cl_settings.clips_dir / "c.mp4", 4096)
    api = create_app(cl_settings).test_client()
    body = api.get("/api/system/storage").get_json()
    assert body["thumbnails"]["file_count"] == 3 and body["thumbnails"]["size_bytes"] == 600
    assert body["images"]["file_count"] == 3 and body["images"]["size_bytes"] == 6000
    assert body["clips"] == {"file_count": 1, "size_bytes": 4096, "path": str(cl_settings.clips_dir)}
    assert (body["events_count"], body["detections_count"], body["gpu_stats_count"], body["logs_count"]) == (
        5,
        11,
        5,
        8,
    )
    assert body["disk_total_bytes"] >= body["disk_used_bytes"] > 0 and 0 <= body["disk_usage_percent"] <= 100
    assert body["disk_free_bytes"] > 0 and body["timestamp"].endswith("Z")
