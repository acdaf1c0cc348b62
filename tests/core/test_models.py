"""Model behaviour on both backends: aware UTC times, JSON, uniqueness, cascades, upserts."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.jobs.archive import job_from_sql, upsert_jobs
from app.models import AuditLog, Camera, Detection, Event, Job, Log, RuntimeConfig


def _camera(session, cid="front_door"):
    cam = Camera(id=cid, name=cid.replace("_", " ").title(), folder_path=f"/cams/{cid}")
    session.add(cam)
    session.flush()
    return cam


def test_camera_detection_event_round_trip(session_factory):
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with session_factory() as s:
        _camera(s)
        det = Detection(
            camera_id="front_door",
            file_path="/cams/front_door/a.jpg",
            object_type="person",
            confidence=0.91,
            bbox_x=1,
            bbox_y=2,
            bbox_width=30,
            bbox_height=40,
            detected_at=t0,
        )
        s.add(det)
        s.flush()
        s.add(
            Event(
                batch_id="b1",
                camera_id="front_door",
                started_at=t0,
                ended_at=t0 + timedelta(seconds=90),
                risk_score=72,
                risk_level="high",
                summary="person at door",
                detection_ids=[det.id],
                detection_count=1,
            )
        )
        s.commit()
    with session_factory() as s:
        det = s.execute(select(Detection)).scalar_one()
        assert det.detected_at == t0 and det.detected_at.tzinfo is not None
        assert det.detected_at.utcoffset() == timedelta(0)
        ev = s.execute(select(Event)).scalar_one()
        assert ev.detection_ids == [det.id] and ev.reviewed is False
        assert ev.created_at.tzinfo is not None


def test_one_event_per_batch(session_factory):
    now = datetime.now(UTC)
    with session_factory() as s:
        _camera(s)
        s.add(
            Event(batch_id="same", camera_id="front_door", started_at=now, ended_at=now, risk_score=1, risk_level="low")
        )
        s.commit()
        s.add(
            Event(batch_id="same", camera_id="front_door", started_at=now, ended_at=now, risk_score=2, risk_level="low")
        )
        with pytest.raises(IntegrityError):
            s.commit()


def test_deleting_a_camera_cascades(session_factory):
    now = datetime.now(UTC)
    with session_factory() as s:
        _camera(s, "yard")
        s.add(
            Detection(
                camera_id="yard",
                file_path="x",
                object_type="car",
                confidence=0.5,
                bbox_x=0,
                bbox_y=0,
                bbox_width=1,
                bbox_height=1,
            )
        )
        s.add(Event(batch_id="b", camera_id="yard", started_at=now, ended_at=now, risk_score=5, risk_level="low"))
        s.commit()
        s.delete(s.get(Camera, "yard"))
        s.commit()
        assert s.scalar(select(func.count()).select_from(Detection)) == 0
        assert s.scalar(select(func.count()).select_from(Event)) == 0


def test_logs_config_and_audit(session_factory):
    with session_factory() as s:
        s.add(
            Log(
                level="ERROR",
                component="detection_worker",
                message="boom",
                request_id="req_1",
                extra={"host": "ai:8001"},
            )
        )
        s.add(RuntimeConfig(key="retention_days", value=14, updated_by="api_key:admin"))
        s.add(AuditLog(action="settings_changed", resource_type="config", details={"retention_days": [30, 14]}))
        s.commit()
    with session_factory() as s:
        assert s.execute(select(Log.extra)).scalar_one() == {"host": "ai:8001"}
        assert s.get(RuntimeConfig, "retention_days").value == 14
        assert s.execute(select(AuditLog.details)).scalar_one() == {"retention_days": [30, 14]}


def test_job_upsert_is_idempotent(session_factory):
    job = {
        "id": "j1",
        "task": "vigil.system.canary",
        "queue": "analysis",
        "state": "active",
        "args": [1],
        "kwargs": {"a": 2},
        "attempts": 1,
        "error": None,
        "traceback": None,
        "result": None,
        "worker": "analysis_worker@h",
        "idempotency_key": None,
        "request_id": "req_1",
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:01Z",
        "finished_at": None,
        "updated_at": "2026-01-01T00:00:01Z",
        "progress": None,
        "eta": None,
    }
    with session_factory() as s:
        upsert_jobs(s, [job])
        s.commit()
        upsert_jobs(s, [dict(job, state="completed", result={"ok": True}, finished_at="2026-01-01T00:00:02Z")])
        s.commit()
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1
        back = job_from_sql(s, "j1")
    assert back["state"] == "completed" and back["result"] == {"ok": True}
    assert back["finished_at"] == "2026-01-01T00:00:02Z" and back["kwargs"] == {"a": 2}
