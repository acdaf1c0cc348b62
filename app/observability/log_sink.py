"""The structured database log sink: every process's log records end up in the `logs` table.

A request or a task must never wait for the database to write its log lines, and a database
outage must not turn into failed requests. So `emit` only turns the record into a row (a dict)
and appends it to an in-memory buffer; a background thread writes the buffer in batches every
`VIGIL_LOG_FLUSH_INTERVAL` seconds (sooner when a batch is full). While the database is down the
writer backs off and keeps the rows; the buffer holds `VIGIL_LOG_BUFFER_SIZE` rows, and while it is
full new records are dropped and counted (`vigil_log_records_dropped_total`): an outage loses at
most what does not fit, never a request.

Fork-aware: Celery's prefork pool and gunicorn fork after logging is configured. A child notices
the new pid on its first record, drops the rows it inherited (the parent writes those) and
starts its own writer. Celery pool children leave through `os._exit`, so `workers/observability`
flushes on `worker_process_shutdown`; other processes flush at exit through `logging.shutdown`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from app.core.context import camera_id_var, component_var, job_id_var, request_id_var
from app.core.db import get_engine
from app.core.settings import Settings, get_settings
from app.models.log import Log
from app.observability import metrics

MAX_MESSAGE = 10_000
MAX_EXTRA_VALUE = 2_000
BATCH_SIZE = 500
MAX_BACKOFF = 10.0

# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "component",
    "request_id",
    "job_id",
    "camera_id",
    "user_id",
    "duration_ms",
    "taskName",
}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:MAX_EXTRA_VALUE]
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)[:MAX_EXTRA_VALUE]
    if len(text) <= MAX_EXTRA_VALUE:
        return json.loads(text)
    return text[:MAX_EXTRA_VALUE] + "...[truncated]"


def _ctx(record: logging.LogRecord, name: str, var) -> str | None:
    value = getattr(record, name, None)
    if value in (None, "-", ""):
        value = var.get() if var is not None else None
    return None if value in (None, "-", "") else str(value)[:64]


def record_to_row(record: logging.LogRecord, component: str) -> dict[str, Any]:
    """The `logs` row for a record: context ids from the record or the current context."""
    message = record.getMessage()
    extra: dict[str, Any] = {
        "logger": record.name,
        "module": record.module,
        "function": record.funcName,
        "line": record.lineno,
        "process": record.process,
        "thread": record.threadName,
    }
    if record.exc_info:
        extra["exception"] = logging.Formatter().formatException(record.exc_info)[-MAX_MESSAGE:]
    elif record.exc_text:
        extra["exception"] = record.exc_text[-MAX_MESSAGE:]
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            extra[key] = _json_safe(value)
    duration = getattr(record, "duration_ms", None)
    data = getattr(record, "data", None)
    if duration is None and isinstance(data, Mapping) and isinstance(data.get("runtime"), (int, float)):
        duration = data["runtime"] * 1000.0  # Celery's "Task ... succeeded in Ns" record
    return {
        "timestamp": datetime.fromtimestamp(record.created, tz=UTC),
        "level": record.levelname[:16],
        "component": (_ctx(record, "component", component_var) or component)[:64],
        "message": message[:MAX_MESSAGE],
        "camera_id": _ctx(record, "camera_id", camera_id_var),
        "request_id": _ctx(record, "request_id", request_id_var),
        "job_id": _ctx(record, "job_id", job_id_var),
        "user_id": _ctx(record, "user_id", None),
        "duration_ms": float(duration) if isinstance(duration, (int, float)) else None,
        "extra": extra,
        "source": "backend",
    }


class DatabaseLogHandler(logging.Handler):
    """Buffers log rows and writes them to the `logs` table from a background thread."""

    def __init__(
        self,
        database_url: str,
        *,
        component: str = "vigil",
        capacity: int = 10_000,
        flush_interval: float = 1.0,
        level: int | str = logging.INFO,
        batch_size: int = BATCH_SIZE,
    ):
        super().__init__(level)
        self.database_url = database_url
        self.component = component
        self.capacity = capacity
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self._pid = -1
        self._closed = False
        self._writer: threading.Thread | None = None
        self._writer_ident: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._inflight = 0  # rows taken out for a write that has not succeeded yet
        self._last_complaint = 0.0

    # ---- hot path ----------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        if self._closed or threading.get_ident() == self._writer_ident:
            return  # the writer's own complaints go to stderr, never back into the buffer
        try:
            row = record_to_row(record, self.component)
        except Exception:
            self.handleError(record)
            return
        if self._pid != os.getpid():
            self._start_writer()
        if len(self._buffer) + self._inflight >= self.capacity:
            self.dropped += 1
            _metric("LOG_DROPPED", "inc")
            return
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    # ---- writer ---------------------------------------------------------------------------------
    def _start_writer(self) -> None:
        with _start_lock:
            if self._pid == os.getpid():
                return
            if self._pid != -1:
                self._reset()  # a forked child: the parent writes what it had buffered
            self._pid = os.getpid()
            self._writer = threading.Thread(target=self._run, name="vigil-log-sink", daemon=True)
            self._writer.start()

    def _run(self) -> None:
        self._writer_ident = threading.get_ident()
        delay = self.flush_interval
        while not self._closed:
            self._wake.wait(delay)
            self._wake.clear()
            delay = self.flush_interval if self._write_pending() else min(max(delay, 0.5) * 2, MAX_BACKOFF)

    def _write_pending(self) -> bool:
        """Write everything buffered; False when the database refused (the rows stay buffered)."""
        with self._write_lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                self._inflight = len(batch)
                try:
                    self._insert(batch)
                except Exception as exc:
                    self._buffer.extendleft(reversed(batch))
                    self._inflight = 0
                    self.failures += 1
                    _metric("LOG_WRITE_FAILURES", "inc")
                    self._complain(exc)
                    _metric("LOG_BUFFERED", "set", len(self._buffer))
                    return False
                self._inflight = 0
                self.written += len(batch)
            _metric("LOG_BUFFERED", "set", 0)
            return True

    def _insert(self, rows: list[dict[str, Any]]) -> None:

        engine = get_engine(_settings_for(self.database_url))
        with engine.begin() as conn:
            conn.execute(insert(Log.__table__), rows)

    def _complain(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_complaint < 60:
            return
        self._last_complaint = now
        sys.stderr.write(
            f"vigil log sink: database write failed ({type(exc).__name__}: {str(exc)[:200]}); "
            f"{len(self._buffer)} records buffered, {self.dropped} dropped so far\n"
        )

    # ---- control -----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._buffer) if self._pid == os.getpid() else 0

    def flush(self, timeout: float = 5.0) -> bool:
        """Write what is buffered now, from the caller's thread; True when the buffer is empty."""
        if self._pid != os.getpid() or not self._buffer:
            return True
        deadline = time.monotonic() + timeout
        while self._buffer and time.monotonic() < deadline:
            if not self._write_pending():
                break
        return not self._buffer

    def retarget(self, database_url: str) -> None:
        """Write to another database from now on (tests build apps on several databases)."""
        if database_url != self.database_url:
            self.flush(timeout=2.0)
            self.database_url = database_url

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True
            self._wake.set()
        super().close()


_start_lock = threading.Lock()
_settings_cache: dict[str, Any] = {}


def _settings_for(database_url: str):

    settings = _settings_cache.get(database_url)
    if settings is None:
        base = get_settings()
        settings = base if base.database_url == database_url else Settings.from_env(database_url=database_url)
        _settings_cache[database_url] = settings
    return settings


def _metric(name: str, op: str, *args: Any) -> None:
    try:
        getattr(getattr(metrics, name), op)(*args)
    except Exception:  # metrics must never break logging
        pass
