"""Delivering notifications: the e-mail (SMTP) and webhook channels.

A delivery either succeeds, fails for good (`Rejected`: the server refused the message or the
address; sending it again would not help), or fails for now (`Unavailable`: timeout, connection
refused, a 4xx SMTP reply, a 5xx HTTP answer), which the task retries with backoff. The channel
is what the platform API calls the "SMTP Service"; its backlog is the notification queues' waiting jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import requests

from app.alerts import smtp_stats
from app.core.settings import Settings
from app.core.time import iso_now


class Rejected(Exception):
    """Permanent: not retried."""


class Unavailable(Exception):
    """Temporary: retried with backoff."""


def email_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host)


def send_email(settings: Settings, recipients: list[str], subject: str, body: str) -> dict[str, Any]:
    if not email_configured(settings):
        raise Rejected("e-mail is not configured (VIGIL_SMTP_HOST is empty)")
    if not recipients:
        raise Rejected("no recipients")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(body)
    t0 = time.perf_counter()
    source = None  # the connection's local address, for IP reputation (app/alerts/smtp_stats.py)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.notify_timeout) as smtp:
            source = smtp_stats.local_address(smtp.sock)
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        smtp_stats.record(settings, source, "refused")
        raise Rejected(f"every recipient refused: {sorted(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            source = None  # our login, not the server's verdict on the message: no reputation outcome
        reply = f"SMTP {exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
        if 400 <= exc.smtp_code < 500:
            smtp_stats.record(settings, source, "deferred")
            raise Unavailable(reply) from None
        smtp_stats.record(settings, source, "refused")
        raise Rejected(reply) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise Rejected(f"SMTP server: {exc}") from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise Unavailable(f"SMTP server unavailable: {type(exc).__name__}: {exc}") from None
    smtp_stats.record(settings, source, "accepted")
    return {
        "channel": "email",
        "delivered_to": sorted(set(recipients) - set(refused)),
        "refused": sorted(refused),
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
    }


def send_webhook(
    settings: Settings,
    url: str | None,
    payload: dict[str, Any],
    *,
    secret: str | None = None,
    delivery_id: str | None = None,
) -> dict[str, Any]:
    """POST `payload` as JSON. With `secret`, the exact body bytes are signed (HMAC-SHA256, header
    `X-Vigil-Signature: sha256=<hex>`) so a receiver can tell the sender; `delivery_id` goes out as
    `X-Vigil-Delivery`, the same on every retry, so a receiver can drop duplicates."""
    if not url:
        raise Rejected("no webhook url")
    body = dict(payload, sent_at=iso_now())
    data = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["X-Vigil-Signature"] = "sha256=" + hmac.new(secret.encode(), data.encode(), hashlib.sha256).hexdigest()
    if delivery_id:
        headers["X-Vigil-Delivery"] = delivery_id
    t0 = time.perf_counter()
    try:
        response = requests.post(url, data=data, headers=headers, timeout=settings.notify_timeout)
    except requests.Timeout:
        raise Unavailable(f"webhook timed out after {settings.notify_timeout:g}s") from None
    except requests.RequestException as exc:
        raise Unavailable(f"webhook unreachable: {type(exc).__name__}") from None
    if 400 <= response.status_code < 500:
        raise Rejected(f"webhook refused it: HTTP {response.status_code}")
    if response.status_code >= 300:
        raise Unavailable(f"webhook answered HTTP {response.status_code}")
    return {
        "channel": "webhook",
        "status": response.status_code,
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
    }


def deliver(settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one validated `NotificationPayload` (app/jobs/enqueue.py)."""
    if payload["channel"] == "email":
        return send_email(
            settings, payload.get("recipients") or [], payload.get("subject") or "Vigil alert", payload["message"]
        )
    if payload.get("monitoring_event"):  # the AI monitoring API's webhooks (app/monitoring/webhooks.py): signed
        return send_webhook(
            settings,
            payload.get("url"),
            payload["monitoring_event"],
            secret=settings.monitoring_webhook_secret,
            delivery_id=payload["monitoring_event"].get("id"),
        )
    return send_webhook(
        settings,
        payload.get("url"),
        {k: payload.get(k) for k in ("subject", "message", "event_id", "alert_id", "alert") if k in payload},
    )


def probe_smtp(settings: Settings, timeout: float) -> str | None:
    """None when the SMTP server answers a NOOP; else why not."""
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            code, _ = smtp.noop()
        return None if code == 250 else f"NOOP answered {code}"
    except (smtplib.SMTPException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
