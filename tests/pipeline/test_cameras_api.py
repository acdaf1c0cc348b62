"""Cameras (/api/cameras): status from the last upload, counts, rename and disable (audited), a
disabled camera's images recorded but not detected, and delete refused while the camera has data
unless asked to delete it too; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.api.cameras import CameraDeleted, CameraList, CameraOut
from app.core.db import session_scope
from app.models import Alert, AlertCooldown, AlertRule, AuditLog, Camera, Detection, DetectionBatch, Event
from app.pipeline.batches import get_aggregator
from app.pipeline.cameras import OFFLINE_AFTER_SECONDS, SILENT_AFTER_SECONDS
from app.pipeline.detections import process_image
from tests.pipeline.resource_data import add_camera, add_event, assert_shape, client_for

NOW = datetime.now(UTC)


@pytest.fixture
def s(db_url, redis_db, settings, tmp_path):
    return redis_db.settings(
        settings, database_url=db_url, camera_root=tmp_path / "cameras", thumbnail_dir=tmp_path / "thumbs", log_db=False
    )


@pytest.fixture
def api(s):
    return client_for(s)


def test_list_and_get_with_status_from_the_last_upload_and_counts(api, s):
    add_camera(s, "front_door", last_seen=NOW - timedelta(seconds=30))
    add_camera(s, "garden", last_seen=NOW - timedelta(seconds=SILENT_AFTER_SECONDS + 60))
    add_camera(s, "garage", last_seen=NOW - timedelta(seconds=OFFLINE_AFTER_SECONDS + 60), enabled=False)
    add_camera(s, "attic")  # never uploaded
    add_event(s, "front_door", kinds=("person", "face"), reviewed=True, started=NOW - timedelta(hours=1))
    add_event(s, "front_door", kinds=("person",), started=NOW - timedelta(days=3))

    body = api.get("/api/cameras").get_json()
    assert_shape(CameraList, body)
    by_id = {c["id"]: c for c in body["cameras"]}
    assert [c["id"] for c in body["cameras"]] == ["attic", "front_door", "garage", "garden"] and body["count"] == 4
    assert {i: c["status"] for i, c in by_id.items()} == {
        "front_door": "online",
        "garden": "silent",
        "garage": "offline",
        "attic": "offline",
    }
    assert by_id["front_door"]["counts"] == {"events": 2, "unreviewed_events": 1, "detections_24h": 2}
    assert by_id["garden"]["counts"] == {"events": 0, "unreviewed_events": 0, "detections_24h": 0}
    assert by_id["garage"]["enabled"] is False and by_id["attic"]["last_seen_at"] is None
    assert by_id["front_door"]["folder"] == "front_door" and by_id["front_door"]["name"] == "Front Door"
    assert body["silent_after_seconds"] == SILENT_AFTER_SECONDS

    assert [c["id"] for c in api.get("/api/cameras?status=offline").get_json()["cameras"]] == ["attic", "garage"]
    assert [c["id"] for c in api.get("/api/cameras?enabled=false").get_json()["cameras"]] == ["garage"]
    assert api.get("/api/cameras?status=asleep").status_code == 400

    one = api.get("/api/cameras/front_door").get_json()
    assert_shape(CameraOut, one)
    assert one == by_id["front_door"]
    r = api.get("/api/cameras/nowhere")
    assert r.status_code == 404 and "nowhere" in r.get_json()["detail"]


def test_rename_and_disable_are_audited_and_validated(api, api_headers, s):
    add_camera(s, "yard", last_seen=NOW)
    r = api.patch("/api/cameras/yard", json={"name": "  Back yard ", "enabled": False}, headers=api_headers)
    assert r.status_code == 200, r.get_json()
    assert_shape(CameraOut, r.get_json())
    assert r.get_json()["name"] == "Back yard" and r.get_json()["enabled"] is False
    assert api.patch("/api/cameras/yard", json={"name": "Back yard"}, headers=api_headers).status_code == 200
    with session_scope(s) as session:
        entries = list(session.execute(select(AuditLog).where(AuditLog.resource_type == "camera")).scalars())
    assert len(entries) == 1, "a change of nothing writes no audit entry"
    assert entries[0].action == "camera_updated" and entries[0].actor == "api_key:api-key"
    assert entries[0].details == {
        "changes": {"name": {"old": "Yard", "new": "Back yard"}, "enabled": {"old": True, "new": False}}
    }

    for body, field in (
        ({"enabled": "no"}, "enabled"),
        ({"name": ""}, "name"),
        ({"name": None}, None),
        ({"colour": "red"}, "colour"),
    ):
        bad = api.patch("/api/cameras/yard", json=body, headers=api_headers)
        assert bad.status_code == 422, (body, bad.get_json())
        assert field is None or field in [e["field"] for e in bad.get_json()["errors"]]
    assert api.patch("/api/cameras/yard", json={"enabled": True}).status_code == 401
    assert api.patch("/api/cameras/nowhere", json={"enabled": True}, headers=api_headers).status_code == 404


def test_a_disabled_cameras_images_are_recorded_not_detected(s, photos):
    folder = s.camera_root / "porch"
    folder.mkdir(parents=True)
    image = folder / "astro.jpg"
    image.write_bytes(photos["astronaut"].read_bytes())
    add_camera(s, "porch", enabled=False)
    kwargs = dict(camera_id="porch", path=str(image), file_hash=None, seen_at=None, started_at=0.0, first_attempt=True)
    outcome = process_image(s, job_id="job-disabled", **kwargs).as_dict()
    assert outcome["skipped"] == "camera disabled" and outcome["detections_found"] == 0
    with session_scope(s) as session:
        assert session.execute(select(func.count()).select_from(Detection)).scalar_one() == 0
        session.get(Camera, "porch").enabled = True
    outcome = process_image(s, job_id="job-enabled", **kwargs).as_dict()
    assert "skipped" not in outcome and outcome["detections_kept"] >= 1


def _count(s, model, camera_id):
    with session_scope(s) as session:
        return session.execute(select(func.count()).select_from(model).where(model.camera_id == camera_id)).scalar_one()


def test_delete_is_refused_while_the_camera_has_data_unless_asked(api, api_headers, s):
    add_camera(s, "gate", last_seen=NOW)
    ids = [add_event(s, "gate", started=NOW - timedelta(minutes=m))[0] for m in (3, 2, 1)]
    with session_scope(s) as session:
        rule = AlertRule(name="r", severity="high", risk_threshold=0, channels=["webhook"])
        session.add(rule)
        session.flush()
        session.add(
            Alert(rule_id=rule.id, rule_name="r", event_id=ids[0], camera_id="gate", severity="high", risk_score=50)
        )
        session.add(AlertCooldown(rule_id=rule.id, camera_id="gate", last_fired_at=NOW))
    aggregator = get_aggregator(s)
    open_id, _count_, _opened = aggregator.add("gate", [999], window=60, idle=30)

    r = api.delete("/api/cameras/gate", headers=api_headers)
    assert r.status_code == 409, r.get_json()
    body = r.get_json()
    assert "3 events" in body["detail"] and f"ids {ids[2]}, {ids[1]}, {ids[0]}" in body["detail"]
    assert "with_data=true" in body["detail"] and body["data"] == {"events": 3, "detections": 3, "batches": 3}
    assert _count(s, Event, "gate") == 3 and aggregator.open_batch("gate") is not None

    r = api.delete("/api/cameras/gate?with_data=true", headers=api_headers)
    assert r.status_code == 200, r.get_json()
    assert_shape(CameraDeleted, r.get_json())
    assert r.get_json()["data_deleted"] == {"events": 3, "detections": 3, "batches": 3}
    assert r.get_json()["folder_present"] is False
    for model in (Event, Detection, DetectionBatch, Alert, AlertCooldown):
        assert _count(s, model, "gate") == 0, model
    assert aggregator.open_batch("gate") is None and aggregator.get(open_id) is None
    assert api.get("/api/cameras/gate").status_code == 404
    with session_scope(s) as session:
        audit = session.execute(select(AuditLog).where(AuditLog.action == "camera_deleted")).scalar_one()
    assert audit.resource_id == "gate" and audit.details["with_data"] is True

    (s.camera_root / "empty").mkdir(parents=True)
    add_camera(s, "empty")  # no data: deleted without asking, and told its folder makes it again
    r = api.delete("/api/cameras/empty", headers=api_headers)
    assert r.status_code == 200 and r.get_json()["folder_present"] is True and r.get_json()["note"]
    assert api.delete("/api/cameras/empty", headers=api_headers).status_code == 404
    assert api.delete("/api/cameras/gate").status_code == 401
