"""Storage statistics (System API, System Operations API): disk, per-directory usage and table sizes."""

from __future__ import annotations

from flask import Blueprint
from pydantic import Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.core.db import session_scope
from app.ops.storage import storage_stats

bp = Blueprint("storage", __name__)


class DirectoryUsage(Answer):
    file_count: int
    size_bytes: int
    path: str


class Storage(Answer):
    disk_used_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    disk_usage_percent: float
    thumbnails: DirectoryUsage
    images: DirectoryUsage = Field(description="The camera root")
    clips: DirectoryUsage
    events_count: int
    detections_count: int
    gpu_stats_count: int
    logs_count: int
    disk_path: str = Field(description="The filesystem the disk figures are for (holding VIGIL_VAR_DIR)")
    timestamp: str


@bp.get("/api/system/storage")
@endpoint(response=Storage, summary="Disk usage, thumbnail/image/clip directories and row counts", tags=["storage"])
def storage():
    settings = current_settings()
    with session_scope(settings) as session:
        return storage_stats(settings, session)
