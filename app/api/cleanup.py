"""Data cleanup (System API, System Operations API): trigger retention cleanup, its status, orphaned files."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer, SystemError
from app.core.db import get_sessionmaker, session_scope
from app.core.errors import Conflict
from app.core.redis_client import get_redis
from app.jobs.queues import PAUSED_KEY, STOPPED_GROUPS_KEY
from app.ops import cleanup, storage

bp = Blueprint("cleanup", __name__)


class CleanupQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(False, description="Count what would be deleted; delete nothing")


class OrphanQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(True, description="Only report (the default)")
    force: bool = Field(False, description="Delete even when more than half of a directory is orphaned")


class CleanupCounts(Answer):
    """The System API's counts and what the run did."""

    events_deleted: int
    detections_deleted: int
    gpu_stats_deleted: int
    logs_deleted: int
    uploads_deleted: int = Field(
        description="Upload records past the retention and the watcher's reconcile window (a Vigil addition)"
    )
    thumbnails_deleted: int
    images_deleted: int
    space_reclaimed: int = Field(description="Bytes")
    retention_days: int
    dry_run: bool
    timestamp: str
    cutoff: str
    delete_images: bool
    files_skipped: int = Field(description="Stored paths outside their directory, left alone")
    batches: int
    phase: str
    duration_seconds: float
    trigger: str
    job_id: str


class CleanupRunning(Answer):
    job_id: str
    state: Literal["waiting", "active"]
    dry_run: bool
    progress: dict[str, Any] | None
    message: str


class CleanupBusy(SystemError):
    running_job: str | None = Field(None, description="The job holding the cleanup lock")
    job_id: str | None = Field(None, description="This request's job, when it found the lock taken")


class CleanupFailed(SystemError):
    job_id: str


class CleanupStatus(Answer):
    running: bool = Field(description="A cleanup_service worker consumes the cleanup queue")
    retention_days: int
    cleanup_time: str
    delete_images: bool
    next_cleanup: str | None = Field(description="From beat's own schedule entry")
    in_progress: dict[str, Any] | None = Field(description="The lock holder, while a cleanup runs")
    last_run: dict[str, Any] | None = Field(description="The last finished run's report")
    timestamp: str


class OrphanDirectory(Answer):
    orphaned_count: int
    orphaned_size_bytes: int
    files: list[str] = Field(description="The first 100, relative to the directory")
    total_files: int
    directory: str
    deleted_count: int
    requires_force: bool
    skipped: str | None = Field(None, description="Why nothing here can be called orphaned")


class OrphanReport(Answer):
    thumbnails: OrphanDirectory
    clips: OrphanDirectory
    total_orphaned_files: int
    total_size_bytes: int
    dry_run: bool
    timestamp: str


@bp.post("/api/system/cleanup")
@endpoint(
    summary="Run retention cleanup as a job on the cleanup queue; 200 with its counts, or 202 "
    "with the job id if it outlasts the wait",
    query=CleanupQuery,
    tags=["cleanup"],
    response=CleanupCounts,
    responses={202: CleanupRunning},
    errors={
        409: ("Another cleanup is running, or the cleanup queue is paused or its worker group stopped", CleanupBusy),
        500: ("The cleanup job failed", CleanupFailed),
        503: "No worker consumes the cleanup queue (none is running), or Redis or the database is down",
    },
)
def trigger_cleanup(query: CleanupQuery):
    """The run is a job on the `cleanup` queue; the answer waits up to VIGIL_CLEANUP_WAIT_SECONDS
    for it. A paused `cleanup` queue or a stopped `cleanup_service` group is an operator's choice:
    409, nothing enqueued (resume or start it first); no worker at all is a 503."""
    settings = current_settings()
    client = get_redis(settings)
    if client.sismember(PAUSED_KEY, "cleanup"):
        raise Conflict(
            "The cleanup queue is paused; resume it to run a cleanup (nothing was enqueued)", code="queue_paused"
        )
    if client.sismember(STOPPED_GROUPS_KEY, "cleanup_service"):
        raise Conflict(
            "The cleanup_service worker group is stopped; start it to run a cleanup (nothing was enqueued)",
            code="worker_stopped",
        )
    status, body = cleanup.trigger_cleanup(settings, client, dry_run=query.dry_run)
    return body, status


@bp.get("/api/system/cleanup/status")
@endpoint(
    response=CleanupStatus,
    summary="Cleanup settings, next scheduled run, the run in progress and the last one",
    tags=["cleanup"],
)
def cleanup_status():
    settings = current_settings()
    with session_scope(settings) as session:
        return cleanup.cleanup_status(settings, session, get_redis(settings))


@bp.post("/api/system/cleanup/orphaned-files")
@endpoint(
    summary="Find (and with dry_run=false delete) files no row references",
    query=OrphanQuery,
    response=OrphanReport,
    tags=["cleanup"],
    errors={409: "More than half of a directory would go (pass force=true), or a cleanup is running"},
)
def orphaned_files(query: OrphanQuery):
    settings = current_settings()
    return storage.orphaned_files(
        settings, get_sessionmaker(settings), dry_run=query.dry_run, force=query.force, client=get_redis(settings)
    )
