"""Runtime config and severity thresholds on SQLite and PostgreSQL: validation, storage, audit."""

import pytest
from sqlalchemy import select

from app import create_app
from app.core.errors import InvalidInput
from app.core.settings import replace
from app.models import AuditLog, RuntimeConfig
from app.pipeline import runtime_config
from app.pipeline.runtime_config import Audit


@pytest.fixture
def api(settings, db_url):
    s = replace(settings, database_url=db_url)
    flask_app = create_app(s)
    flask_app.testing = True
    runtime_config.invalidate()
    yield flask_app.test_client(), s
    runtime_config.invalidate()


def audits(session_factory, resource):
    with session_factory() as s:
        return list(
            s.execute(select(AuditLog).where(AuditLog.resource_type == resource).order_by(AuditLog.id)).scalars()
        )


def test_get_config_defaults(api):
    client, s = api
    body = client.get("/api/system/config").get_json()
    assert body == {
        "app_name": "Vigil",
        "version": "0.1.0",
        "retention_days": 30,
        "batch_window_seconds": 90,
        "batch_idle_timeout_seconds": 30,
        "detection_confidence_threshold": 0.5,
    }


def test_patch_config_stores_and_audits(api, api_headers, session_factory):
    client, s = api
    r = client.patch(
        "/api/system/config",
        json={"retention_days": 14, "detection_confidence_threshold": 0.6},
        headers={**api_headers, "X-Request-ID": "req-cfg-1"},
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["retention_days"] == 14 and body["detection_confidence_threshold"] == 0.6
    assert body["batch_window_seconds"] == 90
    assert client.get("/api/system/config").get_json()["retention_days"] == 14
    with session_factory() as db:
        stored = {row.key: row.value for row in db.execute(select(RuntimeConfig)).scalars()}
    assert stored == {"retention_days": 14, "detection_confidence_threshold": 0.6}
    [entry] = audits(session_factory, "config")
    assert entry.action == "settings_changed" and entry.actor == "api_key:api-key"
    assert entry.request_id == "req-cfg-1"
    assert entry.details == {
        "changes": {
            "retention_days": {"old": 30, "new": 14},
            "detection_confidence_threshold": {"old": 0.5, "new": 0.6},
        }
    }
    # the same values again change nothing and write no second audit entry
    assert client.patch("/api/system/config", json={"retention_days": 14}, headers=api_headers).status_code == 200
    assert len(audits(session_factory, "config")) == 1


@pytest.mark.parametrize(
    "body,field",
    [
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": 366}, "retention_days"),
        ({"retention_days": "14"}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"batch_window_seconds": 0}, "batch_window_seconds"),
        ({"batch_idle_timeout_seconds": 1.5}, "batch_idle_timeout_seconds"),
        ({"detection_confidence_threshold": 1.01}, "detection_confidence_threshold"),
        ({"detection_confidence_threshold": -0.1}, "detection_confidence_threshold"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"retention_days": None}, None),
    ],
)
def test_patch_config_validation_is_422_and_changes_nothing(api, api_headers, session_factory, body, field):
    client, s = api
    r = client.patch("/api/system/config", json=body, headers=api_headers)
    assert r.status_code == 422, r.get_json()
    err = r.get_json()
    assert "detail" in err
    if field:
        assert field in {e["field"] for e in err["errors"]}
    assert audits(session_factory, "config") == []
    assert client.get("/api/system/config").get_json()["retention_days"] == 30


def test_patch_config_needs_credentials(api):
    client, _ = api
    assert client.patch("/api/system/config", json={"retention_days": 3}).status_code == 401
    r = client.patch("/api/system/config", data=b"{nope", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401


def test_patch_config_bad_json_is_400(api, api_headers):
    client, _ = api
    r = client.patch("/api/system/config", data=b"{nope", headers={**api_headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and "detail" in r.get_json()


def test_severity_get_put_and_audit(api, api_headers, session_factory):
    client, s = api
    body = client.get("/api/system/severity").get_json()
    assert body["thresholds"] == {"low_max": 29, "medium_max": 59, "high_max": 84}
    assert [(d["severity"], d["min_score"], d["max_score"]) for d in body["definitions"]] == [
        ("low", 0, 29),
        ("medium", 30, 59),
        ("high", 60, 84),
        ("critical", 85, 100),
    ]
    r = client.put("/api/system/severity", json={"low_max": 20, "medium_max": 45, "high_max": 70}, headers=api_headers)
    assert r.status_code == 200
    assert [(d["severity"], d["min_score"], d["max_score"]) for d in r.get_json()["definitions"]] == [
        ("low", 0, 20),
        ("medium", 21, 45),
        ("high", 46, 70),
        ("critical", 71, 100),
    ]
    assert client.get("/api/system/severity").get_json()["thresholds"]["high_max"] == 70
    [entry] = audits(session_factory, "severity")
    assert entry.action == "settings_changed"
    assert entry.details["changes"]["low_max"] == {"old": 29, "new": 20}
    assert runtime_config.severity_for(71, runtime_config.thresholds(s, fresh=True)) == "critical"


@pytest.mark.parametrize(
    "body",
    [
        {"low_max": 30, "medium_max": 30, "high_max": 80},
        {"low_max": 50, "medium_max": 40, "high_max": 80},
        {"low_max": 10, "medium_max": 40, "high_max": 100},
        {"low_max": -1, "medium_max": 40, "high_max": 80},
        {"low_max": 10, "medium_max": 40},
        {"low_max": "10", "medium_max": 40, "high_max": 80},
    ],
)
def test_severity_must_be_strictly_ordered(api, api_headers, session_factory, body):
    client, _ = api
    r = client.put("/api/system/severity", json=body, headers=api_headers)
    assert r.status_code == 422 and "detail" in r.get_json()
    assert audits(session_factory, "severity") == []


def test_service_level_validation_matches_the_api(settings, db_url):
    s = replace(settings, database_url=db_url)
    with pytest.raises(InvalidInput):
        runtime_config.update_config(s, {"retention_days": 0}, Audit())
    with pytest.raises(InvalidInput):
        runtime_config.update_thresholds(s, {"low_max": 5, "medium_max": 5, "high_max": 6}, Audit())
    assert runtime_config.update_config(s, {"batch_window_seconds": 5}, Audit(actor="cli"))["batch_window_seconds"] == 5
    assert runtime_config.effective(s, fresh=True)["batch_window_seconds"] == 5
