"""The event registry and the stream's HTTP side, in process: every type's example validates against
the schema the registry publishes (both come from one model), and what producers build is checked
through the same models."""

from __future__ import annotations

import jsonschema
import pytest

from app.live import bus, hub
from app.live.registry import CHANNELS, EVENT_TYPES


def test_registry_lists_every_type_with_a_schema_its_example_meets(client):
    r = client.get("/api/system/websocket/events")
    assert r.status_code == 200
    body = r.get_json()
    assert body["channels"] == list(CHANNELS) == ["detections", "events", "alerts", "cameras", "jobs", "system"]
    assert body["total_count"] == len(body["event_types"]) == len(EVENT_TYPES)
    assert body["deprecated_count"] == sum(1 for t in body["event_types"] if t["deprecated"])
    names = {t["type"] for t in body["event_types"]}
    assert {
        "detection.new",
        "event.created",
        "event.updated",
        "alert.created",
        "alert.acknowledged",
        "alert.dismissed",
        "alert.delivered",
        "camera.status_changed",
        "job.progress",
        "job.completed",
        "job.failed",
        "queue.paused",
        "queue.resumed",
        "worker.status_changed",
        "system.health_changed",
    } <= names
    for entry in body["event_types"]:
        assert entry["channel"] in CHANNELS and entry["type"].count(".") == 1 and entry["description"]
        jsonschema.validate(entry["example"], entry["payload_schema"])


def test_a_payload_its_model_refuses_is_a_producer_bug():
    with pytest.raises(ValueError):
        bus.envelope("detection.new", {"detection_id": 1, "camera_id": "x"})
    with pytest.raises(KeyError):
        bus.envelope("detection.vanished", {})
    broadcaster, _ = bus.envelope("system.health_changed", EVENT_TYPES["system.health_changed"].example)
    assert broadcaster == "system"


def test_plain_get_is_told_to_upgrade_and_bad_input_is_a_400(client):
    r = client.get("/ws/events?channels=detections")
    assert r.status_code == 426 and r.headers["Upgrade"] == "websocket" and "WebSocket" in r.get_json()["detail"]
    for bad in ("channels=nope", "min_risk=101", "last_event_id=abc", "colour=red"):
        assert client.get(f"/ws/events?{bad}").status_code == 400, bad
    doc = client.get("/api/openapi.json").get_json()
    assert {"101", "426"} <= set(doc["paths"]["/ws/events"]["get"]["responses"])


def test_filters_and_channels_parse_strictly():
    assert hub.parse_channels("detections,events,,events") == ["detections", "events"]
    with pytest.raises(ValueError):
        hub.parse_channels(["detections", "gossip"])
    assert hub.parse_filters({"camera_id": "a", "min_risk": 40}) == {"camera_id": "a", "min_risk": 40}
    assert hub.parse_filters({"camera_id": None}, {"camera_id": "a", "queue": "q"}) == {"queue": "q"}
    for bad in ({"min_risk": True}, {"min_risk": 101}, {"queue": 5}):
        with pytest.raises(ValueError):
            hub.parse_filters(bad)


def test_query_token_is_minted_for_credentials_only(client, api_headers):
    assert client.post("/api/system/websocket/token").status_code == 401
    r = client.post("/api/system/websocket/token", headers=api_headers)
    assert r.status_code == 200 and r.get_json()["expires_in"] > 0 and r.get_json()["token"]


def test_with_auth_reads_the_stream_wants_headers_or_a_query_token(settings, api_headers):
    from app import create_app
    from app.core.settings import replace

    client = create_app(replace(settings, auth_reads=True)).test_client()
    assert client.get("/ws/events").status_code == 401
    assert client.get("/ws/events?token=not-a-token").status_code == 401
    assert client.get("/ws/events", headers=api_headers).status_code == 426  # let in; then told to upgrade
    token = client.post("/api/system/websocket/token", headers=api_headers).get_json()["token"]
    assert client.get(f"/ws/events?token={token}").status_code == 426
    assert client.get("/api/system/health/websocket").status_code == 200  # a probe: always open
