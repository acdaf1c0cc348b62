"""Per-request and per-job context that follows work across threads and into Celery messages."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("vigil_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("vigil_job_id", default=None)
component_var: ContextVar[str | None] = ContextVar("vigil_component", default=None)
camera_id_var: ContextVar[str | None] = ContextVar("vigil_camera_id", default=None)

# Message header that carries the originating request id into the worker.
REQUEST_ID_HEADER = "vigil_request_id"
