"""Cleanup family: retention cleanup and registry housekeeping (queue `cleanup`)."""

from __future__ import annotations

import time

from app.celery.app import celery
from app.celery.queues import QUEUE_NAMES
from app.core.db import get_sessionmaker
from app.core.redis_client import get_redis
from app.core.settings import get_settings
from app.jobs.registry import get_registry
from app.ops import cleanup
from app.ops.cleanup import CleanupLock, current_holder


@celery.task(name="vigil.cleanup.trim_registry", soft_time_limit=240, time_limit=300)
def trim_registry() -> dict[str, int]:
    """Move finished jobs past their retention out of the Redis index (they stay in SQL)."""
    settings = get_settings()
    registry = get_registry()
    sessions = get_sessionmaker()
    now = time.time()
    removed = {"completed": 0, "revoked": 0, "failed": 0}
    for queue in QUEUE_NAMES:
        for state, hours in (
            ("completed", settings.completed_retention_hours),
            ("revoked", settings.completed_retention_hours),
            ("failed", settings.failed_retention_hours),
        ):
            removed[state] += registry.trim(queue, state, now - hours * 3600, sessions)
    return removed


@celery.task(name="vigil.cleanup.run", bind=True, soft_time_limit=540, time_limit=600)
def run_cleanup(self, trigger: str = "manual", dry_run: bool = False) -> dict:
    """Retention cleanup (events, detections, GPU stats, logs and their files); see app/ops/cleanup.py.

    One at a time across every worker and beat: a second run (two beats, or a manual run during the
    nightly one) finds the lock taken and returns `skipped` without touching anything.
    """
    job_id = self.request.id
    client = get_redis()
    lock = CleanupLock(client, {"job_id": job_id, "trigger": trigger, "dry_run": dry_run})
    if not lock.acquire():
        holder = current_holder(client) or {}
        return {
            "skipped": True,
            "reason": f"Another cleanup is running (job {holder.get('job_id')})",
            "running_job": holder.get("job_id"),
            "dry_run": dry_run,
            "trigger": trigger,
        }
    registry = get_registry()
    try:
        report = cleanup.run_retention_cleanup(
            get_settings(),
            get_sessionmaker(),
            dry_run=dry_run,
            progress=lambda figures: registry.record_progress(job_id, figures) if job_id else None,
        )
    finally:
        lock.release()
    report.update(trigger=trigger, job_id=job_id)
    cleanup.save_last_run(client, report)
    return report
