"""Notification preferences (System Operations API /api/notification-preferences/...): the operations, their
validation and audit, and the delivery decision, on SQLite and PostgreSQL; the decision in the firing path (drop mode)
without workers; and the whole flow with a real notification worker, a real webhook receiver and a real
SMTP server (aiosmtpd) on both databases: quiet hours hold an alert back (recorded, suppressed, nothing
sent), a critical one breaks through, a disabled camera, a camera threshold and the risk filters hold,
deleting the period lets the next alert through and sends the held one."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app import create_app
from app.alerts import alerts, held, preferences
from app.alerts import rules as alert_rules
from app.alerts.preferences import Snapshot, decide
from app.core.db import session_scope
from app.core.migrate import upgrade
from app.core.settings import Settings, replace
from app.jobs.enqueue import enqueue
from app.models import AuditLog, HeldNotification
from app.observability.audit import Audit
from tests.ai_servers import ScriptedServer
from tests.alerts.prefs_helpers import make_event, period_around_now, period_elsewhere
from tests.helpers import settled_job, worker_env
from tests.servers import CeleryWorker, SmtpServer, wait_for

NP = "/api/notification-preferences"
WHO = Audit(actor="test")
MONDAY_NIGHT = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # a Monday, 23:30 UTC
TUESDAY_3AM = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@pytest.fixture
def s(db_url):
    return Settings.from_env(database_url=db_url)


@pytest.fixture
def api(s):
    flask_app = create_app(s)
    flask_app.testing = True
    return flask_app.test_client()


# ---- the decision (no database) ---------------------------------------------------------------------------------
def _period(start, end, days=("mon", "tue", "wed", "thu", "fri", "sat", "sun")):
    return SimpleNamespace(label=f"{start}-{end}", start_time=start, end_time=end, days=list(days))


def _decide(settings=None, prefs=None, camera="cam", risk=70, level="high", severity="high", at=MONDAY_NIGHT):
    return decide(
        settings or Settings.from_env(),
        prefs or Snapshot(),
        camera_id=camera,
        risk_score=risk,
        risk_level=level,
        severity=severity,
        at=at,
    )


def test_the_decision_follows_each_preference_in_order():
    assert _decide().deliver and _decide().reason is None
    assert _decide(prefs=Snapshot(enabled=False)).reason == "disabled"
    off = {"cam": SimpleNamespace(enabled=False, risk_threshold=0)}
    assert _decide(prefs=Snapshot(cameras=off)).reason == "camera_disabled"
    high_bar = {"cam": SimpleNamespace(enabled=True, risk_threshold=80)}
    assert _decide(prefs=Snapshot(cameras=high_bar), risk=79).reason == "below_camera_threshold"
    assert _decide(prefs=Snapshot(cameras=high_bar), risk=80).deliver
    assert _decide(prefs=Snapshot(risk_filters=["critical"]), level="high").reason == "risk_filtered"
    # the first that holds is the reason: disabled before everything else
    everything = Snapshot(enabled=False, cameras=off, risk_filters=[], periods=[_period("22:00:00", "06:00:00")])
    assert _decide(prefs=everything).reason == "disabled"


@pytest.mark.parametrize(
    "period,at,quiet",
    [
        (_period("22:00:00", "06:00:00", ["mon"]), MONDAY_NIGHT, True),
        (_period("22:00:00", "06:00:00", ["mon"]), TUESDAY_3AM, True),  # Monday night wraps into Tuesday
        (_period("22:00:00", "06:00:00", ["tue"]), TUESDAY_3AM, False),  # Tuesday's night starts at 22:00
        (_period("09:00:00", "17:00:00"), MONDAY_NIGHT, False),
        (_period("00:00:00", "00:00:00", ["mon"]), MONDAY_NIGHT, True),  # equal: the whole day
    ],
)
def test_quiet_hours_wrap_midnight(period, at, quiet):
    decision = _decide(prefs=Snapshot(periods=[period]), at=at)
    assert (decision.reason == "quiet_hours") is quiet and decision.deliver is not quiet


def test_quiet_hours_are_read_in_the_site_time_zone_and_critical_breaks_through():
    night = Snapshot(periods=[_period("22:00:00", "06:00:00")])
    tokyo = Settings.from_env({"VIGIL_SITE_TIMEZONE": "Asia/Tokyo"})  # 23:30 UTC is 08:30 in Tokyo
    assert _decide(settings=tokyo, prefs=night).deliver
    critical = _decide(prefs=night, severity="critical")
    assert critical.deliver and critical.breakthrough and critical.quiet_hours == ["22:00:00-06:00:00"]
    assert _decide(prefs=night, level="critical", severity="low").breakthrough  # a critical event counts too
    strict = Settings.from_env({"VIGIL_QUIET_HOURS_CRITICAL_BREAKTHROUGH": "false"})
    assert _decide(settings=strict, prefs=night, severity="critical").reason == "quiet_hours"
    sending = Settings.from_env({"VIGIL_QUIET_HOURS_HELD": "send"})
    assert _decide(settings=sending, prefs=night).hold and not _decide(prefs=night).hold


# ---- the operations -----------------------------------------------------------------------------------------
def test_global_preferences(api, api_headers, s):
    r = api.get(NP)
    assert r.status_code == 200 and r.get_json() == {
        "enabled": True,
        "sound": "default",
        "risk_filters": ["low", "medium", "high", "critical"],
        "updated_at": None,
        "updated_by": None,
    }
    body = {"enabled": True, "sound": "alert", "risk_filters": ["critical", "high", "high"]}
    r = api.put(NP, json=body, headers=api_headers)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["risk_filters"] == ["high", "critical"] and r.get_json()["sound"] == "alert"
    assert api.put(NP, json={"enabled": False}, headers=api_headers).get_json()["sound"] == "alert"  # kept
    assert api.get(NP).get_json()["enabled"] is False and api.get(NP).get_json()["updated_at"]
    for bad in ({"sound": "loud"}, {"risk_filters": ["urgent"]}, {"enabled": "yes"}, {"colour": "red"}):
        r = api.put(NP, json=bad, headers=api_headers)
        assert r.status_code == 422 and r.get_json()["detail"], bad
    assert api.put(NP, json={"enabled": True}).status_code == 401  # writes need a key
    with session_scope(s) as session:
        entries = list(
            session.execute(select(AuditLog).where(AuditLog.action == "notification_preferences_updated")).scalars()
        )
    assert len(entries) == 2 and entries[1].details == {"enabled": {"from": True, "to": False}}


def test_camera_settings(api, api_headers, s):
    make_event(s, "front_door", 50)
    make_event(s, "yard", 50)
    listed = api.get(f"{NP}/cameras").get_json()
    assert listed["count"] == 2 and all(c["enabled"] and not c["configured"] for c in listed["cameras"])
    r = api.put(f"{NP}/cameras/front_door", json={"enabled": True, "risk_threshold": 75}, headers=api_headers)
    assert r.status_code == 200 and r.get_json()["risk_threshold"] == 75 and r.get_json()["configured"]
    r = api.put(f"{NP}/cameras/front_door", json={"enabled": False}, headers=api_headers)
    assert r.get_json()["enabled"] is False and r.get_json()["risk_threshold"] == 75
    assert api.get(f"{NP}/cameras/front_door").get_json()["enabled"] is False
    assert api.get(f"{NP}/cameras/nowhere").status_code == 404
    assert api.put(f"{NP}/cameras/nowhere", json={"enabled": False}, headers=api_headers).status_code == 404
    for bad in ({"risk_threshold": 101}, {"risk_threshold": -1}, {"risk_threshold": "75"}, {"x": 1}):
        assert api.put(f"{NP}/cameras/yard", json=bad, headers=api_headers).status_code == 422, bad
    with session_scope(s) as session:
        actions = [
            a.resource_id for a in session.execute(select(AuditLog)).scalars() if a.action.startswith("camera_n")
        ]
    assert actions == ["front_door", "front_door"]


def test_quiet_hours(api, api_headers, s):
    body = {
        "label": "Night Hours",
        "start_time": "22:00:00",
        "end_time": "06:00",
        "days": ["monday", "Tuesday", "wed", "thursday", "friday", "saturday", "sunday"],
    }
    r = api.post(f"{NP}/quiet-hours", json=body, headers=api_headers)
    assert r.status_code == 201, r.get_json()
    night = r.get_json()
    assert night["end_time"] == "06:00:00" and night["wraps_midnight"] and night["days"][1] == "tuesday"
    overlapping = api.post(f"{NP}/quiet-hours", json={**body, "label": "Late"}, headers=api_headers)
    assert overlapping.status_code == 201
    listed = api.get(f"{NP}/quiet-hours").get_json()
    assert listed["count"] == 2 and listed["timezone"] == s.site_timezone
    for bad in (
        {**body, "start_time": "25:00"},
        {**body, "end_time": "6pm"},
        {**body, "days": ["funday"]},
        {**body, "days": []},
        {**body, "label": ""},
        {"label": "x", "start_time": "01:00"},
    ):
        assert api.post(f"{NP}/quiet-hours", json=bad, headers=api_headers).status_code == 422, bad
    r = api.delete(f"{NP}/quiet-hours/{night['id']}", headers=api_headers)
    assert r.status_code == 200 and r.get_json() == {"id": night["id"], "label": "Night Hours", "deleted": True}
    assert api.delete(f"{NP}/quiet-hours/{night['id']}", headers=api_headers).status_code == 404
    assert api.get(f"{NP}/quiet-hours").get_json()["count"] == 1
    with session_scope(s) as session:
        actions = sorted(a.action for a in session.execute(select(AuditLog)).scalars())
    assert actions == ["quiet_hours_created", "quiet_hours_created", "quiet_hours_deleted"]


def test_config_and_rule_test_reflect_the_preferences(api, api_headers, s):
    config = api.get("/api/notification/config").get_json()
    assert config["notification_enabled"] is True and config["preferences"]["alerts_would_notify"] is True
    period = api.post(f"{NP}/quiet-hours", json=period_around_now(), headers=api_headers).get_json()
    config = api.get("/api/notification/config").get_json()["preferences"]
    assert config["suppressed"] == "quiet_hours" and config["quiet_hours_active"] == ["Now"]
    api.put(NP, json={"enabled": False}, headers=api_headers)
    assert api.get("/api/notification/config").get_json()["notification_enabled"] is False

    rule = alert_rules.create_rule(
        s, {"name": "Any", "severity": "high", "risk_threshold": 0, "channels": ["push"], "cooldown_seconds": 0}, WHO
    )
    make_event(s, "porch", 40)
    r = api.post(f"/api/alerts/rules/{rule['id']}/test", json={}, headers=api_headers)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["results"][0]["notification"]["suppressed"] == "disabled"
    api.put(NP, json={"enabled": True}, headers=api_headers)
    result = api.post(f"/api/alerts/rules/{rule['id']}/test", json={}, headers=api_headers).get_json()["results"][0]
    assert result["notification"]["suppressed"] == "quiet_hours" and result["notification"]["quiet_hours"] == ["Now"]
    api.delete(f"{NP}/quiet-hours/{period['id']}", headers=api_headers)
    result = api.post(f"/api/alerts/rules/{rule['id']}/test", json={}, headers=api_headers).get_json()["results"][0]
    assert result["notification"]["would_notify"] is True


def test_firing_records_a_suppressed_alert_and_queues_nothing(s):
    """Drop mode (the default), in-process: the alert is raised, its channels say why, no job exists."""
    s = replace(s, alert_webhook_url="http://127.0.0.1:9/hook")
    alert_rules.create_rule(
        s, {"name": "Any", "severity": "high", "risk_threshold": 0, "channels": ["webhook"], "cooldown_seconds": 0}, WHO
    )
    preferences.create_quiet_hours(s, period_around_now(), WHO)
    preferences.create_quiet_hours(s, period_elsewhere(), WHO)  # overlapping and other periods are fine
    out = alerts.fire_for_event(s, make_event(s, "gate", 70))
    alert = alerts.get_alert(s, out["alerts"][0])
    assert alert["suppressed"] == "quiet_hours" and alert["status"] == "pending"
    assert alert["deliveries"]["webhook"]["status"] == "suppressed" and "job_id" not in alert["deliveries"]["webhook"]
    with session_scope(s) as session:
        assert session.execute(select(HeldNotification)).first() is None  # dropped, not held
    again = alerts.fire_for_event(s, alert["event_id"])  # re-evaluated: still nothing queued
    assert again["alerts"] == [] and "job_id" not in alerts.get_alert(s, alert["id"])["deliveries"]["webhook"]


def _held_alert(s):
    """An alert quiet hours held back in send mode (in-process), and its period."""
    s = replace(s, alert_webhook_url="http://127.0.0.1:9/hook", quiet_hours_held="send")
    alert_rules.create_rule(
        s, {"name": "Any", "severity": "high", "risk_threshold": 0, "channels": ["webhook"], "cooldown_seconds": 0}, WHO
    )
    period = preferences.create_quiet_hours(s, period_around_now(), WHO)
    alert = alerts.get_alert(s, alerts.fire_for_event(s, make_event(s, "gate", 70))["alerts"][0])
    assert alert["suppressed"] == "quiet_hours" and alert["deliveries"]["webhook"]["status"] == "held"
    return s, alert, period


def _forget_jobs(s, alert_id):
    from app.jobs import ops as job_ops

    for d in alerts.get_alert(s, alert_id)["deliveries"].values():
        if d.get("job_id"):
            job_ops.delete_job(d["job_id"], s)


def test_a_held_alert_waits_is_re_decided_and_an_early_report_is_kept(s, monkeypatch):
    s, alert, period = _held_alert(s)
    assert held.release_due(s) == {"waiting": 1, "sent": 0, "suppressed": 0, "skipped": 0, "failed": 0}
    preferences.delete_quiet_hours(s, period["id"], WHO)

    # the send task reports before the release writes its entries (a fast worker): its word is kept
    real = alerts._enqueue_channels

    def enqueue_and_report(settings, a, event, dest, channels):
        entries, failure = real(settings, a, event, dest, channels)
        for channel, entry in entries.items():
            alerts.record_delivery(settings, a.id, channel, entry["job_id"], delivered=True)
        return entries, failure

    monkeypatch.setattr(alerts, "_enqueue_channels", enqueue_and_report)
    try:
        assert held.release_due(s)["sent"] == 1
    finally:
        _forget_jobs(s, alert["id"])
    released = alerts.get_alert(s, alert["id"])
    assert released["status"] == "delivered" and released["suppressed"] is None
    assert "reason" not in released["deliveries"]["webhook"]
    assert held.release_due(s)["sent"] == 0  # released once


def test_a_held_alert_is_not_sent_when_the_preferences_changed_or_it_was_dismissed(s):
    s, alert, period = _held_alert(s)
    preferences.delete_quiet_hours(s, period["id"], WHO)
    preferences.update_preferences(s, {"enabled": False}, WHO)
    assert held.release_due(s)["suppressed"] == 1
    assert alerts.get_alert(s, alert["id"])["suppressed"] == "disabled"

    preferences.update_preferences(s, {"enabled": True}, WHO)
    preferences.create_quiet_hours(s, period_around_now(), WHO)
    second = alerts.get_alert(s, alerts.fire_for_event(s, make_event(s, "gate", 70))["alerts"][0])
    alerts.dismiss(s, second["id"], WHO)
    with session_scope(s) as session:
        for p in session.execute(select(preferences.QuietHoursPeriod)).scalars():
            session.delete(p)
    assert held.release_due(s)["suppressed"] == 1
    dismissed = alerts.get_alert(s, second["id"])
    assert (
        dismissed["deliveries"]["webhook"]["status"] == "suppressed"
        and "job_id" not in dismissed["deliveries"]["webhook"]
    )


# ---- the whole flow with real workers ------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory):
    """A database, a webhook receiver, an SMTP server and a notification
    worker (VIGIL_QUIET_HOURS_HELD=send) on them, as `make run` starts it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('prefs')}/vigil.db"
    else:
        url = request.getfixturevalue("pg").create_database(f"prefs_{request.param}")
    upgrade(url)
    hook = ScriptedServer(lambda req: (200, {}, 0)).start()
    smtp = SmtpServer().start()
    env = {
        "DATABASE_URL": url,
        "VIGIL_SMTP_HOST": "127.0.0.1",
        "VIGIL_SMTP_PORT": str(smtp.port),
        "VIGIL_SMTP_STARTTLS": "false",
        "VIGIL_ALERT_WEBHOOK_URL": f"{hook.url}/hook",
        "VIGIL_ALERT_EMAIL_RECIPIENTS": "ops@example.com",
        "VIGIL_QUIET_HOURS_HELD": "send",
    }
    # The session's Redis, as the other worker tests here: an in-process enqueue publishes on the Celery
    # app's broker, and no other notification worker runs while this module does.
    worker = CeleryWorker(worker_env(**env), "notification_worker", ["notification:high", "notification"], 2).start()
    settings = Settings.from_env({**os.environ, **env})
    client = create_app(settings).test_client()
    try:
        yield SimpleNamespace(settings=settings, client=client, hook=hook, smtp=smtp, worker=worker)
    finally:
        worker.stop()
        smtp.stop()
        hook.stop()


