"""Notification channel configuration and a test send (004): /api/notification/..."""
from __future__ import annotations

import time
from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.respond import audited
from app.jobs import enqueue
from app.alerts import notifications
from app.core.errors import InvalidInput
from app.jobs.registry import get_registry

bp = Blueprint("notifications", __name__, url_prefix="/api/notification")
TAGS = ["notifications"]
TEST_WAIT_SECONDS = 10.0


class TestBody(BaseModel):
    channel: Literal["email", "webhook", "push"]
    email_recipients: list[str] = Field(default_factory=list, max_length=20)
    webhook_url: str | None = Field(None, max_length=2048)


@bp.get("/config")
@endpoint(summary="Which notification channels are configured (never passwords)", tags=TAGS)
def notification_config():
    s = current_settings()
    email = notifications.email_configured(s)
    return {"notification_enabled": True, "email_configured": email, "webhook_configured": True,
            "push_configured": False, "available_channels": (["email"] if email else []) + ["webhook"],
            "smtp_host": s.smtp_host or None, "smtp_port": s.smtp_port if email else None,
            "smtp_from_address": s.smtp_from if email else None,
            # Where alert rules send (a test send names its own destination instead).
            "alert_email_recipients": len(s.alert_recipients),
            "alert_webhook_configured": bool(s.alert_webhook_url)}


@bp.post("/test")
@endpoint(body=TestBody, summary="Send a test notification through the notification queue", tags=TAGS,
          errors={400: "Channel not available or destination missing"})
def test_notification(body: TestBody):
    """The test goes through the `notification:high` queue like any notification; the answer waits
    up to 10 s for the delivery and says how it went (202 with the job id if it is still pending)."""
    if body.channel == "push":
        raise InvalidInput("The push channel is not available in Vigil", code="channel_unavailable")
    payload = {"channel": body.channel, "subject": "Vigil test notification",
               "message": "This is a test notification from Vigil."}
    if body.channel == "email":
        payload["recipients"] = body.email_recipients
    else:
        payload["url"] = body.webhook_url
    job = enqueue.enqueue("notification", payload, priority="high", settings=current_settings())
    audited("notification_test", "notification", job.job_id, {"channel": body.channel})
    registry = get_registry(current_settings())
    deadline = time.monotonic() + TEST_WAIT_SECONDS
    record = registry.get(job.job_id)
    while record and record["state"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        record = registry.get(job.job_id)
    state = record["state"] if record else "waiting"
    if state not in ("completed", "failed"):
        return {"channel": body.channel, "success": None, "job_id": job.job_id, "status": state,
                "message": "Test notification queued; not delivered yet"}, 202
    return {"channel": body.channel, "success": state == "completed", "job_id": job.job_id, "status": state,
            "message": "Test notification delivered" if state == "completed" else record.get("error"),
            "result": record.get("result")}
