"""Celery signal receivers for observability in worker and beat processes: the database log sink
and the metrics files' life cycle. The job metrics (published, finished, duration) are connected by
`app.observability.job_metrics`, because a publish happens in the API too.

Kept apart from `app/jobs/signals.py` (the job registry) so bookkeeping and observability can fail
independently: a receiver here swallows its own errors, because a metric must never fail a job.
Per task it costs two dict operations and a few mmap writes, about 36 us (bench/README.md, P6).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from celery import signals

from app.celery.queues import group_of
from app.core.settings import get_settings
from app.observability import metrics
from app.observability.logging_setup import db_sink, install_db_sink

log = logging.getLogger(__name__)

_process = {"component": "celery"}


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


@signals.worker_before_create_process.connect(weak=False)
def _before_fork(**_: Any) -> None:
    # Every object the parent has imported goes to the collector's permanent generation, so the
    # children's collections never write to it: its pages stay shared with the parent instead of
    # being copied into each pool process (Python's advice for fork without exec; bench P14).
    gc.freeze()


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
