"""gunicorn settings, derived from Vigil's settings so the port is defined once (VIGIL_PORT)."""
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


def on_starting(server):
    """Fresh start of the API: clear metrics files left by processes that are gone."""
    from app.observability import metrics
    metrics.prepare(_settings)


def child_exit(server, worker):
    """A gunicorn worker left: its live gauges must stop counting (its counters stay)."""
    from app.observability import metrics
    metrics.process_dead(worker.pid, _settings)
