"""gunicorn settings, derived from Vigil's settings so the port is defined once (VIGIL_PORT)."""

import json
import os

from app.core.settings import get_settings

_settings = get_settings()

bind = f"{_settings.host}:{_settings.port}"
# Threads, not only processes: health checks and Redis reads wait on I/O, and gthread keeps the
# per-request cost low. WEB_CONCURRENCY is gunicorn's own convention for the process count.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("VIGIL_API_THREADS", "8"))
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms req=%({x-request-id}o)s'
# The longest request line gunicorn reads (its maximum); longer is a 414, documented in docs/api.md.
limit_request_line = 8190
# The app is imported once, in the master, and the workers fork with it: what it imported (Flask,
# SQLAlchemy, pydantic's models, Celery) stays in pages shared with the master instead of a copy per
# worker (bench P14: the three API processes fell from 195 to 109 MB PSS). Nothing the app starts at import
# holds a connection or a thread across the fork: engines and Redis pools are reset in the child
# (app/core/db.py, app/core/redis_client.py), the log sink and the timings sampler start their threads
# in the process that uses them, and the live hub starts in `post_worker_init`.
preload_app = True
# gunicornc's control socket would live in $HOME (outside var/) and be shared by every instance on the
# host; nothing in Vigil uses it.
control_socket_disable = True

# What gunicorn answers itself, before Flask sees the request (a request line too long or malformed,
# bad headers): the path's family is unknown then, so the body carries both envelopes' fields.
_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def _json_error(sock, status_int, reason, mesg):
    """gunicorn.util.write_error, in JSON: every error a client sees is in an API envelope."""
    from gunicorn import util

    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps(
        {
            "detail": message,
            "success": False,
            "error": {"code": _ERROR_CODES.get(status_int, "error"), "message": message},
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


def on_starting(server):
    """Fresh start of the API: clear metrics files left by processes that are gone."""
    from app.observability import metrics

    metrics.prepare(_settings)


def post_worker_init(worker):
    """Each worker answers gunicorn's own errors in JSON (see `_json_error`)."""
    from gunicorn import util

    util.write_error = _json_error
    # The live-event hub subscribes at start, so its breakers and /api/system/health/websocket tell
    # the truth before the first WebSocket client arrives (see app/live/hub.py).
    from app.live import hub

    hub.get_hub(worker.app.callable.config["VIGIL_SETTINGS"])


def worker_exit(server, worker):
    """Tell this worker's WebSocket clients it is going away (close code 1001) before it exits."""
    from app.live import hub

    running = hub.running_hub()
    if running is not None:
        running.shutdown(1.0)


def child_exit(server, worker):
    """A gunicorn worker left: its live gauges must stop counting (its counters stay)."""
    from app.observability import metrics

    metrics.process_dead(worker.pid, _settings)
