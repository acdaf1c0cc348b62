"""Operational tasks that belong to no pipeline stage."""

from __future__ import annotations

import os
import time
from typing import Any

from app.celery.app import celery


class CanaryFailure(RuntimeError):
    """Raised by a canary asked to fail, so the failure path can be exercised on demand."""


@celery.task(name="vigil.system.canary", soft_time_limit=60, time_limit=90)
def canary(sleep: float = 0.0, fail: str | None = None, result: Any = None, require_path: str | None = None) -> Any:
    """A job ops send through any queue (`queue=...`) to prove the path end to end: publish,
    consume, registry, result. It sleeps `sleep` seconds, fails with `fail` if given, and fails
    unless `require_path` exists on the worker (is the shared volume mounted there?)."""
    if sleep:
        time.sleep(float(sleep))
    if fail:
        raise CanaryFailure(fail)
    if require_path and not os.path.exists(require_path):
        raise CanaryFailure(f"{require_path} does not exist on this worker")
    return {"ok": True} if result is None else result
