"""Detections and batches (/api/detections, /api/batches): filters and pages, the media endpoints
served only from inside the camera root and thumbnail directory, open batches from Redis and closed
ones from SQL; alert rules refusing object types no detector reports. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import cv2
import numpy as np
import pytest
from sqlalchemy import update

from app.api.batches import BatchDetail, BatchPage
from app.api.detections import DetectionDetail, DetectionPage
from app.core.db import session_scope
from app.models import Detection, DetectionBatch
from app.pipeline.batches import get_aggregator, record_closed
from tests.pipeline.resource_data import T0, add_camera, add_event, assert_shape, client_for


@pytest.fixture
def s(db_url, redis_db, settings, tmp_path):
    return redis_db.settings(
        settings, database_url=db_url, camera_root=tmp_path / "cameras", thumbnail_dir=tmp_path / "thumbs", log_db=False
    )


@pytest.fixture
def api(s):
    return client_for(s)


def test_list_filters_and_pages(api, s):
    add_camera(s, "door")
    add_camera(s, "yard")
    made = []
    for i in range(6):
        camera = "door" if i < 4 else "yard"
        _e, batch, found = add_event(
            s, camera, started=T0 + timedelta(minutes=i), kinds=("person", "car"), confidence=0.5 + i / 10
        )
        made += [(d, camera, kind, 0.5 + i / 10, batch) for d, kind in zip(found, ("person", "car"))]
    body = api.get("/api/detections?limit=3").get_json()
    assert_shape(DetectionPage, body)
    assert body["count"] == 12 and [d["id"] for d in body["detections"]] == [12, 11, 10]
    assert body["detections"][0]["image_url"] == "/api/detections/12/image"
    cases = {
        "camera_id=yard": lambda m: m[1] == "yard",
        "object_type=Car": lambda m: m[2] == "car",
        "min_confidence=0.75": lambda m: m[3] >= 0.75,
        "camera_id=door&object_type=person": lambda m: m[1] == "door" and m[2] == "person",
        f"batch_id={made[0][4]}": lambda m: m[4] == made[0][4],
        "start=2026-11-23T12:02:00Z&end=2026-11-23T12:03:01Z": lambda m: m[0] in range(5, 9),
    }
    for query, keep in cases.items():
        want = sorted((m[0] for m in made if keep(m)), reverse=True)
        got = api.get(f"/api/detections?{query}&limit=100").get_json()
        assert got["count"] == len(want) and [d["id"] for d in got["detections"]] == want, query
    walked, cursor = [], ""
    while True:
        page = api.get(f"/api/detections?camera_id=door&limit=3&order=asc{cursor}").get_json()
        walked += [d["id"] for d in page["detections"]]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert walked == sorted(m[0] for m in made if m[1] == "door")
    offset = api.get("/api/detections?camera_id=door&limit=3&offset=3&order=asc").get_json()
    assert [d["id"] for d in offset["detections"]] == walked[3:6]
    for bad in ("min_confidence=2", "limit=1000", "start=soon", "cursor=%%%", "camera=door"):
        assert api.get(f"/api/detections?{bad}").status_code == 400, bad


def test_get_a_detection_with_its_event(api, s):
    add_camera(s, "door")
    event_id, batch_id, found = add_event(s, "door")
    body = api.get(f"/api/detections/{found[0]}").get_json()
    assert_shape(DetectionDetail, body)
    assert body["event_id"] == event_id and body["batch_id"] == batch_id and body["object_type"] == "person"
    assert body["bbox"] == {"x": 0, "y": 20, "width": 30, "height": 40} and body["thumbnail_url"] is None
    assert api.get("/api/detections/999999").status_code == 404
    assert api.get("/api/detections/0").status_code == 400


def _jpeg(path, colour=(128, 128, 128), size=(120, 160)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), colour, dtype=np.uint8))
    return path


def _point(s, detection_id, **values):
    with session_scope(s) as session:
        session.execute(update(Detection).where(Detection.id == detection_id).values(**values))


def test_media_only_from_inside_the_camera_root_and_thumbnail_dir(api, s, tmp_path):
    image = _jpeg(s.camera_root / "door" / "snap.jpg")
    thumb = _jpeg(s.thumbnail_dir / "door" / "snap_0.jpg", size=(30, 40))
    add_camera(s, "door")
    _e, _b, (first, second) = add_event(s, "door", kinds=("person", "face"), file_path=str(image))
    _point(s, first, thumbnail_path=str(thumb))

    r = api.get(f"/api/detections/{first}/image")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.data == image.read_bytes()
    again = api.get(f"/api/detections/{first}/image", headers={"If-None-Match": r.headers["ETag"]})
    part = api.get(f"/api/detections/{first}/image", headers={"Range": "bytes=0-9"})
    assert again.status_code == 304 and part.status_code == 206 and part.data == image.read_bytes()[:10]
    r = api.get(f"/api/detections/{first}/thumbnail")
    assert r.status_code == 200 and r.data == thumb.read_bytes()
    assert api.get(f"/api/detections/{first}").get_json()["thumbnail_url"] == f"/api/detections/{first}/thumbnail"

    r = api.get(f"/api/detections/{first}/image?boxes=1")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    drawn = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(image))
    assert drawn.shape == original.shape
    # this detection's box (x 0-30, y 20-60) in red, the other one of the same image (x 10-40) in amber (BGR)
    left, right = (int(v) for v in drawn[45, 0]), (int(v) for v in drawn[45, 40])
    blue, _green, red = left
    assert red - blue > 60, drawn[45, 0]
    blue, green, _red = right
    assert green - blue > 60, drawn[45, 40]

    outside = _jpeg(tmp_path / "elsewhere" / "secret.jpg")
    link = s.camera_root / "door" / "link.jpg"
    os.symlink(outside, link)
    for values, url, why in (
        ({"file_path": str(outside)}, "image", "not inside"),
        ({"file_path": str(link)}, "image", "not inside"),
        ({"file_path": str(s.camera_root / "door" / "gone.jpg")}, "image", "gone"),
        ({"file_path": str(outside)}, "image?boxes=1", "not inside"),
        ({"thumbnail_path": str(outside)}, "thumbnail", "not inside"),
        ({"thumbnail_path": str(s.camera_root / "door" / "snap.jpg")}, "thumbnail", "not inside"),
        ({"thumbnail_path": None}, "thumbnail", "has no thumbnail"),
    ):
        _point(s, first, **values)
        r = api.get(f"/api/detections/{first}/{url}")
        assert r.status_code == 404 and why in r.get_json()["detail"], (values, url, r.get_json())
        _point(s, first, file_path=str(image), thumbnail_path=str(thumb))
    assert api.get("/api/detections/999999/image").status_code == 404
    assert api.get(f"/api/detections/{second}/thumbnail").status_code == 404


def test_batches_open_from_redis_and_closed_from_sql(api, s):
    add_camera(s, "door")
    add_camera(s, "yard")
    event_id, closed_id, closed_dets = add_event(s, "door")
    _e2, failed_id, _d = add_event(s, "yard", started=T0 + timedelta(minutes=5))
    with session_scope(s) as session:
        session.get(DetectionBatch, failed_id).status = "failed"
    aggregator = get_aggregator(s)
    with session_scope(s) as session:
        live = Detection(
            camera_id="yard",
            file_path="/x.jpg",
            object_type="cat",
            confidence=0.7,
            bbox_x=1,
            bbox_y=2,
            bbox_width=3,
            bbox_height=4,
        )
        session.add(live)
        session.flush()
        live_id = live.id
    open_id, _n, _created = aggregator.add("yard", [live_id], window=600, idle=300)
    with session_scope(s) as session:
        session.execute(update(Detection).where(Detection.id == live_id).values(batch_id=open_id))

    body = api.get("/api/batches").get_json()
    assert_shape(BatchPage, body)
    assert [b["id"] for b in body["batches"]] == [open_id, failed_id, closed_id]
    assert body["count"] == 3 and body["open_count"] == 1
    opened = body["batches"][0]
    assert opened["status"] == "open" and opened["closes_at"] and opened["closed_at"] is None
    assert opened["detection_count"] == 1 and opened["camera_id"] == "yard"
    assert [b["id"] for b in api.get("/api/batches?status=open").get_json()["batches"]] == [open_id]
    assert [b["id"] for b in api.get("/api/batches?status=failed").get_json()["batches"]] == [failed_id]
    assert [b["id"] for b in api.get("/api/batches?camera_id=door").get_json()["batches"]] == [closed_id]
    second = api.get("/api/batches?limit=1&offset=1").get_json()
    assert [b["id"] for b in second["batches"]] == [failed_id] and second["count"] == 3
    assert [b["id"] for b in api.get("/api/batches?limit=5&offset=2").get_json()["batches"]] == [closed_id]

    detail = api.get(f"/api/batches/{closed_id}").get_json()
    assert_shape(BatchDetail, detail)
    assert detail["event_id"] == event_id and detail["analysis_job_id"] and detail["status"] == "analysed"
    assert detail["detection_ids"] == closed_dets and [d["id"] for d in detail["detections"]] == closed_dets
    live_detail = api.get(f"/api/batches/{open_id}").get_json()
    assert_shape(BatchDetail, live_detail)
    assert live_detail["status"] == "open" and live_detail["detection_ids"] == [live_id]
    assert [d["id"] for d in live_detail["detections"]] == [live_id]

    # closed in Redis, handed off: the SQL record answers (with its analysis job)
    aggregator.close_due(now=time.time() + 3600)
    batch = aggregator.get(open_id)
    record_closed(s, batch, "job-xyz")
    handed = api.get(f"/api/batches/{open_id}").get_json()
    assert handed["status"] == "closed" and handed["analysis_job_id"] == "job-xyz" and handed["closes_at"] is None
    assert api.get("/api/batches?status=open").get_json()["count"] == 0
    assert api.get("/api/batches/nope").status_code == 404
    assert api.get("/api/batches?status=lost").status_code == 400


def test_alert_rules_refuse_object_types_no_detector_reports(client, api_headers):
    from app.pipeline.ai.detectors import CLASS_NAMES

    assert CLASS_NAMES["builtin"] == ("person", "face") and "car" in CLASS_NAMES["http"]
    body = {
        "name": "Dragons",
        "severity": "high",
        "risk_threshold": 50,
        "channels": ["webhook"],
        "object_types": ["Person", "dragon"],
    }
    r = client.post("/api/alerts/rules", json=body, headers=api_headers)
    assert r.status_code == 422, r.get_json()
    assert "object_types" in [e["field"] for e in r.get_json()["errors"]] and "'dragon'" in r.get_json()["detail"]
