"""Logging for every Vigil process: one format, with request and job ids on each line, and the
structured copy of every record in the `logs` table (`app/observability/log_sink.py`)."""

from __future__ import annotations

import logging
import sys

from app.core.context import component_var, job_id_var, request_id_var
from app.core.settings import Settings
from app.observability.log_sink import DatabaseLogHandler

FORMAT = "%(asctime)s %(levelname)s [%(component)s] %(name)s req=%(request_id)s job=%(job_id)s: %(message)s"


class ContextFilter(logging.Filter):
    """Stamps records with the current request id, job id and component."""

    def __init__(self, component: str = "vigil"):
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id_var.get() or "-"
        record.job_id = getattr(record, "job_id", None) or job_id_var.get() or "-"
        record.component = getattr(record, "component", None) or component_var.get() or self.component
        return True


def configure_logging(level: str = "INFO", component: str = "vigil", settings: Settings | None = None) -> None:
    """Install the context-aware console handler on the root logger (idempotent) and, given
    settings with `log_db` on, the database sink at its own level (`VIGIL_LOG_DB_LEVEL`)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_vigil", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._vigil = True  # type: ignore[attr-defined]
        handler.addFilter(ContextFilter(component))
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    handler.setLevel(level)
    levels = [handler.level]
    if settings is not None and settings.log_db:
        sink = install_db_sink(root, settings, component)
        levels.append(sink.level)
    root.setLevel(min(levels))


class SkipJobLifecycle(logging.Filter):
    """Keeps Celery's per-job INFO lines ("Task ... received", "Task ... succeeded in ...") out of
    the database. The job registry already records each job's start, end, worker and result, and
    two rows per job for the same facts cost a quarter of a short job's throughput (bench P1);
    the lines still go to the console, and Celery's failures (ERROR) still go to the database."""

    LOGGERS = frozenset({"celery.worker.strategy", "celery.app.trace"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name not in self.LOGGERS


def install_db_sink(logger: logging.Logger, settings: Settings, component: str) -> DatabaseLogHandler:
    """The process's database sink, attached to `logger` (one sink per process: a second call
    re-points it at `settings.database_url` and updates its component and level)."""

    global _sink
    if _sink is None:
        _sink = DatabaseLogHandler(
            settings.database_url,
            component=component,
            capacity=settings.log_buffer_size,
            flush_interval=settings.log_flush_interval,
            level=settings.log_db_level,
        )
        _sink.addFilter(SkipJobLifecycle())
    else:
        _sink.retarget(settings.database_url)
        _sink.component = component
        _sink.flush_interval = settings.log_flush_interval
        _sink.setLevel(settings.log_db_level)
    if _sink not in logger.handlers:
        logger.addHandler(_sink)
    return _sink


def db_sink() -> DatabaseLogHandler | None:
    """The process's database sink, if one was installed."""
    return _sink


_sink: DatabaseLogHandler | None = None