def _rule(stack, api_headers, camera, severity="high"):
    body = {
        "name": f"{severity} at {camera}",
        "severity": severity,
        "risk_threshold": 0,
        "camera_ids": [camera],
        "channels": ["webhook", "email"],
        "cooldown_seconds": 0,
    }
    r = stack.client.post("/api/alerts/rules", json=body, headers=api_headers)
    assert r.status_code == 201, r.get_json()


def _fire(stack, camera, risk, level=None):
    """An event fired through the worker, as the analysis hands it over; the alert once its fire job is done."""
    event_id = make_event(stack.settings, camera, risk, level)
    job = enqueue("alerts", {"event_id": event_id}, priority="high", settings=stack.settings)
    assert settled_job(job.job_id, 30, registry=_registry(stack))["state"] == "completed"
    found = stack.client.get(f"/api/alerts?camera_id={camera}").get_json()["alerts"]
    return next(a for a in found if a["event_id"] == event_id)


def _registry(stack):
    from app.jobs.registry import get_registry

    return get_registry(stack.settings)


def _sent(stack, alert_id):
    hooks = [r for r in stack.hook.requests if r.path == "/hook" and r.json().get("alert_id") == alert_id]
    mails = [m for m in stack.smtp.mailbox.messages if alert_id in m["data"]]
    return len(hooks), len(mails)


