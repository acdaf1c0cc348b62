"""Delivering notifications: the e-mail (SMTP) and webhook channels.

A delivery either succeeds, fails for good (`Rejected`: the server refused the message or the
address; sending it again would not help), or fails for now (`Unavailable`: timeout, connection
refused, a 4xx SMTP reply, a 5xx HTTP answer), which the task retries with backoff. The channel
is what spec 000 calls the "SMTP Service"; its backlog is the notification queues' waiting jobs.
"""

from __future__ import annotations

import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import requests

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
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.notify_timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise Rejected(f"every recipient refused: {sorted(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        reply = f"SMTP {exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
        if 400 <= exc.smtp_code < 500:
            raise Unavailable(reply) from None
        raise Rejected(reply) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise Rejected(f"SMTP server: {exc}") from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise Unavailable(f"SMTP server unavailable: {type(exc).__name__}: {exc}") from None
    return {
        "channel": "email",
        "delivered_to": sorted(set(recipients) - set(refused)),
        "refused": sorted(refused),
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
    }


def send_webhook(settings: Settings, url: str | None, payload: dict[str, Any]) -> dict[str, Any]:

    if not url:
        raise Rejected("no webhook url")
    body = dict(payload, sent_at=iso_now())
    t0 = time.perf_counter()
    try:
        response = requests.post(
            url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=settings.notify_timeout
        )
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
