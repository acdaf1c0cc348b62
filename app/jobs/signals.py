"""Celery signal receivers that keep the job registry current.

They run in whichever process the signal fires in: `before_task_publish` in the API (or a worker
or beat that sends a task), the rest in the worker. A registry write that fails is logged and
swallowed: bookkeeping must never turn a good job into a failed one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from celery import signals

from app.core.context import REQUEST_ID_HEADER, job_id_var, request_id_var
from app.jobs.registry import JobRegistry, get_registry
from app.live import bus as live

log = logging.getLogger(__name__)

# A job still running this long after it started shows `active` in the registry.
START_DELAY = 0.1

# Set by app.jobs.enqueue while it prepares messages for its own pipeline: the publish record is
# handed to it (job id, fields) instead of being written, so it reaches Redis in the same script as
# the message itself.
publish_capture: ContextVar[Callable[[str, dict[str, Any]], None] | None] = ContextVar(
    "vigil_publish_capture", default=None
)


class _Recorder:
    """Writes a pool process's registry updates so that a quick job costs one round trip.

    A job's start is held back for START_DELAY: if the job finishes (or re-publishes itself for a
    retry) within it, the start and that outcome go to Redis in one atomic Lua call; if it is still
    running, a background thread writes the start, so long jobs show as active. One lock orders the
    writes, so a start is never written after its own outcome. Profiling P1 showed the two separate
    registry round trips were most of a no-op job's time in the pool process.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards _pending
        self._send = threading.Lock()  # orders writes
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self, job_id: str, fields: dict[str, Any]) -> None:
        if self._pid != os.getpid():
            self._reset()  # forked: locks and thread belong to the parent
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigil-registry-starts", daemon=True)
            self._thread.start()
        with self._lock:
            self._pending[job_id] = (time.monotonic() + START_DELAY, fields)
        self._wake.set()

    def write(self, job_id: str, event: str, fields: dict[str, Any]) -> None:
        """Write `event`, preceded by the job's start if that is still held back."""
        with self._send:
            with self._lock:
                held = self._pending.pop(job_id, None) if self._pid == os.getpid() else None
            events = ([("start", held[1])] if held else []) + [(event, fields)]
            get_registry().apply_many(job_id, events)

    def _run(self) -> None:
        while True:
            with self._lock:
                deadline = min((d for d, _ in self._pending.values()), default=None)
            self._wake.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            with self._send:
                with self._lock:
                    due = [(job_id, f) for job_id, (d, f) in self._pending.items() if d <= now]
                    for job_id, _ in due:
                        del self._pending[job_id]
                for job_id, fields in due:
                    try:
                        get_registry().apply_many(job_id, [("start", fields)])
                    except Exception:
                        log.warning("job registry start update failed", exc_info=True)


_recorder = _Recorder()


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
def on_publish(
    sender: str | None = None,
    body: Any = None,
    exchange: str | None = None,
    routing_key: str | None = None,
    headers: dict | None = None,
    declare: Any = None,
    **_: Any,
) -> None:
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
    fields = JobRegistry.publish_fields(
        task=headers.get("task") or sender or "",
        queue=queue or "",
        args=args,
        kwargs=kwargs,
        eta=headers.get("eta"),
        request_id=request_id,
        idempotency_key=headers.get("vigil_idempotency_key"),
        reset_attempts=bool(headers.get("vigil_reset_attempts")),
    )
    capture = publish_capture.get()
    if capture is not None:
        capture(job_id, fields)
        return
    # Through the recorder: a task re-publishing itself (retry) must have its start written first.
    _recorder.write(job_id, "publish", fields)


@signals.task_prerun.connect(weak=False)
@_safe
def on_prerun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    request = task.request
    job_id_var.set(task_id)
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (request.headers or {}).get(REQUEST_ID_HEADER)
    request_id_var.set(request_id)
    delivery = request.delivery_info or {}
    _recorder.started(
        task_id, JobRegistry.start_fields(request.hostname, task.name, delivery.get("routing_key"), args, kwargs)
    )
    _started[task_id] = time.monotonic()


# When each running job started (this process), for job.completed's runtime.
_started: dict[str | None, float] = {}


def _announce(event_type: str, task: Any, job_id: str | None, **fields: Any) -> None:
    """The job's outcome on the live stream (queued in memory: never a wait on Redis here)."""
    request = getattr(task, "request", None)
    delivery = getattr(request, "delivery_info", None) or {}
    started = _started.pop(job_id, None)
    if event_type == "job.completed":
        fields["runtime_ms"] = round((time.monotonic() - started) * 1000, 3) if started is not None else None
    payload = {"job_id": job_id or "", "task": getattr(task, "name", None), "queue": delivery.get("routing_key")}
    live.publish_quietly(event_type, {**payload, **fields})


@signals.task_success.connect(weak=False)
@_safe
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    _recorder.write(sender.request.id, "success", JobRegistry.success_fields(result))
    _announce("job.completed", sender, sender.request.id)


@signals.task_failure.connect(weak=False)
@_safe
def on_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, einfo: Any = None, **_: Any
) -> None:
    message = f"{type(exception).__name__}: {exception}" if exception is not None else "failed"
    _recorder.write(task_id, "failure", JobRegistry.failure_fields(message, str(einfo) if einfo is not None else None))
    _announce("job.failed", sender, task_id, error=message[:1000])


@signals.task_retry.connect(weak=False)
@_safe
def on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    _recorder.write(request.id, "note", {"error": f"retrying: {reason}"[:4096]})


@signals.task_revoked.connect(weak=False)
@_safe
def on_revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    reason = "expired" if expired else (f"terminated (signal {signum})" if terminated else "revoked")
    get_registry().record_revoked(request.id, reason)


@signals.task_postrun.connect(weak=False)
def on_postrun(**_: Any) -> None:
    job_id_var.set(None)
    request_id_var.set(None)