def _delivered(stack, alert):
    def done():
        a = stack.client.get(f"/api/alerts/{alert['id']}").get_json()
        return (
            a
            if a["status"] == "delivered" and all(d["status"] == "delivered" for d in a["deliveries"].values())
            else None
        )

    return wait_for(done, 30, interval=0.05, what=f"alert {alert['id']} delivered")


@pytest.mark.slow
def test_quiet_hours_hold_alerts_critical_breaks_through_and_deleting_the_period_sends(stack, api_headers):
    c = stack.client
    _rule(stack, api_headers, "night_cam")
    _rule(stack, api_headers, "vault_cam", severity="critical")
    period = c.post(f"{NP}/quiet-hours", json=period_around_now(), headers=api_headers).get_json()

    quiet = _fire(stack, "night_cam", 70)
    assert quiet["suppressed"] == "quiet_hours" and quiet["status"] == "pending"  # recorded, marked
    assert {d["status"] for d in quiet["deliveries"].values()} == {"held"}
    critical = _delivered(stack, _fire(stack, "vault_cam", 70))  # breaks through
    assert critical["suppressed"] is None and _sent(stack, critical["id"]) == (1, 1)
    assert _sent(stack, quiet["id"]) == (0, 0)  # nothing sent for the held one

    assert c.delete(f"{NP}/quiet-hours/{period['id']}", headers=api_headers).status_code == 200
    after = _delivered(stack, _fire(stack, "night_cam", 70))  # the next alert goes through
    assert _sent(stack, after["id"]) == (1, 1)

    # the service host's releaser sends the held one now that no period covers the time
    from workers.host.services.held_releaser import HeldReleaser

    stop = threading.Event()
    releaser = HeldReleaser(replace(stack.settings, held_release_interval=0.2))
    threading.Thread(target=releaser.run, args=(stop,), daemon=True).start()
    try:
        released = _delivered(stack, quiet)
    finally:
        stop.set()
    assert released["suppressed"] is None and _sent(stack, quiet["id"]) == (1, 1)
    assert held.release_due(stack.settings)["sent"] == 0  # nothing held any more: sent once


