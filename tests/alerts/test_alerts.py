"""Alert rules and alerts (System Operations API /api/alerts/...): matching, cooldown, idempotent firing, delivery
status, acknowledge/dismiss, the rule test, on SQLite and PostgreSQL; and one run of the whole
flow with real workers: a closed batch is analysed, its event fires a rule, the webhook is called
and the alert becomes `delivered` (or `failed` when the receiver refuses it)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app import create_app
from app.alerts import alerts, destinations
from app.alerts import rules as alert_rules
from app.alerts.rules import in_schedule, matches
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.settings import replace
from app.jobs import ops as job_ops
from app.jobs.enqueue import enqueue
from app.jobs.registry import get_registry
from app.models import Alert, AlertDestination, AuditLog, Camera, Detection, DetectionBatch, Event
from app.observability.audit import Audit
from tests.servers import CeleryWorker

R = "/api/alerts/rules"
UTC = UTC
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
WHO = Audit(actor="test")


def at(day: int, hhmm: str) -> datetime:
    """`day` days after Monday 2026-11-23 (0 = mon ... 6 = sun), at HH:MM UTC."""
    h, m = map(int, hhmm.split(":"))
    return MONDAY + timedelta(days=day, hours=h, minutes=m)


def rule_values(**overrides):
    values = {
        "name": "Person at night",
        "severity": "high",
        "risk_threshold": 50,
        "object_types": ["person"],
        "channels": ["webhook"],
        "cooldown_seconds": 0,
    }
    values.update(overrides)
    return values


@pytest.fixture
def s(db_url):
    from app.core.settings import Settings

    return Settings.from_env(database_url=db_url)


@pytest.fixture
def api(s):
    flask_app = create_app(s)
    flask_app.testing = True
    return flask_app.test_client()


@pytest.fixture
def forget_jobs(s):
    """Notification jobs a test enqueues have no consumer in this session: remove them afterwards."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        try:
            job_ops.delete_job(job_id, s)
        except NotFound:
            pass


def make_event(settings, *, camera="front_door", risk=80, kinds=("person",), started=None) -> int:
    started = started or at(0, "12:00")
    batch_id = uuid.uuid4().hex
    with session_scope(settings) as session:
        if session.get(Camera, camera) is None:
            session.add(Camera(id=camera, name=camera.replace("_", " ").title(), folder_path=f"/cams/{camera}"))
            session.flush()
        ids = []
        for kind in kinds:
            d = Detection(
                camera_id=camera,
                file_path=f"/cams/{camera}/x.jpg",
                object_type=kind,
                confidence=0.9,
                bbox_x=0,
                bbox_y=0,
                bbox_width=10,
                bbox_height=10,
                batch_id=batch_id,
                detected_at=started,
            )
            session.add(d)
            session.flush()
            ids.append(d.id)
        event = Event(
            batch_id=batch_id,
            camera_id=camera,
            started_at=started,
            ended_at=started + timedelta(seconds=30),
            risk_score=risk,
            risk_level="high",
            summary=f"{len(kinds)} objects",
            reasoning="",
            detection_ids=ids,
            detection_count=len(ids),
            analyser="builtin",
        )
        session.add(event)
        session.flush()
        return event.id


def alerts_of(settings, event_id=None):
    with session_scope(settings) as session:
        query = select(Alert).order_by(Alert.created_at)
        if event_id is not None:
            query = query.where(Alert.event_id == event_id)
        return list(session.execute(query).scalars())


# ---- matching (no database) ---------------------------------------------------------------------------------
def _rule(**kw):
    base = {"enabled": True, "risk_threshold": 50, "object_types": None, "camera_ids": None, "schedule": None}
    return SimpleNamespace(**{**base, **kw})


EVENT = SimpleNamespace(risk_score=70, camera_id="front_door")


@pytest.mark.parametrize(
    "rule,reason",
    [
        (_rule(), None),
        (_rule(risk_threshold=70), None),  # >= threshold
        (_rule(risk_threshold=71), "below the threshold 71"),
        (_rule(object_types=["car", "person"]), None),
        (_rule(object_types=["car"]), "no object of type car (event has: face, person)"),
        (_rule(camera_ids=["front_door", "yard"]), None),
        (_rule(camera_ids=["yard"]), "camera front_door is not one of"),
        (_rule(enabled=False), "rule is disabled"),
    ],
)
def test_matching_criteria(rule, reason):
    result = matches(rule, EVENT, {"person", "face"}, at(0, "12:00"))
    assert result.matched is (reason is None)
    if reason:
        assert len(result.reasons) == 1 and reason in result.reasons[0]


def test_every_failing_criterion_is_reported():
    rule = _rule(
        enabled=False,
        risk_threshold=90,
        object_types=["car"],
        camera_ids=["yard"],
        schedule={"days": ["sun"], "start_time": "00:00", "end_time": "01:00"},
    )
    reasons = matches(rule, EVENT, set(), at(0, "12:00")).reasons
    assert len(reasons) == 5 and "event has: none" in reasons[2] and "mon 12:00 (UTC)" in reasons[4]


NIGHT_WEEKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "start_time": "22:00", "end_time": "06:00"}


@pytest.mark.parametrize(
    "schedule,when,inside",
    [
        (None, at(6, "03:00"), True),
        ({"days": ["mon"], "start_time": "09:00", "end_time": "17:00"}, at(0, "09:00"), True),  # start inclusive
        ({"days": ["mon"], "start_time": "09:00", "end_time": "17:00"}, at(0, "17:00"), False),  # end exclusive
        ({"days": ["mon"], "start_time": "09:00", "end_time": "17:00"}, at(1, "12:00"), False),  # wrong day
        (NIGHT_WEEKDAYS, at(0, "23:30"), True),  # Monday night
        (NIGHT_WEEKDAYS, at(1, "03:00"), True),  # Tuesday 03:00 belongs to Monday night
        (NIGHT_WEEKDAYS, at(0, "03:00"), False),  # Monday 03:00 belongs to Sunday night: not scheduled
        (NIGHT_WEEKDAYS, at(5, "03:00"), True),  # Saturday 03:00 belongs to Friday night
        (NIGHT_WEEKDAYS, at(5, "23:00"), False),  # Saturday night is not scheduled
        (NIGHT_WEEKDAYS, at(1, "06:00"), False),
        (NIGHT_WEEKDAYS, at(1, "12:00"), False),
        ({"days": ["wed"], "start_time": "00:00", "end_time": "00:00"}, at(2, "13:37"), True),  # whole day
        ({"days": ["wed"], "start_time": "00:00", "end_time": "00:00"}, at(3, "00:00"), False),
    ],
)
def test_schedule_windows_including_ones_that_wrap_midnight(schedule, when, inside):
    assert in_schedule(schedule, when) is inside


