"""The Celery side of Vigil: `celery -A workers worker|beat|flower` finds `app` here.

Importing this package installs the worker hooks (bootsteps, log sink, lifecycle receivers, the detection
group's detector warm-up) on the shared app from `app.celery.app`; the task modules are loaded by Celery
itself from the app's `include`. The service host (`python -m workers.host`) lives beside it in `workers/host/`.
"""

from __future__ import annotations

from app.celery.app import celery
from workers.hooks import bootsteps, detector, observability  # noqa: F401  (detector, observability: receivers)

bootsteps.install(celery)
app = celery

__all__ = ["app", "celery"]
