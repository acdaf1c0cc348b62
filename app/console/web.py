"""What every console page shares: template helpers, flash messages, redirects back to the page an action came
from, HTML error pages, security headers, and the severity palette as a stylesheet."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Flask, Response, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app.api.kit.current import current_settings, current_version
from app.console import auth
from app.core.errors import ServiceError
from app.core.time import iso_now
from app.pipeline import runtime_config

log = logging.getLogger(__name__)

bp = Blueprint("web", __name__)

# Seconds between the polls of each page's live region. The WebSocket stream will replace these polls where it
# carries the event (docs/console.md, "Live").
POLL_SECONDS = {"queues": 5, "jobs": 5, "job": 3, "pipeline": 4, "alerts": 5, "workers": 5, "system": 15}
PAGES = (
    ("queues.index", "Queues"),
    ("jobs.index", "Jobs"),
    ("pipeline.index", "Pipeline"),
    ("alerts.index", "Alerts"),
    ("workers.index", "Workers"),
    ("system.index", "System"),
)
# What a browser may keep: the static files, the palette (a few seconds) and thumbnails (privately: they are
# shown to signed-in users only, and a live region's every refresh would fetch them again).
CACHEABLE = frozenset({"static", "web.palette", "pipeline.thumbnail"})
# The Content-Security-Policy: scripts, styles and images from the console itself only (htmx is vendored; the
# severity colours come as a stylesheet, not inline styles), no frames, forms post only here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


# ---- actions --------------------------------------------------------------------------------------------------
def ok(message: str) -> None:
    flash(message, "ok")


def failed(message: str) -> None:
    flash(message, "error")


def back(endpoint: str, **values: Any) -> Response:
    """303 to the page the form came from (its `back` field, a console path), else to `endpoint`."""
    target = auth.local_target(request.form.get("back"))
    return redirect(request.script_root + target if target else url_for(endpoint, **values), 303)


def here() -> str:
    """This page's console path with its query, for a form's `back` field."""
    return request.full_path.rstrip("?")


# ---- template helpers ------------------------------------------------------------------------------------------
def _parse(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(value: Any) -> Markup:
    """A time as `<time>`: UTC to the second, with how long ago in its title."""
    dt = _parse(value)
    if dt is None:
        return Markup('<span class="muted">never</span>') if value is None else Markup.escape(str(value))
    shown = dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Markup('<time datetime="{0}" title="{1}">{2}</time>').format(
        dt.isoformat(), ago(time.time() - dt.timestamp()), shown
    )


def since(value: Any) -> str:
    dt = _parse(value)
    return ago(time.time() - dt.timestamp()) if dt else "never"


def duration_ms(value: Any) -> str:
    if value is None:
        return "–"
    ms = float(value)
    if ms >= 60_000:
        return f"{ms / 60_000:.1f} min"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.0f} ms"


def size(value: Any) -> str:
    if value is None:
        return "–"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _globals() -> dict[str, Any]:
    current = getattr(g, "console_user", None)
    return {
        "user": current,
        "can_act": bool(current and current.can_act),
        "csrf_token": auth.csrf_token,
        "pages": PAGES,
        "version": current_version(),
        "here": here,
        "poll_seconds": POLL_SECONDS,
        "now": iso_now,
    }


# ---- errors -----------------------------------------------------------------------------------------------------
def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template(
        "console/error.html", status=status, title=title, message=message, request_id=getattr(g, "request_id", None)
    ), status


def _refused(err: auth.Refused) -> tuple[str, int]:
    return error_page(err.status, err.title, err.message)


def _service_error(err: ServiceError) -> tuple[str, int]:
    titles = {404: "Not found", 409: "Not possible now", 503: "Unavailable"}
    return error_page(err.status, titles.get(err.status, "Refused"), err.message)


def _redis_down(err: redis.RedisError) -> tuple[str, int]:
    log.warning("Redis unavailable on console %s %s: %s", request.method, request.path, err)
    return error_page(
        503, "Redis unavailable", f"Redis did not answer ({type(err).__name__}); the page will work again once it does."
    )


def _database_down(err: OperationalError | InterfaceError) -> tuple[str, int]:
    log.warning("database unavailable on console %s %s: %s", request.method, request.path, err)
    return error_page(503, "Database unavailable", f"The database did not answer ({type(err.orig).__name__}).")


def _http_error(err: HTTPException) -> tuple[str, int]:
    status = err.code or 500
    message = "There is no such console page." if status == 404 else (err.description or err.name)
    return error_page(status, err.name, message)


def _unexpected(err: Exception) -> tuple[str, int]:
    log.exception("unhandled error on console %s %s", request.method, request.path)
    return error_page(
        500, "Something went wrong", "The console failed to answer; quote the request id when reporting it."
    )


# ---- responses --------------------------------------------------------------------------------------------------
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint not in CACHEABLE:
        response.headers["Cache-Control"] = "no-store"  # pages show live state and carry CSRF tokens
    return response


@bp.get("/palette.css")
def palette() -> Response:
    """The severity palette (GET /api/system/severity's colours) as classes: `risk-<level>` sets `--risk`, so
    badges and rows take their colour from the configured palette without inline styles (the CSP forbids them)."""
    definitions = runtime_config.severity_definitions(runtime_config.thresholds(current_settings()))["definitions"]
    css = "\n".join(
        f".risk-{d['severity']} {{ --risk: {d['color']}; }}"
        for d in definitions
        if d["severity"].isalnum() and d["color"].lstrip("#").isalnum()
    )
    return Response(css + "\n", 200, {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "max-age=30"})


@bp.get("/")
def home() -> Response:
    return redirect(url_for("queues.index"))


def init(console: Flask) -> None:
    console.register_blueprint(bp)
    console.context_processor(_globals)
    console.jinja_env.filters.update(when=when, since=since, duration_ms=duration_ms, size=size, pretty=pretty)
    console.after_request(_headers)
    console.register_error_handler(auth.Refused, _refused)
    console.register_error_handler(ServiceError, _service_error)
    console.register_error_handler(redis.RedisError, _redis_down)
    console.register_error_handler(OperationalError, _database_down)
    console.register_error_handler(InterfaceError, _database_down)
    console.register_error_handler(HTTPException, _http_error)
    console.register_error_handler(Exception, _unexpected)