def test_schedule_is_read_in_the_site_time_zone():
    nine_to_five = {"days": ["mon"], "start_time": "09:00", "end_time": "17:00"}
    assert not in_schedule(nine_to_five, at(0, "20:00"))
    assert in_schedule(nine_to_five, at(0, "20:00"), ZoneInfo("America/New_York"))  # 15:00 there


# ---- rules: validation and storage --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body,field",
    [
        ({"severity": "high", "risk_threshold": 50, "channels": ["email"]}, "name"),
        (rule_values(risk_threshold=101), "risk_threshold"),
        (rule_values(risk_threshold="75"), "risk_threshold"),
        (rule_values(severity="urgent"), "severity"),
        (rule_values(channels=[]), "channels"),
        (rule_values(channels=["sms"]), "channels.0"),
        (rule_values(object_types=[]), "object_types"),
        (rule_values(camera_ids=["Front Door"]), "camera_ids.0"),
        (rule_values(cooldown_seconds=-1), "cooldown_seconds"),
        (rule_values(schedule={"days": ["mon"], "start_time": "24:00", "end_time": "06:00"}), "schedule.start_time"),
        (rule_values(schedule={"days": ["someday"], "start_time": "22:00", "end_time": "06:00"}), "schedule.days.0"),
        (rule_values(schedule={"days": [], "start_time": "22:00", "end_time": "06:00"}), "schedule.days"),
        (rule_values(threshold=5), "threshold"),
    ],
)
def test_invalid_rules_are_422_naming_the_field(client, api_headers, body, field):
    r = client.post(R, json=body, headers=api_headers)
    assert r.status_code == 422, r.get_json()
    problem = r.get_json()
    assert field in [e["field"] for e in problem["errors"]] and problem["detail"].startswith("Invalid request")


def test_the_service_validates_too(s):
    with pytest.raises(InvalidInput):
        alert_rules.create_rule(s, rule_values(risk_threshold=-5), WHO)
    rule = alert_rules.create_rule(s, rule_values(), WHO)
    with pytest.raises(InvalidInput):
        alert_rules.update_rule(s, rule["id"], {"channels": None}, WHO)


def test_rule_crud_and_audit(api, api_headers, s):
    body = {
        "name": "Critical Person Detection",
        "severity": "critical",
        "risk_threshold": 85,
        "object_types": ["Person"],
        "schedule": {
            "days": ["sunday", "mon", "tue", "wed", "thu", "fri", "sat"],
            "start_time": "00:00",
            "end_time": "06:00",
        },
        "cooldown_seconds": 600,
        "channels": ["email", "webhook"],
    }
    assert api.post(R, json=body).status_code == 401
    r = api.post(R, json=body, headers=api_headers)
    assert r.status_code == 201, r.get_json()
    rule = r.get_json()
    assert uuid.UUID(rule["id"]) and rule["enabled"] is True and rule["camera_ids"] is None
    assert rule["object_types"] == ["person"]
    assert rule["schedule"] == {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start_time": "00:00",
        "end_time": "06:00",
    }
    listed = api.get(R).get_json()
    assert listed["count"] == 1 and listed["rules"] == [rule]
    assert api.get(f"{R}/{rule['id']}").get_json() == rule

    # PUT: the fields sent replace the rule's; the object from GET can be sent back as it is
    r = api.put(
        f"{R}/{rule['id']}",
        json={"enabled": False, "camera_ids": ["front_door"], "schedule": None},
        headers=api_headers,
    )
    updated = r.get_json()
    assert r.status_code == 200 and updated["enabled"] is False and updated["camera_ids"] == ["front_door"]
    assert updated["schedule"] is None and updated["risk_threshold"] == 85 and updated["name"] == body["name"]
    assert api.put(f"{R}/{rule['id']}", json=updated, headers=api_headers).get_json() == updated
    assert api.put(f"{R}/{rule['id']}", json={"severity": None}, headers=api_headers).status_code == 422

    r = api.delete(f"{R}/{rule['id']}", headers=api_headers)
    assert r.status_code == 200 and r.get_json() == {"id": rule["id"], "name": body["name"], "deleted": True}
    for method in ("get", "put", "delete"):
        r = getattr(api, method)(f"{R}/{rule['id']}", json={}, headers=api_headers)
        assert r.status_code == 404 and "No alert rule" in r.get_json()["detail"]
    assert api.get(R).get_json() == {"rules": [], "count": 0}

    with session_scope(s) as session:
        entries = list(
            session.execute(select(AuditLog).where(AuditLog.resource_id == rule["id"]).order_by(AuditLog.id)).scalars()
        )
    assert [e.action for e in entries] == ["alert_rule_created", "alert_rule_updated", "alert_rule_deleted"]
    assert all(e.actor == "api_key:api-key" and e.resource_type == "alert_rule" for e in entries)
    assert entries[1].details["changes"] == {
        "enabled": {"old": True, "new": False},
        "camera_ids": {"old": None, "new": ["front_door"]},
        "schedule": {"old": rule["schedule"], "new": None},
    }


