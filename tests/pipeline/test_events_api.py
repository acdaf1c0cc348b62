"""Events (/api/events): filters with exact counts, offset and cursor pages that walk the same rows,
the detail that links batch, detections and alerts, the operator's review (audited) and the
counts by day, camera and level; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.api.events import EventDetail, EventOut, EventPage, EventStats
from app.core.db import session_scope
from app.models import Alert, AuditLog
from tests.pipeline.resource_data import T0, add_camera, add_event, assert_shape, client_for


@pytest.fixture
def s(db_url, settings, tmp_path):
    from app.core.settings import replace

    return replace(settings, database_url=db_url, camera_root=tmp_path / "cameras", log_db=False)


@pytest.fixture
def api(s):
    return client_for(s)


@pytest.fixture
def events(s):
    """Twelve events on two cameras over three days; the last three share one start time (a cursor
    must not lose or repeat rows that tie on time)."""
    add_camera(s, "door")
    add_camera(s, "yard")
    made = []
    for i in range(12):
        started = T0 + timedelta(hours=6 * min(i, 9))
        camera = "door" if i % 2 == 0 else "yard"
        level, risk = [("low", 10), ("medium", 45), ("high", 70), ("critical", 95)][i % 4]
        kinds = ("person", "face") if i % 3 == 0 else ("car",)
        event_id, _batch, _ids = add_event(
            s, camera, started=started, risk=risk, level=level, kinds=kinds, reviewed=i in (1, 2)
        )
        made.append(
            {
                "id": event_id,
                "camera": camera,
                "level": level,
                "risk": risk,
                "kinds": kinds,
                "started": started,
                "reviewed": i in (1, 2),
            }
        )
    return made


def iso(at):
    return at.isoformat().replace("+00:00", "Z")


def ids(body):
    return [e["id"] for e in body["events"]]


def newest_first(rows):
    return [r["id"] for r in sorted(rows, key=lambda r: (r["started"], r["id"]), reverse=True)]


def test_filters_combine_and_count_exactly(api, events):
    body = api.get("/api/events?limit=5").get_json()
    assert_shape(EventPage, body)
    for event in body["events"]:
        assert_shape(EventOut, event)
    assert body["count"] == 12 and ids(body) == newest_first(events)[:5] and body["next_cursor"]
    cases = {
        "camera_id=door": lambda e: e["camera"] == "door",
        "risk_level=high": lambda e: e["level"] == "high",
        "risk_level=high&risk_level=critical": lambda e: e["level"] in ("high", "critical"),
        "risk_level=low&risk_level=medium": lambda e: e["level"] in ("low", "medium"),
        "min_risk=45&max_risk=70": lambda e: 45 <= e["risk"] <= 70,
        "reviewed=true": lambda e: e["reviewed"],
        "reviewed=false&camera_id=yard": lambda e: not e["reviewed"] and e["camera"] == "yard",
        "object_type=FACE": lambda e: "face" in e["kinds"],
        "object_type=car&risk_level=critical": lambda e: "car" in e["kinds"] and e["level"] == "critical",
        f"start={iso(T0 + timedelta(hours=12))}&end={iso(T0 + timedelta(hours=30))}": lambda e: (
            T0 + timedelta(hours=12) <= e["started"] <= T0 + timedelta(hours=30)
        ),
        "start=2026-11-23T18:00:00": lambda e: e["started"] >= T0 + timedelta(hours=6),  # naive is UTC
    }
    for query, keep in cases.items():
        want = [e for e in events if keep(e)]
        body = api.get(f"/api/events?{query}&limit=100").get_json()
        assert body["count"] == len(want) and ids(body) == newest_first(want), query
    one = api.get("/api/events?object_type=face&limit=1").get_json()["events"][0]
    assert one["object_types"] == ["face", "person"]
    for bad in (
        "risk_level=urgent",
        "risk_level=",
        "risk_level=high,critical",
        "min_risk=101",
        "limit=0",
        "limit=501",
        "reviewed=maybe",
        "start=yesterday",
        "order=sideways",
        "offset=-1",
    ):
        r = api.get(f"/api/events?{bad}")
        assert r.status_code == 400 and r.get_json()["detail"].startswith("Invalid request"), bad


def test_cursor_and_offset_pages_walk_the_same_rows(api, events):
    for order in ("desc", "asc"):
        want = newest_first(events) if order == "desc" else newest_first(events)[::-1]
        by_offset = []
        for offset in range(0, 12, 5):
            body = api.get(f"/api/events?limit=5&offset={offset}&order={order}").get_json()
            by_offset += ids(body)
        by_cursor, cursor, pages = [], "", 0
        while True:
            body = api.get(f"/api/events?limit=5&order={order}{cursor}").get_json()
            assert body["count"] == 12
            by_cursor += ids(body)
            pages += 1
            if not body["next_cursor"]:
                break
            cursor = f"&cursor={body['next_cursor']}"
        assert by_offset == by_cursor == want and pages == 3, order
    # a filter applies to cursor pages too
    first = api.get("/api/events?camera_id=door&limit=2").get_json()
    rest = api.get(f"/api/events?camera_id=door&limit=50&cursor={first['next_cursor']}").get_json()
    assert ids(first) + ids(rest) == newest_first([e for e in events if e["camera"] == "door"])
    assert rest["next_cursor"] is None
    # an offset with a cursor skips rows after it
    skipped = api.get(f"/api/events?camera_id=door&limit=2&offset=1&cursor={first['next_cursor']}").get_json()
    assert ids(skipped) == ids(rest)[1:3]
    for bad in ("cursor=not-a-cursor", "cursor=12_x", "cursor=1_2_3"):
        r = api.get(f"/api/events?{bad}")
        assert r.status_code == 400 and "cursor" in r.get_json()["detail"], bad


def test_every_offset_page_is_its_slice_from_either_end(api, events):
    """Pages past the middle are read from the far end of the index; each must still be the slice
    of the listing at its offset, with a next_cursor exactly when rows follow it."""
    for order in ("desc", "asc"):
        want = newest_first(events) if order == "desc" else newest_first(events)[::-1]
        for limit in (1, 5, 12):
            for offset in range(14):
                body = api.get(f"/api/events?limit={limit}&offset={offset}&order={order}").get_json()
                assert body["count"] == 12 and ids(body) == want[offset : offset + limit], (order, limit, offset)
                follows = offset + limit < 12
                assert (body["next_cursor"] is not None) == follows, (order, limit, offset)
                if follows:
                    rest = api.get(f"/api/events?limit=50&order={order}&cursor={body['next_cursor']}").get_json()
                    assert ids(rest) == want[offset + limit :], (order, limit, offset)
    # with a filter, the far end is the filtered listing's
    door = newest_first([e for e in events if e["camera"] == "door"])
    for offset in range(len(door) + 1):
        body = api.get(f"/api/events?camera_id=door&limit=2&offset={offset}").get_json()
        assert ids(body) == door[offset : offset + 2], offset


def test_detail_links_the_analysis_batch_detections_and_alerts(api, s):
    add_camera(s, "porch")
    event_id, batch_id, detection_ids = add_event(s, "porch", kinds=("person", "dog"), risk=88, level="critical")
    with session_scope(s) as session:
        session.add(
            Alert(rule_name="Night person", event_id=event_id, camera_id="porch", severity="critical", risk_score=88)
        )
    body = api.get(f"/api/events/{event_id}").get_json()
    assert_shape(EventDetail, body)
    assert body["risk_score"] == 88 and body["risk_level"] == "critical" and body["reasoning"] == "because"
    assert body["camera_name"] == "Porch" and body["object_types"] == ["dog", "person"]
    assert body["batch"]["id"] == batch_id and body["batch"]["event_id"] == event_id
    assert body["batch"]["opened_at"] == "2026-11-23T12:00:00Z" and body["batch"]["close_reason"] == "idle"
    assert body["analysis_job_id"] == body["batch"]["analysis_job_id"] and body["analysis_job_id"]
    assert [d["id"] for d in body["detections"]] == detection_ids
    assert body["detections"][0]["bbox"] == {"x": 0, "y": 20, "width": 30, "height": 40}
    assert [a["rule_name"] for a in body["alerts"]] == ["Night person"]
    r = api.get("/api/events/999999")
    assert r.status_code == 404 and "999999" in r.get_json()["detail"]
    assert api.get("/api/events/0").status_code == 400 and api.get("/api/events/abc").status_code == 404


def test_review_and_notes_are_audited(api, api_headers, s):
    add_camera(s, "porch")
    event_id, _b, _d = add_event(s, "porch")
    r = api.patch(f"/api/events/{event_id}", json={"reviewed": True, "notes": "the postman"}, headers=api_headers)
    assert r.status_code == 200, r.get_json()
    assert_shape(EventOut, r.get_json())
    assert r.get_json()["reviewed"] is True and r.get_json()["reviewed_at"] and r.get_json()["notes"] == "the postman"
    assert api.patch(f"/api/events/{event_id}", json={"reviewed": True}, headers=api_headers).status_code == 200
    r = api.patch(f"/api/events/{event_id}", json={"reviewed": False, "notes": ""}, headers=api_headers)
    assert r.get_json()["reviewed"] is False and r.get_json()["reviewed_at"] is None and r.get_json()["notes"] is None
    with session_scope(s) as session:
        entries = list(
            session.execute(select(AuditLog).where(AuditLog.action == "event_updated").order_by(AuditLog.id)).scalars()
        )
    assert [e.details["changes"] for e in entries] == [
        {"reviewed": {"old": False, "new": True}, "notes": {"old": None, "new": "the postman"}},
        {"reviewed": {"old": True, "new": False}, "notes": {"old": "the postman", "new": None}},
    ]
    assert entries[0].resource_id == str(event_id) and entries[0].actor == "api_key:api-key"
    assert api.get("/api/events?reviewed=false").get_json()["count"] == 1
    for body in ({"reviewed": "yes"}, {"reviewed": None}, {"notes": "x" * 10_001}, {"status": "done"}):
        assert api.patch(f"/api/events/{event_id}", json=body, headers=api_headers).status_code == 422, body
    assert api.patch(f"/api/events/{event_id}", json={"reviewed": True}).status_code == 401
    assert api.patch("/api/events/999999", json={"reviewed": True}, headers=api_headers).status_code == 404


def test_stats_by_utc_day_camera_and_level(api, events):
    body = api.get("/api/events/stats?start=2026-11-20T00:00:00Z&end=2026-12-01T00:00:00Z").get_json()
    assert_shape(EventStats, body)
    assert body["total"] == 12 and body["reviewed"] == 2 and body["unreviewed"] == 10
    assert body["by_risk_level"] == {"low": 3, "medium": 3, "high": 3, "critical": 3}
    days = {d["date"]: d["count"] for d in body["by_day"]}
    want: dict[str, int] = {}
    for e in events:
        want[e["started"].date().isoformat()] = want.get(e["started"].date().isoformat(), 0) + 1
    assert days == want and list(days) == sorted(days)
    assert [(c["camera_id"], c["count"], c["name"]) for c in body["by_camera"]] == [
        ("door", 6, "Door"),
        ("yard", 6, "Yard"),
    ]
    assert body["by_camera"][0]["by_risk_level"] == {"low": 3, "medium": 0, "high": 3, "critical": 0}
    yard = api.get("/api/events/stats?camera_id=yard&start=2026-11-20T00:00:00Z").get_json()
    assert yard["total"] == 6 and [c["camera_id"] for c in yard["by_camera"]] == ["yard"]
    recent = api.get("/api/events/stats").get_json()  # by default the 30 days up to now
    start, end = (datetime.fromisoformat(recent[k].replace("Z", "+00:00")) for k in ("start", "end"))
    assert end - start == timedelta(days=30) and abs((end - datetime.now(UTC)).total_seconds()) < 60
    assert recent["total"] == sum(1 for e in events if start <= e["started"] <= end)


def test_the_openapi_document_has_response_schemas_for_the_resources(client):
    doc = client.get("/api/openapi.json").get_json()
    for path, method, model in (
        ("/api/events", "get", "EventPage"),
        ("/api/events/{event_id}", "get", "EventDetail"),
        ("/api/events/{event_id}", "patch", "EventOut"),
        ("/api/events/stats", "get", "EventStats"),
        ("/api/cameras", "get", "CameraList"),
        ("/api/cameras/{camera_id}", "delete", "CameraDeleted"),
        ("/api/detections", "get", "DetectionPage"),
        ("/api/detections/{detection_id}", "get", "DetectionDetail"),
        ("/api/batches", "get", "BatchPage"),
        ("/api/batches/{batch_id}", "get", "BatchDetail"),
    ):
        op = doc["paths"][path][method]
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }, (path, method)
        assert model in doc["components"]["schemas"]
    assert "409" in doc["paths"]["/api/cameras/{camera_id}"]["delete"]["responses"]
    assert doc["paths"]["/api/events/{event_id}"]["patch"]["security"]
