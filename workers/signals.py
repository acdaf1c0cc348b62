"""Celery signal receivers that keep the job registry current.

They run in whichever process the signal fires in: `before_task_publish` in the API (or a worker
or beat that sends a task), the rest in the worker. A registry write that fails is logged and
swallowed: bookkeeping must never turn a good job into a failed one.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import signals

from app.context import REQUEST_ID_HEADER, job_id_var, request_id_var
from app.services.registry import get_registry

log = logging.getLogger(__name__)


def _safe(fn):
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("job registry update failed in %s", fn.__name__, exc_info=True)
    wrapper.__name__ = fn.__name__
    return wrapper


@signals.before_task_publish.connect(weak=False)
@_safe
def on_publish(sender: str | None = None, body: Any = None, exchange: str | None = None,
               routing_key: str | None = None, headers: dict | None = None, declare: Any = None,
               **_: Any) -> None:
    headers = headers if headers is not None else {}
    job_id = headers.get("id")
    if not job_id:
        return
    request_id = headers.get(REQUEST_ID_HEADER) or request_id_var.get()
    if request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id  # travels with the message into the worker
    queue = declare[0].name if declare else routing_key
    args, kwargs = ([], {})
    if isinstance(body, (list, tuple)) and len(body) >= 2:
        args, kwargs = body[0], body[1]
    get_registry().record_published(
        job_id, task=headers.get("task") or sender or "", queue=queue or "", args=args, kwargs=kwargs,
        eta=headers.get("eta"), request_id=request_id,
        idempotency_key=headers.get("vigil_idempotency_key"),
        reset_attempts=bool(headers.get("vigil_reset_attempts")),
    )


@signals.task_prerun.connect(weak=False)
@_safe
def on_prerun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None,
              **_: Any) -> None:
    request = task.request
    job_id_var.set(task_id)
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (request.headers or {}).get(REQUEST_ID_HEADER)
    request_id_var.set(request_id)
    delivery = request.delivery_info or {}
    get_registry().record_started(task_id, worker=request.hostname, task=task.name,
                                  queue=delivery.get("routing_key"), args=args, kwargs=kwargs)


@signals.task_success.connect(weak=False)
@_safe
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    get_registry().record_succeeded(sender.request.id, result)


@signals.task_failure.connect(weak=False)
@_safe
def on_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
               einfo: Any = None, **_: Any) -> None:
    message = f"{type(exception).__name__}: {exception}" if exception is not None else "failed"
    get_registry().record_failed(task_id, message, str(einfo) if einfo is not None else None)


@signals.task_retry.connect(weak=False)
@_safe
def on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    get_registry().record_retry(request.id, f"retrying: {reason}")


@signals.task_revoked.connect(weak=False)
@_safe
def on_revoked(sender: Any = None, request: Any = None, terminated: bool = False, signum: Any = None,
               expired: bool = False, **_: Any) -> None:
    reason = "expired" if expired else (f"terminated (signal {signum})" if terminated else "revoked")
    get_registry().record_revoked(request.id, reason)


@signals.task_postrun.connect(weak=False)
def on_postrun(**_: Any) -> None:
    job_id_var.set(None)
    request_id_var.set(None)