# ---- firing ----------------------------------------------------------------------------------------------------
def test_fire_raises_one_alert_per_rule_and_event_and_enqueues_per_channel(s, forget_jobs):
    s = replace(s, alert_webhook_url="http://127.0.0.1:9/hook")
    hit = alert_rules.create_rule(
        s, rule_values(name="Night", severity="critical", channels=["webhook", "push", "email"]), WHO
    )
    alert_rules.create_rule(s, rule_values(name="Cars", object_types=["car"]), WHO)
    alert_rules.create_rule(s, rule_values(name="Off", enabled=False), WHO)
    low = alert_rules.create_rule(s, rule_values(name="Low", severity="low", risk_threshold=10), WHO)
    event_id = make_event(s, risk=80, kinds=("person", "face"))

    first = alerts.fire_for_event(s, event_id)
    results = {o["rule_id"]: o for o in first["outcomes"]}
    assert first["rules_evaluated"] == 3 and len(first["alerts"]) == 2  # the disabled rule is not evaluated
    assert results[hit["id"]]["result"] == "raised" and results[low["id"]]["result"] == "raised"
    assert [o["result"] for o in first["outcomes"] if o["rule_id"] not in (hit["id"], low["id"])] == ["no_match"]

    by_rule = {a.rule_id: a for a in alerts_of(s, event_id)}
    night = by_rule[hit["id"]]
    forget_jobs.extend(d["job_id"] for a in by_rule.values() for d in a.deliveries.values() if "job_id" in d)
    assert night.status == "pending" and night.severity == "critical" and night.risk_score == 80
    assert night.deliveries["push"] == {
        "status": "unavailable",
        "error": "push notifications are not available in Vigil",
    }
    email = night.deliveries["email"]
    assert email["status"] == "unavailable" and "VIGIL_SMTP_HOST" in email["error"]
    webhook = night.deliveries["webhook"]
    assert webhook["status"] == "queued" and webhook["queue"] == "notification:high"  # critical: high priority
    job = get_registry(s).get(webhook["job_id"])
    assert job["task"] == "vigil.notification.send" and job["kwargs"]["alert_id"] == night.id
    assert job["kwargs"]["url"] == "http://127.0.0.1:9/hook" and job["kwargs"]["event_id"] == event_id
    assert by_rule[low["id"]].deliveries["webhook"]["queue"] == "notification"  # low: normal priority

    again = alerts.fire_for_event(s, event_id)  # a retried or repeated evaluation
    assert again["alerts"] == [] and {o["result"] for o in again["outcomes"]} == {"existing", "no_match"}
    assert len(alerts_of(s, event_id)) == 2
    assert alerts_of(s, event_id)[0].deliveries == by_rule[alerts_of(s, event_id)[0].rule_id].deliveries
    with pytest.raises(NotFound):
        alerts.fire_for_event(s, 999_999)


def test_cooldown_per_rule_and_camera_by_event_time(s):
    rule = alert_rules.create_rule(s, rule_values(channels=["push"], cooldown_seconds=300), WHO)
    other = alert_rules.create_rule(s, rule_values(name="Other", channels=["push"], cooldown_seconds=300), WHO)
    t0 = at(0, "12:00")
    fired = {}
    for label, camera, offset in (
        ("first", "front_door", 0),
        ("within", "front_door", 299),
        ("yard", "yard", 100),
        ("after", "front_door", 300),
        ("older", "front_door", 10),
    ):
        event_id = make_event(s, camera=camera, started=t0 + timedelta(seconds=offset))
        out = alerts.fire_for_event(s, event_id)
        fired[label] = {o["rule_id"]: o["result"] for o in out["outcomes"]}
    assert fired["first"] == {rule["id"]: "raised", other["id"]: "raised"}  # each rule has its own clock
    assert fired["within"] == {rule["id"]: "cooldown", other["id"]: "cooldown"}
    assert fired["yard"][rule["id"]] == "raised"  # each camera has its own clock
    assert fired["after"][rule["id"]] == "raised"  # 300 s after: elapsed
    assert fired["older"][rule["id"]] == "cooldown"  # older than the last alert
    # a changed cooldown applies to the clock at once
    alert_rules.update_rule(s, rule["id"], {"cooldown_seconds": 0}, WHO)
    event_id = make_event(s, started=t0 + timedelta(seconds=301))
    assert alerts.fire_for_event(s, event_id)["outcomes"][0] == {
        "rule_id": rule["id"],
        "result": "raised",
        "alert_id": alerts_of(s, event_id)[0].id,
    }


