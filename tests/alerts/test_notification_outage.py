"""An SMTP outage, in a module of its own: the module-scoped notification worker of
test_notifications.py would otherwise take the job to the live server."""

from __future__ import annotations

import pytest

from app import create_app
from app.core.settings import replace
from app.jobs.registry import get_registry
from app.ops import infrastructure
from tests.alerts.helpers import send_notification
from tests.helpers import settled_job, worker_env
from tests.servers import CeleryWorker, SmtpServer, free_port


@pytest.mark.slow
def test_smtp_outage_is_retried_until_the_server_is_back(settings, api_headers, wait):
    port = free_port()
    env = worker_env(VIGIL_SMTP_HOST="127.0.0.1", VIGIL_SMTP_PORT=str(port), VIGIL_SMTP_STARTTLS="false")
    worker = CeleryWorker(env, "notification_worker", ["notification:high"], concurrency=1).start()
    server = None
    try:
        client = create_app(replace(settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)).test_client()
        job_id = send_notification(
            client, api_headers, {"channel": "email", "recipients": ["a@b.example"], "message": "x"}, priority="high"
        )
        registry = get_registry()
        wait(lambda: "retrying" in ((registry.get(job_id) or {}).get("error") or ""), 20, what="a retry")
        health = {s["name"]: s for s in infrastructure.health(replace(settings, smtp_host="127.0.0.1", smtp_port=port))}
        assert health["SMTP Service"]["status"] == "down" and "unavailable" in health["SMTP Service"]["reason"]
        server = SmtpServer(port).start()
        job = settled_job(job_id, 40)
        assert job["state"] == "completed" and len(server.mailbox.messages) == 1
    finally:
        worker.stop()
        if server:
            server.stop()
