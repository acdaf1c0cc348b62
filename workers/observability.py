"""Celery signal receivers for observability: the database log sink in every worker and beat
process, and the job metrics (published, finished by outcome, task duration).

Kept apart from `workers/signals.py` (the job registry) so bookkeeping and observability can fail
independently: a receiver here swallows its own errors, because a metric must never fail a job.
Per task it costs two dict operations and a few mmap writes, about 36 us (bench/README.md, P6).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals

from app.context import camera_id_var
from app.logging_config import db_sink, install_db_sink
from app.queues import group_of
from app.services import metrics
from app.settings import get_settings

log = logging.getLogger(__name__)

_OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried", "REJECTED": "rejected",
             "IGNORED": "ignored", "REVOKED": "revoked"}
_process = {"component": "celery"}
_started: dict[str, float] = {}


def _level(value: Any) -> int:
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value or "INFO").upper())
    return level if isinstance(level, int) else logging.INFO


# --- logging ------------------------------------------------------------------------------------------
@signals.celeryd_init.connect(weak=False)
def _worker_identity(sender: str | None = None, **_: Any) -> None:
    # Fires before Celery sets up logging: the group name (`detection_worker`) becomes the component.
    if sender:
        _process["component"] = group_of(sender)


def _attach_sink(logger: logging.Logger, loglevel: Any) -> None:
    settings = get_settings()
    if not settings.log_db:
        return
    level = _level(loglevel)
    for handler in logger.handlers:  # keep the console at Celery's level while the logger opens up
        if handler.level == logging.NOTSET:
            handler.setLevel(level)
    sink = install_db_sink(logger, settings, _process["component"])
    logger.setLevel(min(level, sink.level))


@signals.after_setup_logger.connect(weak=False)
def _root_logger(logger: logging.Logger | None = None, loglevel: Any = None, **_: Any) -> None:
    if logger is not None:
        _attach_sink(logger, loglevel)


@signals.after_setup_task_logger.connect(weak=False)
def _task_logger(logger: logging.Logger | None = None, loglevel: Any = None, **_: Any) -> None:
    if logger is not None:  # Celery's task logger does not propagate to the root
        _attach_sink(logger, loglevel)


@signals.beat_init.connect(weak=False)
def _beat_start(**_: Any) -> None:
    _process["component"] = "beat"
    sink = db_sink()
    if sink is not None:
        sink.component = "beat"
    metrics.prepare()


@signals.worker_init.connect(weak=False)
def _worker_start(**_: Any) -> None:
    metrics.prepare()


def _flush_and_leave() -> None:
    sink = db_sink()
    if sink is not None:
        sink.flush(timeout=5.0)
    metrics.process_dead(os.getpid())


@signals.worker_process_shutdown.connect(weak=False)
def _child_exit(**_: Any) -> None:
    _flush_and_leave()  # pool children leave through os._exit: no atexit, so flush here


@signals.worker_shutdown.connect(weak=False)
def _worker_exit(**_: Any) -> None:
    _flush_and_leave()


# --- job metrics --------------------------------------------------------------------------------------------
@signals.before_task_publish.connect(weak=False)
def _published(sender: str | None = None, routing_key: str | None = None, declare: Any = None,
               **_: Any) -> None:
    try:
        queue = declare[0].name if declare else routing_key
        metrics.JOBS_PUBLISHED.labels(queue or "none", sender or "none").inc()
    except Exception:
        log.debug("publish metric failed", exc_info=True)


@signals.task_prerun.connect(weak=False)
def _prerun(task_id: str | None = None, kwargs: Any = None, **_: Any) -> None:
    _started[task_id] = time.perf_counter()
    camera = kwargs.get("camera_id") if isinstance(kwargs, dict) else None
    camera_id_var.set(camera if isinstance(camera, str) else None)


@signals.task_postrun.connect(weak=False)
def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id, None)
    camera_id_var.set(None)
    try:
        queue = (task.request.delivery_info or {}).get("routing_key") or "none"
        metrics.JOBS.labels(queue, task.name, _OUTCOMES.get(state or "", str(state).lower())).inc()
        if started is not None:
            metrics.TASK_DURATION.labels(queue, task.name).observe(time.perf_counter() - started)
    except Exception:
        log.debug("task metrics failed", exc_info=True)


@signals.task_revoked.connect(weak=False)
def _revoked(request: Any = None, sender: Any = None, **_: Any) -> None:
    try:
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or "none"
        name = getattr(sender, "name", None) or getattr(request, "task_name", None) or "none"
        metrics.JOBS.labels(queue, name, "revoked").inc()
    except Exception:
        log.debug("revoke metric failed", exc_info=True)
