"""Log exports (the logs API) and metrics exports (the AI monitoring API): run on the `cleanup` queue, where long,
I/O-bound housekeeping belongs and cannot delay detection or notifications."""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from app.celery.app import celery
from app.core.settings import get_settings
from app.jobs.registry import get_registry
from app.monitoring import exports as metrics_exports
from app.observability import exports


@celery.task(name="vigil.cleanup.export_logs", bind=True, soft_time_limit=540, time_limit=600)
def export_logs(self, export_id: str) -> dict:
    """Stream the export's filtered logs into its file; progress shows in the job registry."""
    registry = get_registry()
    job_id = self.request.id

    def progress(rows: int) -> None:
        registry.record_progress(job_id, {"rows": rows})

    try:
        return exports.run(get_settings(), export_id, progress)
    except SoftTimeLimitExceeded:
        raise RuntimeError("export exceeded its time limit (540 s); narrow the filters") from None


@celery.task(name="vigil.cleanup.purge_exports", soft_time_limit=240, time_limit=300)
def purge_exports() -> dict:
    """Delete export files past VIGIL_EXPORT_RETENTION_HOURS: log exports (`purged`) and metrics exports."""
    settings = get_settings()
    return {"purged": exports.purge_expired(settings), "metrics_purged": metrics_exports.purge_expired(settings)}


@celery.task(name="vigil.cleanup.export_metrics", soft_time_limit=540, time_limit=600)
def export_metrics(export_id: str) -> dict:
    """Write a metrics export (the AI monitoring API's `POST /metrics/export`) from the rollups into its file."""
    try:
        return metrics_exports.run(get_settings(), export_id)
    except SoftTimeLimitExceeded:
        raise RuntimeError("export exceeded its time limit (540 s); shorten the period or coarsen it") from None
