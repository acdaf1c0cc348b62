"""Data cleanup (003/004): trigger retention cleanup, its status, orphaned files."""
from __future__ import annotations

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.core.db import get_sessionmaker, session_scope
from app.core.redis_client import get_redis
from app.ops import cleanup, storage
bp = Blueprint("cleanup", __name__)


class CleanupQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(False, description="Count what would be deleted; delete nothing")


class OrphanQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(True, description="Only report (the default)")
    force: bool = Field(False, description="Delete even when more than half of a directory is orphaned")


@bp.post("/api/system/cleanup")
@endpoint(summary="Run retention cleanup as a job on the cleanup queue; 200 with its counts, or 202 "
                  "with the job id if it outlasts the wait", query=CleanupQuery, tags=["cleanup"],
          errors={202: "Still running: job id and progress", 409: "Another cleanup is running",
                  503: "No worker consumes the cleanup queue"})
def trigger_cleanup(query: CleanupQuery):
    settings = current_settings()
    status, body = cleanup.trigger_cleanup(settings, get_redis(settings), dry_run=query.dry_run)
    return body, status


@bp.get("/api/system/cleanup/status")
@endpoint(summary="Cleanup settings, next scheduled run, the run in progress and the last one", tags=["cleanup"])
def cleanup_status():
    settings = current_settings()
    with session_scope(settings) as session:
        return cleanup.cleanup_status(settings, session, get_redis(settings))


@bp.post("/api/system/cleanup/orphaned-files")
@endpoint(summary="Find (and with dry_run=false delete) files no row references", query=OrphanQuery,
          tags=["cleanup"], errors={409: "More than half of a directory would go (pass force=true), or "
                                         "a cleanup is running"})
def orphaned_files(query: OrphanQuery):
    settings = current_settings()
    return storage.orphaned_files(settings, get_sessionmaker(settings), dry_run=query.dry_run, force=query.force,
                                  client=get_redis(settings))