@pytest.mark.slow
def test_camera_settings_and_risk_filters_hold_with_real_workers(stack, api_headers):
    c = stack.client
    _rule(stack, api_headers, "porch_cam")
    _delivered(stack, _fire(stack, "porch_cam", 50))  # the camera exists and notifies by default
    cases = [
        ({"path": f"{NP}/cameras/porch_cam", "json": {"enabled": False}}, 50, None, "camera_disabled"),
        (
            {"path": f"{NP}/cameras/porch_cam", "json": {"enabled": True, "risk_threshold": 90}},
            60,
            None,
            "below_camera_threshold",
        ),
        ({"path": NP, "json": {"risk_filters": ["high", "critical"]}}, 95, "medium", "risk_filtered"),
        ({"path": NP, "json": {"enabled": False}}, 95, "high", "disabled"),
    ]
    try:
        for change, risk, level, reason in cases:
            assert c.put(change["path"], json=change["json"], headers=api_headers).status_code == 200
            alert = _fire(stack, "porch_cam", risk, level)
            assert alert["suppressed"] == reason, alert
            assert {d["status"] for d in alert["deliveries"].values()} == {"suppressed"}
            assert _sent(stack, alert["id"]) == (0, 0)
        c.put(NP, json={"enabled": True}, headers=api_headers)
        passed = _delivered(stack, _fire(stack, "porch_cam", 95, "high"))  # at the threshold and a kept level
        assert _sent(stack, passed["id"]) == (1, 1)
    finally:
        c.put(NP, json={"enabled": True, "risk_filters": ["low", "medium", "high", "critical"]}, headers=api_headers)
        c.put(f"{NP}/cameras/porch_cam", json={"enabled": True, "risk_threshold": 0}, headers=api_headers)
