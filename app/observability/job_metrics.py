"""Job metrics from Celery's signals: jobs published (in whichever process publishes: the API, a
worker, beat), finished by outcome, and task duration (in the worker).

Connected on import; `app.jobs` imports this module beside the registry's receivers, so every
process that can publish counts what it publishes. A receiver swallows its own errors, because a
metric must never fail a job. Per task it costs two dict operations and a few mmap writes, about
36 us (bench/README.md, P7).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

from app.core.context import camera_id_var
from app.observability import metrics

log = logging.getLogger(__name__)

_OUTCOMES = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "REJECTED": "rejected",
    "IGNORED": "ignored",
    "REVOKED": "revoked",
}
_started: dict[str, float] = {}


# --- job metrics --------------------------------------------------------------------------------------------
@signals.before_task_publish.connect(weak=False)
def _published(sender: str | None = None, routing_key: str | None = None, declare: Any = None, **_: Any) -> None:
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
