"""The core resources API end to end with real parts, on SQLite and PostgreSQL: the service host as
the Procfile runs it (`python -m workers.host`: the file watcher and the batch closer), real Celery
detection and analysis workers, real Redis. Photographs dropped into two camera folders are read back
through the API as detections with boxes, one batch per camera and one event per batch whose detail
links them; the media endpoints return the original and the thumbnail, and refuse a path outside
the camera root and the thumbnail directory."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import update

from app.api.events import EventDetail
from app.core.db import session_scope
from app.models import Detection
from tests.helpers import API_KEY, worker_env
from tests.pipeline.resource_data import assert_shape, client_for
from tests.servers import ROOT, CeleryWorker

CAMERAS = {"front_door": ("Front Door", ["astronaut", "coffee"]), "back_yard": ("Back Yard", ["astronaut_flipped"])}


@pytest.mark.slow
def test_photos_in_two_camera_folders_read_back_through_the_api(db_url, redis_db, settings, photos, tmp_path, wait):
    root, thumbs = tmp_path / "cameras", tmp_path / "thumbs"
    s = redis_db.settings(settings, database_url=db_url, camera_root=root, thumbnail_dir=thumbs, log_db=False)
    api = client_for(s)
    r = api.patch(
        "/api/system/config",
        json={"batch_window_seconds": 4, "batch_idle_timeout_seconds": 2},
        headers={"X-API-Key": API_KEY},
    )
    assert r.status_code == 200, r.get_json()
    env = worker_env(
        REDIS_URL=redis_db.url,
        DATABASE_URL=db_url,
        VIGIL_CAMERA_ROOT=str(root),
        VIGIL_THUMBNAIL_DIR=str(thumbs),
        VIGIL_VAR_DIR=str(tmp_path / "var"),
        VIGIL_BATCH_CHECK_INTERVAL="0.5",
        VIGIL_LOG_DB="false",
    )
    workers = [
        CeleryWorker(env, "detection_worker", ["detection:high", "detection"]).start(wait=False),
        CeleryWorker(env, "analysis_worker", ["analysis"]).start(wait=False),
    ]
    log_path = tmp_path / "host.log"
    with open(log_path, "wb") as log:
        host = subprocess.Popen(
            [sys.executable, "-m", "workers.host"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for worker in workers:
            worker.wait_ready(60)

        def watching():
            assert host.poll() is None, f"the host exited:\n{log_path.read_text()[-3000:]}"
            return api.get("/api/system/pipeline").get_json()["file_watcher"]["running"]

        wait(watching, 60, interval=0.2, what="the file watcher")
        for folder, names in CAMERAS.values():
            (root / folder).mkdir(parents=True)
            for name in names:
                shutil.copyfile(photos[name], root / folder / f"{name}.jpg")

        def events_of(camera_id):
            return api.get(f"/api/events?camera_id={camera_id}").get_json()["events"]

        wait(lambda: all(events_of(c) for c in CAMERAS), 60, interval=0.25, what="an event per camera")

        cameras = {c["id"]: c for c in api.get("/api/cameras").get_json()["cameras"]}
        assert set(cameras) == set(CAMERAS)
        for camera_id, (folder, names) in CAMERAS.items():
            camera = cameras[camera_id]
            assert camera["name"] == folder and camera["status"] == "online" and camera["enabled"] is True
            assert camera["counts"]["events"] == 1 and camera["counts"]["detections_24h"] >= 1

            [event] = events_of(camera_id)
            detail = api.get(f"/api/events/{event['id']}").get_json()
            assert_shape(EventDetail, detail)
            assert detail["risk_level"] in ("low", "medium", "high", "critical") and detail["summary"]
            assert detail["analyser"] == "builtin" and detail["alerts"] == []
            assert set(detail["object_types"]) <= {"person", "face"} and detail["object_types"]
            batch = detail["batch"]
            assert batch["status"] == "analysed" and batch["event_id"] == event["id"] and detail["analysis_job_id"]
            assert batch["camera_id"] == camera_id and batch["opened_at"] <= batch["closed_at"]
            found = detail["detections"]
            assert found and len(found) == detail["detection_count"] == batch["detection_count"]
            assert all(
                d["bbox"]["width"] > 0
                and d["bbox"]["height"] > 0
                and d["batch_id"] == batch["id"]
                and d["thumbnail_url"]
                for d in found
            )
            assert {Path(d["file_path"]).name for d in found} == {f"{names[0]}.jpg"}  # the coffee cup: nothing

            batches = api.get(f"/api/batches?camera_id={camera_id}").get_json()
            assert batches["count"] == 1 and batches["batches"][0]["id"] == batch["id"]
            listed = api.get(f"/api/batches/{batch['id']}").get_json()
            assert listed["detection_ids"] == sorted(d["id"] for d in found)
            assert listed["analysis_job_id"] == detail["analysis_job_id"]
            assert api.get(f"/api/detections?camera_id={camera_id}").get_json()["count"] == len(found)

            one = found[0]
            image = api.get(one["image_url"])
            assert image.status_code == 200 and image.data == (root / folder / f"{names[0]}.jpg").read_bytes()
            boxed = cv2.imdecode(np.frombuffer(api.get(one["image_url"] + "?boxes=1").data, np.uint8), cv2.IMREAD_COLOR)
            assert boxed.shape == cv2.imread(str(root / folder / f"{names[0]}.jpg")).shape
            thumb = api.get(one["thumbnail_url"])
            assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
            assert cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR) is not None

        # a row pointing outside the roots is refused, not served
        victim = found[0]["id"]
        with session_scope(s) as session:
            session.execute(
                update(Detection)
                .where(Detection.id == victim)
                .values(file_path=str(photos["coffee"]), thumbnail_path=str(photos["coffee"]))
            )
        for media in ("image", "image?boxes=1", "thumbnail"):
            r = api.get(f"/api/detections/{victim}/{media}")
            assert r.status_code == 404 and "not inside" in r.get_json()["detail"], media
    finally:
        if host.poll() is None:
            host.send_signal(signal.SIGTERM)
            try:
                host.wait(15)
            except subprocess.TimeoutExpired:
                host.kill()
        for worker in workers:
            worker.stop()
