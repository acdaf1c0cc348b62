"""Cleanup family: retention cleanup and registry housekeeping (queue `cleanup`)."""
from __future__ import annotations

import time

from app.db import get_sessionmaker
from app.queues import QUEUE_NAMES
from app.services.registry import get_registry
from app.settings import get_settings
from workers.celery_app import celery


@celery.task(name="vigil.cleanup.trim_registry", soft_time_limit=240, time_limit=300)
def trim_registry() -> dict[str, int]:
    """Move finished jobs past their retention out of the Redis index (they stay in SQL)."""
    settings = get_settings()
    registry = get_registry()
    sessions = get_sessionmaker()
    now = time.time()
    removed = {"completed": 0, "revoked": 0, "failed": 0}
    for queue in QUEUE_NAMES:
        for state, hours in (("completed", settings.completed_retention_hours),
                             ("revoked", settings.completed_retention_hours),
                             ("failed", settings.failed_retention_hours)):
            removed[state] += registry.trim(queue, state, now - hours * 3600, sessions)
    return removed


@celery.task(name="vigil.cleanup.run", soft_time_limit=540, time_limit=600)
def run_cleanup(trigger: str = "manual", dry_run: bool = False) -> dict:
    """Retention cleanup (events, detections, GPU stats, logs and their files)."""
    raise NotImplementedError("retention cleanup is built by the worker-operations issue (#5)")
