"""Notification delivery with a real SMTP server (aiosmtpd), a real webhook receiver and a real
notification worker."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from app.core.migrate import upgrade
from app.core.settings import replace
from tests.alerts.helpers import P, send_notification
from tests.helpers import settled_job, worker_env
from tests.servers import CeleryWorker, SmtpServer


class Hook:
    """A webhook receiver that answers with the statuses it is given, in turn."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.received = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                hook.received.append(json.loads(self.rfile.read(length)))
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def notifier(smtp):
    env = worker_env(VIGIL_SMTP_HOST="127.0.0.1", VIGIL_SMTP_PORT=str(smtp.port), VIGIL_SMTP_STARTTLS="false")
    worker = CeleryWorker(env, "notification_worker", ["notification:high", "notification"], concurrency=2).start()
    yield worker
    worker.stop()


@pytest.fixture
def mail_client(settings, smtp):
    return create_app(replace(settings, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False)).test_client()


@pytest.mark.slow
def test_email_is_delivered_through_smtp(notifier, smtp, mail_client, api_headers):
    job_id = send_notification(
        mail_client,
        api_headers,
        {"channel": "email", "recipients": ["ops@example.com"], "subject": "Person at the gate", "message": "risk 87"},
    )
    job = settled_job(job_id)
    assert job["state"] == "completed" and job["result"]["delivered_to"] == ["ops@example.com"]
    mail = smtp.mailbox.messages[-1]
    assert mail["to"] == ["ops@example.com"] and "Subject: Person at the gate" in mail["data"]
    assert "risk 87" in mail["data"] and mail["from"] == "vigil@localhost"


@pytest.mark.slow
def test_webhook_retries_5xx_and_fails_fast_on_4xx(notifier, mail_client, api_headers):
    flaky = Hook([503, 502, 200])
    refusing = Hook([404])
    try:
        ok = send_notification(
            mail_client, api_headers, {"channel": "webhook", "url": flaky.url, "message": "m", "event_id": 7}
        )
        bad = send_notification(mail_client, api_headers, {"channel": "webhook", "url": refusing.url, "message": "m"})
        ok_job, bad_job = settled_job(ok, 40), settled_job(bad)
        assert ok_job["state"] == "completed" and ok_job["attempts"] == 3 and len(flaky.received) == 3
        assert flaky.received[-1]["event_id"] == 7 and flaky.received[-1]["sent_at"].endswith("Z")
        assert bad_job["state"] == "failed" and "refused" in bad_job["error"] and len(refusing.received) == 1
    finally:
        flaky.close()
        refusing.close()


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"channel": "email", "message": "x"}, "payload.recipients"),
        ({"channel": "email", "message": "x", "recipients": ["not an address"]}, "payload.recipients.0"),
        ({"channel": "webhook", "message": "x"}, "payload.url"),
        ({"channel": "webhook", "message": "x", "url": "file:///etc/passwd"}, "payload.url"),
    ],
)
def test_bad_notification_payloads_are_400(client, api_headers, payload, field):
    r = client.post(f"{P}/jobs", json={"task": "notification", "payload": payload}, headers=api_headers)
    assert r.status_code == 400 and r.get_json()["error"]["details"][0]["field"] == field


def test_notification_config_and_test_endpoint(notifier, mail_client, client, api_headers):
    config = mail_client.get("/api/notification/config").get_json()
    assert config["email_configured"] is True and config["available_channels"] == ["email", "webhook"]
    assert "password" not in json.dumps(config).lower()
    assert config["alert_email_recipients"] == 0 and config["alert_webhook_configured"] is False
    assert client.get("/api/notification/config").get_json()["email_configured"] is False
    hook = Hook([200])
    try:
        r = mail_client.post(
            "/api/notification/test", json={"channel": "webhook", "webhook_url": hook.url}, headers=api_headers
        )
        assert r.status_code == 200 and r.get_json()["success"] is True and len(hook.received) == 1
    finally:
        hook.close()
    r = mail_client.post("/api/notification/test", json={"channel": "push"}, headers=api_headers)
    assert r.status_code == 409 and "push" in r.get_json()["detail"]
    assert mail_client.post("/api/notification/test", json={"channel": "email"}).status_code == 401


def test_a_test_notification_goes_to_the_configured_destination(notifier, smtp, settings, api_headers, tmp_path):
    """Without a destination in the request, the test uses the configured one (the global one, or the
    rule's own with `rule_id`), as alerts do; with none anywhere it is a 409 that says what to set."""
    from app.alerts import destinations
    from app.alerts import rules as alert_rules
    from app.observability.audit import Audit

    s = replace(
        settings,
        database_url=f"sqlite:///{tmp_path}/destinations.db",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
    )
    upgrade(s.database_url)
    client = create_app(s).test_client()
    T = "/api/notification/test"
    for channel in ("webhook", "email"):
        r = client.post(T, json={"channel": channel}, headers=api_headers)
        assert (
            r.status_code == 409
            and r.get_json()["detail"].startswith("No ")
            and "PUT /api/alerts/destinations" in r.get_json()["detail"]
        )
    hook, own = Hook([200]), Hook([200])
    try:
        destinations.update_global(
            s, {"webhook_url": hook.url, "email_recipients": ["ops@example.com"]}, Audit(actor="test")
        )
        r = client.post(T, json={"channel": "webhook"}, headers=api_headers)
        body = r.get_json()
        assert r.status_code == 200 and body["success"] is True and body["destination"] == hook.url, body
        assert body["destination_from"] == "global" and len(hook.received) == 1
        mail = client.post(T, json={"channel": "email"}, headers=api_headers).get_json()
        assert mail["success"] is True and mail["destination"] == "ops@example.com"
        assert smtp.mailbox.messages[-1]["to"] == ["ops@example.com"]

        rule = alert_rules.create_rule(
            s, {"name": "r", "severity": "low", "risk_threshold": 1, "channels": ["webhook"]}, Audit(actor="test")
        )
        destinations.update_rule_destinations(s, rule["id"], {"webhook_url": own.url}, Audit(actor="test"))
        r = client.post(T, json={"channel": "webhook", "rule_id": rule["id"]}, headers=api_headers)
        assert r.get_json()["destination_from"] == "rule" and len(own.received) == 1 and len(hook.received) == 1
        assert (
            client.post(T, json={"channel": "webhook", "rule_id": "no-such-rule"}, headers=api_headers).status_code
            == 404
        )
        config = client.get("/api/notification/config").get_json()
        assert config["webhook_configured"] is True and config["alert_webhook_configured"] is True
        assert config["rules_with_own_destinations"] == 1 and config["alert_channels"]["email"]["ready"] is True
    finally:
        hook.close()
        own.close()