def test_cooldown_holds_with_several_workers_at_once(s):
    """Eight evaluations of eight events of one camera, started together: exactly one alert."""
    alert_rules.create_rule(s, rule_values(channels=["push"], cooldown_seconds=600), WHO)
    t0 = at(1, "12:00")
    events = [make_event(s, started=t0 + timedelta(seconds=i)) for i in range(8)]
    start = threading.Barrier(len(events))
    results, errors = [], []

    def fire(event_id):
        start.wait()
        try:
            results.append(alerts.fire_for_event(s, event_id)["outcomes"][0]["result"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fire, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(results) == ["cooldown"] * 7 + ["raised"]
    assert len(alerts_of(s)) == 1


@pytest.mark.parametrize("cooldown", [0, 600])
def test_concurrent_evaluations_of_one_event_raise_one_alert(s, cooldown):
    alert_rules.create_rule(s, rule_values(channels=["push"], cooldown_seconds=cooldown), WHO)
    event_id = make_event(s)
    start = threading.Barrier(6)
    results = []

    def fire():
        start.wait()
        results.append(alerts.fire_for_event(s, event_id)["outcomes"][0]["result"])

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["existing"] * 5 + ["raised"] and len(alerts_of(s)) == 1


def test_schedule_firing_only_with_enabled_rules_and_once_per_event(s, forget_jobs):
    event_id = make_event(s)
    batch = uuid.uuid4().hex
    assert alerts.schedule_firing(s, event_id, batch) is None
    rule = alert_rules.create_rule(s, rule_values(enabled=False), WHO)
    assert alerts.schedule_firing(s, event_id, batch) is None
    alert_rules.update_rule(s, rule["id"], {"enabled": True}, WHO)
    job_id = alerts.schedule_firing(s, event_id, batch)
    forget_jobs.append(job_id)
    job = get_registry(s).get(job_id)
    assert job["task"] == "vigil.notification.fire_alerts" and job["queue"] == "notification:high"
    assert job["kwargs"] == {"event_id": event_id}
    assert alerts.schedule_firing(s, event_id, batch) == job_id  # a repeated analysis: same job
    broken = replace(s, database_url="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with pytest.raises(OperationalError):  # raised, so the analysis task retries the hand-over
        alerts.schedule_firing(broken, event_id, batch)


# ---- delivery status ---------------------------------------------------------------------------------------------
def _alert_with(s, channels):
    """The alert of a new rule with these channels, for a new camera (so earlier rules stay quiet)."""
    camera = f"cam_{uuid.uuid4().hex[:8]}"
    alert_rules.create_rule(s, rule_values(channels=channels, camera_ids=[camera]), WHO)
    event_id = make_event(s, camera=camera)
    alerts.fire_for_event(s, event_id)
    (alert,) = alerts_of(s, event_id)
    return alert.id


def test_delivery_reports_move_the_alert(s, forget_jobs):
    s = replace(
        s,
        alert_webhook_url="http://127.0.0.1:9/hook",
        smtp_host="127.0.0.1",
        alert_email_recipients="ops@example.com, guard@example.com",
    )
    alert_id = _alert_with(s, ["email", "webhook"])
    alert = alerts.get_alert(s, alert_id)
    forget_jobs.extend(d["job_id"] for d in alert["deliveries"].values())
    assert alert["status"] == "pending" and {d["status"] for d in alert["deliveries"].values()} == {"queued"}
    job = get_registry(s).get(alert["deliveries"]["email"]["job_id"])
    assert job["kwargs"]["recipients"] == ["ops@example.com", "guard@example.com"]

    after_fail = alerts.record_delivery(s, alert_id, "email", "j1", delivered=False, error="SMTP 550 refused")
    assert after_fail["status"] == "pending"  # the webhook may still make it
    done = alerts.record_delivery(s, alert_id, "webhook", "j2", delivered=True)
    assert (
        done["status"] == "delivered"
        and done["delivered_at"]
        and done["deliveries"]["webhook"]["status"] == "delivered"
        and done["deliveries"]["email"]["error"] == "SMTP 550 refused"
    )

    failing = _alert_with(s, ["webhook", "push"])
    forget_jobs.append(alerts.get_alert(s, failing)["deliveries"]["webhook"]["job_id"])
    assert alerts.record_delivery(s, failing, "webhook", "j3", delivered=False, error="HTTP 404")["status"] == "failed"
    # the job retried by hand, successfully this time
    assert alerts.record_delivery(s, failing, "webhook", "j3", delivered=True)["status"] == "delivered"

    unusable = _alert_with(s, ["push"])
    assert alerts.get_alert(s, unusable)["status"] == "failed"  # nothing could carry it
    with pytest.raises(NotFound):
        alerts.record_delivery(s, str(uuid.uuid4()), "webhook", None, delivered=True)


def test_a_report_that_arrives_before_the_dispatch_is_recorded_is_kept(s):
    alert_rules.create_rule(s, rule_values(channels=["webhook"]), WHO)
    event_id = make_event(s)
    alerts.fire_for_event(s, event_id)  # no webhook URL: unavailable, no job
    alert = alerts_of(s, event_id)[0]
    alerts.record_delivery(s, alert.id, "webhook", "j1", delivered=True)
    alerts._change(s, alert.id, lambda a: alerts._add_deliveries(a, {"webhook": {"status": "queued", "job_id": "j1"}}))
    assert alerts.get_alert(s, alert.id)["deliveries"]["webhook"]["status"] == "delivered"


def test_concurrent_reports_for_one_alert_are_all_kept(s):
    """Three channels' reports written at once from three threads: none overwrites another."""
    alert_rules.create_rule(s, rule_values(channels=["email", "webhook", "push"]), WHO)
    event_id = make_event(s)
    alerts.fire_for_event(s, event_id)
    alert_id = alerts_of(s, event_id)[0].id
    start = threading.Barrier(3)

    def report(channel, delivered):
        start.wait()
        alerts.record_delivery(s, alert_id, channel, f"job-{channel}", delivered=delivered, error=None)

    threads = [threading.Thread(target=report, args=(c, c != "push")) for c in ("email", "webhook", "push")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = alerts.get_alert(s, alert_id)
    assert {c: d["status"] for c, d in final["deliveries"].items()} == {
        "email": "delivered",
        "webhook": "delivered",
        "push": "failed",
    }
    assert final["status"] == "delivered"


# ---- acknowledge and dismiss ------------------------------------------------------------------------------------
def test_acknowledge_and_dismiss_follow_the_status_rules(api, api_headers, s, forget_jobs):
    alert_id = _alert_with(s, ["webhook"])  # webhook not configured: failed
    failed = api.post(f"/api/alerts/{alert_id}/acknowledge", headers=api_headers)
    assert failed.status_code == 409 and failed.get_json()["status"] == "failed"
    assert "only pending or delivered" in failed.get_json()["detail"]
    alerts.record_delivery(s, alert_id, "webhook", "j", delivered=True)

    assert api.post(f"/api/alerts/{alert_id}/acknowledge").status_code == 401
    r = api.post(f"/api/alerts/{alert_id}/acknowledge", headers=api_headers)
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "acknowledged" and body["acknowledged_at"].endswith("Z")
    assert {"id", "status", "acknowledged_at", "rule_id", "event_id", "created_at"} <= set(body)
    assert isinstance(body["event_id"], int) and uuid.UUID(body["id"])
    assert api.post(f"/api/alerts/{alert_id}/acknowledge", headers=api_headers).status_code == 409
    assert alerts.record_delivery(s, alert_id, "webhook", "j", delivered=True)["status"] == "acknowledged"

    r = api.post(f"/api/alerts/{alert_id}/dismiss", headers=api_headers)
    assert r.status_code == 200 and r.get_json()["status"] == "dismissed" and r.get_json()["dismissed_at"]
    assert api.post(f"/api/alerts/{alert_id}/dismiss", headers=api_headers).status_code == 409
    assert api.post(f"/api/alerts/{alert_id}/acknowledge", headers=api_headers).status_code == 409

    pending = _alert_with(replace(s, alert_webhook_url="http://127.0.0.1:9/hook"), ["webhook"])
    forget_jobs.append(alerts.get_alert(s, pending)["deliveries"]["webhook"]["job_id"])
    assert alerts.get_alert(s, pending)["status"] == "pending"
    assert api.post(f"/api/alerts/{pending}/dismiss", headers=api_headers).get_json()["status"] == "dismissed"

    for action in ("acknowledge", "dismiss"):
        r = api.post(f"/api/alerts/{uuid.uuid4()}/{action}", headers=api_headers)
        assert r.status_code == 404 and "No alert" in r.get_json()["detail"]
    with session_scope(s) as session:
        actions = [
            e.action
            for e in session.execute(
                select(AuditLog).where(AuditLog.resource_id == alert_id).order_by(AuditLog.id)
            ).scalars()
        ]
    assert actions == ["alert_acknowledged", "alert_dismissed"]
    with pytest.raises(Conflict):
        alerts.dismiss(s, alert_id, WHO)


def test_a_failed_alert_can_be_dismissed(api, api_headers, s):
    alert_id = _alert_with(s, ["webhook"])  # webhook not configured: failed
    assert alerts.get_alert(s, alert_id)["status"] == "failed"
    r = api.post(f"/api/alerts/{alert_id}/dismiss", headers=api_headers)
    assert r.status_code == 200 and r.get_json()["status"] == "dismissed" and r.get_json()["dismissed_at"]
    again = api.post(f"/api/alerts/{alert_id}/dismiss", headers=api_headers)
    assert again.status_code == 409 and again.get_json()["status"] == "dismissed"
    resend = api.post(f"/api/alerts/{alert_id}/resend", headers=api_headers)
    assert resend.status_code == 409 and "dismissed" in resend.get_json()["detail"]


# ---- re-sending ----------------------------------------------------------------------------------------------------
def _audit(s, resource_id, action=None):
    with session_scope(s) as session:
        query = select(AuditLog).where(AuditLog.resource_id == resource_id).order_by(AuditLog.id)
        if action:
            query = query.where(AuditLog.action == action)
        return list(session.execute(query).scalars())


def test_resend_queues_a_new_attempt_of_each_failed_channel(api, api_headers, s, forget_jobs):
    alert_id = _alert_with(s, ["webhook", "push"])  # no webhook destination yet: every channel unavailable
    url = f"/api/alerts/{alert_id}/resend"
    assert api.post(url).status_code == 401
    r = api.post(url, headers=api_headers)
    body = r.get_json()
    assert r.status_code == 409 and body["status"] == "failed" and "no alert webhook URL" in body["detail"]
    assert set(body["not_resent"]) == {"webhook"}  # push is never re-sent: it has no transport

    destinations.update_global(s, {"webhook_url": "http://127.0.0.1:9/first"}, WHO)
    r = api.post(url, headers=api_headers)
    body = r.get_json()
    assert r.status_code == 202, body
    assert body["resent"] == ["webhook"] and body["not_resent"] == {} and body["status"] == "pending"
    second = body["deliveries"]["webhook"]
    forget_jobs.append(second["job_id"])
    assert second == {"status": "queued", "job_id": second["job_id"], "queue": "notification:high", "attempt": 2}
    assert body["deliveries"]["push"]["status"] == "unavailable"
    job = get_registry(s).get(second["job_id"])
    assert job["kwargs"]["url"] == "http://127.0.0.1:9/first" and job["kwargs"]["alert_id"] == alert_id

    queued = api.post(url, headers=api_headers)  # nothing failed any more
    assert queued.status_code == 409 and "webhook queued" in queued.get_json()["detail"]

    alerts.record_delivery(s, alert_id, "webhook", second["job_id"], delivered=False, error="HTTP 404")
    assert alerts.get_alert(s, alert_id)["status"] == "failed"
    destinations.update_global(s, {"webhook_url": "http://127.0.0.1:9/second"}, WHO)
    start = threading.Barrier(3)
    answers = []

    def resend():
        start.wait()
        answers.append(api.post(url, headers=api_headers))

    threads = [threading.Thread(target=resend) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted = [a.get_json() for a in answers if a.status_code == 202]
    assert accepted and all(a.status_code in (202, 409) for a in answers)
    third = {a["deliveries"]["webhook"]["job_id"] for a in accepted}
    assert len(third) == 1 and {a["deliveries"]["webhook"]["attempt"] for a in accepted} == {3}  # one job
    forget_jobs.extend(third)
    final = alerts.get_alert(s, alert_id)["deliveries"]["webhook"]
    assert final["job_id"] in third and final["attempt"] == 3 and "error" not in final
    assert get_registry(s).get(final["job_id"])["kwargs"]["url"] == "http://127.0.0.1:9/second"

    # the job reports before the re-send records it: its word is kept, numbered as attempt 3
    alerts.record_delivery(s, alert_id, "webhook", final["job_id"], delivered=True)
    alerts._change(s, alert_id, lambda a: alerts._add_deliveries(a, {"webhook": {**final}}))
    assert alerts.get_alert(s, alert_id)["deliveries"]["webhook"]["status"] == "delivered"

    entries = _audit(s, alert_id, "alert_resent")
    assert len(entries) == 1 + len(accepted) and all(e.actor == "api_key:api-key" for e in entries)
    assert entries[0].details["channels"]["webhook"]["attempt"] == 2
    assert entries[0].details["channels"]["webhook"]["previous_status"] == "unavailable"
    assert entries[-1].details["channels"]["webhook"]["previous_error"] == "HTTP 404"
    assert api.post(f"/api/alerts/{uuid.uuid4()}/resend", headers=api_headers).status_code == 404


def test_a_push_only_alert_has_nothing_to_resend(api, api_headers, s):
    alert_id = _alert_with(s, ["push"])
    r = api.post(f"/api/alerts/{alert_id}/resend", headers=api_headers)
    assert r.status_code == 409 and r.get_json()["status"] == "failed" and "no failed channel" in r.get_json()["detail"]


def test_evaluating_the_event_again_resends_a_failed_alert(s, forget_jobs):
    rule = alert_rules.create_rule(s, rule_values(channels=["webhook"]), WHO)
    event_id = make_event(s)
    alerts.fire_for_event(s, event_id)
    (alert,) = alerts_of(s, event_id)
    assert alert.status == "failed" and alert.deliveries["webhook"]["status"] == "unavailable"
    assert alerts.fire_for_event(s, event_id)["outcomes"] == [
        {"rule_id": rule["id"], "result": "existing", "alert_id": alert.id}
    ]  # still nowhere to send

    destinations.update_global(s, {"webhook_url": "http://127.0.0.1:9/hook"}, WHO)
    again = alerts.fire_for_event(s, event_id)
    assert (
        again["outcomes"]
        == [{"rule_id": rule["id"], "result": "existing", "alert_id": alert.id, "resent": ["webhook"]}]
        and again["alerts"] == []
    )
    (after,) = alerts_of(s, event_id)
    forget_jobs.append(after.deliveries["webhook"]["job_id"])
    assert after.status == "pending" and after.deliveries["webhook"]["attempt"] == 2
    assert alerts.fire_for_event(s, event_id)["outcomes"][0]["result"] == "existing"  # pending: left alone
    assert alerts_of(s, event_id)[0].deliveries == after.deliveries
    (entry,) = _audit(s, alert.id, "alert_resent")
    assert entry.actor == alerts.EVALUATION.actor


def test_an_attempt_queued_before_its_destination_changed_stays_the_attempt(s, forget_jobs):
    """A dispatch whose record was lost (the database went away after the enqueue) runs again after
    the destination changed: the attempt's job exists, so it is recorded instead of a second one."""
    old = replace(s, alert_webhook_url="http://127.0.0.1:9/old")
    alert_id = _alert_with(old, ["webhook"])
    queued = alerts.get_alert(s, alert_id)["deliveries"]["webhook"]
    forget_jobs.append(queued["job_id"])
    alerts._change(s, alert_id, lambda a: setattr(a, "deliveries", {}))  # the lost record
    destinations.update_global(s, {"webhook_url": "http://127.0.0.1:9/new"}, WHO)
    again, resent = alerts.dispatch(s, alert_id)
    assert again["deliveries"]["webhook"]["job_id"] == queued["job_id"] and resent == []
    assert get_registry(s).get(queued["job_id"])["kwargs"]["url"] == "http://127.0.0.1:9/old"


# ---- destinations ----------------------------------------------------------------------------------------------------
def test_destinations_are_seeded_from_the_environment_stored_per_rule_and_audited(api, api_headers, s, forget_jobs):
    s = replace(
        s,
        alert_webhook_url="https://hooks.example.com/services/T0/secret-token",
        alert_email_recipients="ops@example.com",
        smtp_host="127.0.0.1",
    )
    flask_app = create_app(s)
    flask_app.testing = True
    api = flask_app.test_client()
    D = "/api/alerts/destinations"

    seeded = api.get(D, headers=api_headers).get_json()["global"]
    assert seeded["source"] == "environment" and seeded["email_recipients"] == ["ops@example.com"]
    assert seeded["webhook_url"] == "https://hooks.example.com/services/T0/secret-token"
    assert seeded["webhook_url_masked"] is False
    anonymous = api.get(D).get_json()["global"]  # reads are open: the token is not
    assert anonymous["webhook_url"] == "https://hooks.example.com/…" and anonymous["webhook_url_masked"] is True
    assert api.get(D, headers={"X-API-Key": "wrong"}).get_json()["global"]["webhook_url_masked"] is True

    assert api.put(D, json={"webhook_url": "https://new.example.com/h"}).status_code == 401
    r = api.put(D, json={"webhook_url": "https://new.example.com/h"}, headers=api_headers)
    stored = r.get_json()
    assert r.status_code == 200 and stored["source"] == "stored" and stored["updated_by"] == "api_key:api-key"
    assert stored["email_recipients"] == ["ops@example.com"]  # left out: the environment's, now stored
    assert stored["environment"]["webhook_url"] == "https://hooks.example.com/services/T0/secret-token"
    assert api.put(D, json={"webhook_url": "https://new.example.com/h"}, headers=api_headers).get_json() == stored

    rule = api.post(R, json=rule_values(channels=["email", "webhook"]), headers=api_headers).get_json()
    assert rule["warnings"] == []
    own = api.put(
        f"{R}/{rule['id']}/destinations", json={"email_recipients": ["night@example.com"]}, headers=api_headers
    ).get_json()
    assert own["email_recipients"] == ["night@example.com"] and own["webhook_url"] is None
    assert own["effective"] == {
        "email_recipients": ["night@example.com"],
        "email_from": "rule",
        "webhook_url": "https://new.example.com/h",
        "webhook_from": "global",
    }
    listed = api.get(D, headers=api_headers).get_json()
    assert [x["rule_id"] for x in listed["rules"]] == [rule["id"]]

    event_id = make_event(s)
    alerts.fire_for_event(s, event_id)
    (alert,) = alerts_of(s, event_id)
    forget_jobs.extend(d["job_id"] for d in alert.deliveries.values())
    registry = get_registry(s)
    assert registry.get(alert.deliveries["email"]["job_id"])["kwargs"]["recipients"] == ["night@example.com"]
    assert registry.get(alert.deliveries["webhook"]["job_id"])["kwargs"]["url"] == "https://new.example.com/h"

    back = api.put(f"{R}/{rule['id']}/destinations", json={"email_recipients": None}, headers=api_headers).get_json()
    assert back["effective"]["email_from"] == "global" and api.get(D).get_json()["rules"] == []
    reset = api.delete(D, headers=api_headers).get_json()
    assert reset["source"] == "environment" and reset["email_recipients"] == ["ops@example.com"]
    assert api.delete(D, headers=api_headers).status_code == 200  # nothing stored: nothing to forget

    actions = [e.action for e in _audit(s, "global")]
    assert actions == ["alert_destinations_updated", "alert_destinations_reset"]  # the repeated PUT wrote none
    first = _audit(s, "global")[0].details
    assert first["seeded_from_environment"] is True and set(first["changes"]) == {"webhook_url"}
    rule_audit = _audit(s, rule["id"], "alert_rule_destinations_updated")
    assert [e.details["changes"]["email_recipients"]["new"] for e in rule_audit] == [["night@example.com"], None]

    api.put(f"{R}/{rule['id']}/destinations", json={"webhook_url": "https://rule.example.com/x"}, headers=api_headers)
    api.delete(f"{R}/{rule['id']}", headers=api_headers)
    assert api.get(D).get_json()["rules"] == []  # deleted with its rule
    with session_scope(s) as session:
        assert session.get(AlertDestination, rule["id"]) is None


@pytest.mark.parametrize(
    "body,field",
    [
        ({"email_recipients": ["not an address"]}, "email_recipients.0"),
        ({"email_recipients": ["a@b.example\n"]}, "email_recipients.0"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": "http://"}, "webhook_url"),
        ({"webhook_url": "https://example.com/a b"}, "webhook_url"),
        ({"email_recipients": [f"u{i}@example.com" for i in range(101)]}, "email_recipients"),
        ({"recipients": ["a@b.example"]}, "recipients"),
    ],
)
def test_invalid_destinations_are_422_naming_the_field(client, api_headers, body, field):
    for path in ("/api/alerts/destinations", f"{R}/{uuid.uuid4()}/destinations"):
        r = client.put(path, json=body, headers=api_headers)
        assert r.status_code == 422 and field in [e["field"] for e in r.get_json()["errors"]], r.get_json()
    assert client.put(f"{R}/{uuid.uuid4()}/destinations", json={}, headers=api_headers).status_code == 404
    r = client.put(f"{R}/{uuid.uuid4()}/destinations", json={"email_recipients": []}, headers=api_headers)
    assert r.status_code == 422  # null (not []) goes back to the global ones


def test_a_rule_with_a_channel_it_cannot_use_is_kept_with_a_warning(api, api_headers, s):
    r = api.post(R, json=rule_values(channels=["email", "webhook", "push"]), headers=api_headers)
    rule = r.get_json()
    assert r.status_code == 201 and [w.split(":")[0] for w in rule["warnings"]] == ["email", "webhook", "push"]
    assert "VIGIL_SMTP_HOST" in rule["warnings"][0] and "PUT /api/alerts/destinations" in rule["warnings"][1]
    assert rule["warnings"][2] == "push: push notifications are not available in Vigil"
    api.put(f"{R}/{rule['id']}/destinations", json={"webhook_url": "https://rule.example.com/x"}, headers=api_headers)
    assert [w.split(":")[0] for w in api.get(f"{R}/{rule['id']}").get_json()["warnings"]] == ["email", "push"]
    assert api.get(R).get_json()["rules"][0]["warnings"] == api.get(f"{R}/{rule['id']}").get_json()["warnings"]


def test_the_notification_config_has_one_truth_for_the_webhook(api, api_headers, s):
    def config():
        return api.get("/api/notification/config").get_json()

    before = config()
    assert before["webhook_configured"] is False and before["alert_webhook_configured"] is False
    assert before["destinations_source"] == "environment" and before["alert_channels"]["webhook"]["ready"] is False
    assert before["alert_channels"]["push"] == {
        "ready": False,
        "problem": "push notifications are not available in Vigil",
    }
    destinations.update_global(
        s, {"webhook_url": "https://hooks.example.com/x", "email_recipients": ["a@b.example"]}, WHO
    )
    after = config()
    assert after["webhook_configured"] is True and after["alert_webhook_configured"] is True
    assert after["alert_email_recipients"] == 1 and after["destinations_source"] == "stored"
    assert after["alert_channels"]["webhook"] == {"ready": True, "problem": None}
    assert "VIGIL_SMTP_HOST" in after["alert_channels"]["email"]["problem"]


def test_a_rule_test_time_at_the_edge_of_the_calendar_is_judged(api, api_headers, s):
    rule = alert_rules.create_rule(
        s, rule_values(schedule={"days": ["mon"], "start_time": "00:00", "end_time": "06:00"}), WHO
    )
    make_event(s)
    for when in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00"):
        r = api.post(f"{R}/{rule['id']}/test", json={"test_time": when}, headers=api_headers)
        assert r.status_code == 200, r.get_json()


def test_list_and_get_alerts(api, s):
    alert_rules.create_rule(s, rule_values(name="A", severity="low", channels=["push"]), WHO)
    alert_rules.create_rule(s, rule_values(name="B", severity="critical", channels=["push"]), WHO)
    first, second = make_event(s, camera="front_door"), make_event(s, camera="yard")
    for event_id in (first, second):
        alerts.fire_for_event(s, event_id)
    everything = api.get("/api/alerts").get_json()
    assert everything["count"] == 4 and len(everything["alerts"]) == 4 and everything["limit"] == 50
    assert [a["event_id"] for a in everything["alerts"]][:2] == [second, second]  # newest first
    critical = api.get("/api/alerts?severity=critical&camera_id=yard").get_json()
    assert critical["count"] == 1 and critical["alerts"][0]["rule_name"] == "B"
    page = api.get("/api/alerts?limit=1&offset=1&status=failed").get_json()
    assert page["count"] == 4 and len(page["alerts"]) == 1
    assert api.get("/api/alerts?status=lost").status_code == 400
    one = everything["alerts"][0]
    assert api.get(f"/api/alerts/{one['id']}").get_json() == one
    assert api.get(f"/api/alerts/{uuid.uuid4()}").status_code == 404


def test_deleting_a_rule_keeps_its_alerts(s):
    rule = alert_rules.create_rule(s, rule_values(channels=["push"], cooldown_seconds=60), WHO)
    event_id = make_event(s)
    alerts.fire_for_event(s, event_id)
    alert_rules.delete_rule(s, rule["id"], WHO)
    kept = alerts_of(s, event_id)[0]
    assert kept.rule_id is None and kept.rule_name == "Person at night"


# ---- the rule test ----------------------------------------------------------------------------------------------
def test_rule_test_reports_each_event_and_raises_nothing(api, api_headers, s):
    rule = alert_rules.create_rule(
        s,
        rule_values(
            risk_threshold=75,
            camera_ids=["front_door"],
            schedule={"days": ["tue"], "start_time": "22:00", "end_time": "06:00"},
            cooldown_seconds=3600,
        ),
        WHO,
    )
    night = make_event(s, risk=90, started=at(2, "03:00"))  # Wednesday 03:00: Tuesday night
    day = make_event(s, risk=90, started=at(2, "12:00"))
    weak = make_event(s, risk=40, kinds=("cat",), camera="yard", started=at(2, "03:30"))
    url = f"{R}/{rule['id']}/test"

    r = api.post(url, json={"event_ids": [night, day, weak, 999_999]}, headers=api_headers)
    body = r.get_json()
    assert r.status_code == 200, body
    results = {x["event_id"]: x for x in body["results"]}
    assert body["events_tested"] == 3 and body["events_matched"] == 1 and body["events_not_found"] == [999_999]
    assert results[night]["matched"] is True and results[night]["reasons"] == []
    assert results[day]["matched"] is False and "outside the schedule" in results[day]["reasons"][0]
    assert len(results[weak]["reasons"]) == 3 and results[weak]["object_types"] == ["cat"]

    # "would it fire at 03:00 on Wednesday?" for every event, the cooldown ignored
    r = api.post(url, json={"event_ids": [night, day], "test_time": "2026-11-25T03:00:00Z"}, headers=api_headers)
    assert r.get_json()["events_matched"] == 2 and r.get_json()["test_time"] == "2026-11-25T03:00:00Z"
    latest = api.post(url, json={"limit": 2}, headers=api_headers).get_json()
    assert [x["event_id"] for x in latest["results"]] == [weak, day]
    assert alerts_of(s) == []  # nothing raised, nothing sent

    assert api.post(url, json={"limit": 0}, headers=api_headers).status_code == 422
    assert api.post(url, json={"event_ids": ["x"]}, headers=api_headers).status_code == 422
    assert api.post(f"{R}/{uuid.uuid4()}/test", json={}, headers=api_headers).status_code == 404
    assert api.post(url, json={}).status_code == 401


def test_the_openapi_document_describes_the_rule_body(client):
    doc = client.get("/api/openapi.json").get_json()
    create = doc["paths"]["/api/alerts/rules"]["post"]
    assert "201" in create["responses"] and "422" in create["responses"]
    assert {"404", "409"} <= set(doc["paths"]["/api/alerts/{alert_id}/acknowledge"]["post"]["responses"])
    resend = doc["paths"]["/api/alerts/{alert_id}/resend"]["post"]["responses"]
    assert {"202", "404", "409"} <= set(resend) and "content" in resend["202"]
    schemas = doc["components"]["schemas"]
    update = schemas[
        doc["paths"]["/api/alerts/rules/{rule_id}"]["put"]["requestBody"]["content"]["application/json"]["schema"][
            "$ref"
        ].rsplit("/", 1)[1]
    ]
    assert update["properties"]["name"]["type"] == "string" and "default" not in update["properties"]["name"]
    assert "anyOf" in update["properties"]["schedule"]  # null clears it: nullable
    offset = [p for p in doc["paths"]["/api/alerts"]["get"]["parameters"] if p["name"] == "offset"][0]
    assert offset["schema"]["maximum"] <= 10**9
    for path, method in (
        ("/api/alerts/destinations", "get"),
        ("/api/alerts/destinations", "put"),
        ("/api/alerts/rules/{rule_id}/destinations", "put"),
        ("/api/notification/config", "get"),
        ("/api/notification/test", "post"),
        ("/api/alerts/rules", "get"),
    ):
        ok = doc["paths"][path][method]["responses"]
        assert any(code.startswith("2") and "content" in answer for code, answer in ok.items()), (path, method)
    links = doc["paths"]["/api/alerts/rules"]["post"]["responses"]["201"]["links"]
    assert {"GetRule", "UpdateRule", "DeleteRule", "TestRule"} <= set(links)


# ---- end to end ---------------------------------------------------------------------------------------------------
def _closed_batch(camera: str) -> str:
    """A batch closed the way the batch closer leaves it: its row and its detections, no event yet."""
    now = datetime.now(UTC)
    batch_id = uuid.uuid4().hex
    with session_scope() as session:
        session.add(Camera(id=camera, name="Gate", folder_path=f"/cams/{camera}"))
        session.flush()
        for i in range(2):
            session.add(
                Detection(
                    camera_id=camera,
                    file_path=f"/cams/{camera}/{i}.jpg",
                    object_type="person",
                    confidence=0.92,
                    bbox_x=10,
                    bbox_y=10,
                    bbox_width=80,
                    bbox_height=200,
                    batch_id=batch_id,
                    detected_at=now - timedelta(seconds=5 - i),
                )
            )
        session.add(
            DetectionBatch(
                id=batch_id,
                camera_id=camera,
                status="closed",
                close_reason="idle",
                detection_count=2,
                opened_at=now - timedelta(seconds=5),
                last_detection_at=now - timedelta(seconds=4),
                closed_at=now,
            )
        )
    return batch_id


@pytest.mark.slow
def test_a_closed_batch_becomes_an_event_an_alert_and_a_webhook_call(
    celery_workers, scripted_server, client, api_headers, wait
):
    camera = f"gate_{uuid.uuid4().hex[:6]}"
    hook = scripted_server(lambda req: (404 if "Refused" in req.json()["subject"] else 200, {}, 0))
    from tests.helpers import worker_env

    notifier = CeleryWorker(
        worker_env(VIGIL_ALERT_WEBHOOK_URL=f"{hook.url}/hook"),
        "notification_worker",
        ["notification:high", "notification"],
        concurrency=2,
    ).start()
    rules = []
    try:
        for name in ("Person at the gate", "Refused hook"):
            r = client.post(
                R,
                json={
                    "name": name,
                    "severity": "critical",
                    "risk_threshold": 0,
                    "object_types": ["person"],
                    "camera_ids": [camera],
                    "cooldown_seconds": 60,
                    "channels": ["webhook", "push"],
                },
                headers=api_headers,
            )
            assert r.status_code == 201, r.get_json()
            rules.append(r.get_json()["id"])
        batch_id = _closed_batch(camera)
        analysis = enqueue("analysis", {"batch_id": batch_id, "camera_id": camera})
        registry = get_registry()
        done = wait(
            lambda: (registry.get(analysis.job_id) or {}).get("state") == "completed" and registry.get(analysis.job_id),
            60,
            what="the analysis",
        )
        event_id = done["result"]["event_id"]
        assert done["result"]["created"] is True and done["result"]["alerts_job_id"]

        def settled():
            found = client.get(f"/api/alerts?camera_id={camera}").get_json()["alerts"]
            return len(found) == 2 and all(a["status"] in ("delivered", "failed") for a in found) and found

        by_rule = {a["rule_name"]: a for a in wait(settled, 60, interval=0.1, what="both alerts settled")}
        good, refused = by_rule["Person at the gate"], by_rule["Refused hook"]
        assert good["status"] == "delivered" and good["event_id"] == event_id and good["delivered_at"]
        assert good["deliveries"]["webhook"]["status"] == "delivered"
        assert good["deliveries"]["push"]["status"] == "unavailable"
        assert good["deliveries"]["webhook"]["queue"] == "notification:high"
        assert refused["status"] == "failed" and "404" in refused["deliveries"]["webhook"]["error"]
        calls = [req.json() for req in hook.requests if req.path == "/hook"]
        assert len(calls) == 2 and {c["alert_id"] for c in calls} == {good["id"], refused["id"]}
        assert all(c["event_id"] == event_id and "risk" in c["message"] for c in calls)
        assert all(
            c["alert"]["camera_id"] == camera
            and c["alert"]["risk_score"] == done["result"]["risk_score"]
            and c["alert"]["severity"] == "critical"
            for c in calls
        )
        fire_job = wait(
            lambda: (
                (registry.get(done["result"]["alerts_job_id"]) or {}).get("state") == "completed"
                and registry.get(done["result"]["alerts_job_id"])
            ),
            10,
            what="the fire job's record",
        )
        assert fire_job["queue"] == "notification:high" and fire_job["result"]["alerts"]

        # the same batch analysed again: same event, no new alert, no second call
        again = enqueue("analysis", {"batch_id": batch_id, "camera_id": camera})
        result = wait(
            lambda: (registry.get(again.job_id) or {}).get("state") == "completed" and registry.get(again.job_id),
            60,
            what="the repeated analysis",
        )["result"]
        assert result["created"] is False and result["alerts_job_id"] == done["result"]["alerts_job_id"]
        assert client.get(f"/api/alerts?camera_id={camera}").get_json()["count"] == 2 and len(hook.requests) == 2

        r = client.post(f"/api/alerts/{good['id']}/acknowledge", headers=api_headers)
        assert r.status_code == 200 and r.get_json()["status"] == "acknowledged"
    finally:
        for rule_id in rules:
            client.delete(f"{R}/{rule_id}", headers=api_headers)
        notifier.stop()
