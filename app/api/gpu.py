"""GPU statistics (003/004): the latest NVML sample and its history."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.core.db import session_scope
from app.ops import gpu
from app.jobs.registry import get_registry

bp = Blueprint("gpu", __name__)


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | None = Field(None, description="Lower bound for recorded_at (ISO 8601; UTC if no zone)")
    limit: int = Field(300, ge=1, le=5000, description="Max samples (1-5000)")
    gpu_index: int = Field(0, ge=0, le=63, description="Which GPU (NVML index)")


@bp.get("/api/system/gpu")
@endpoint(summary="Current GPU statistics (all null without a GPU)", tags=["gpu"])
def current_gpu():
    settings = current_settings()
    with session_scope(settings) as session:
        return gpu.current(session, get_registry(settings), max_age=3 * settings.gpu_poll_interval)


@bp.get("/api/system/gpu/history")
@endpoint(summary="GPU statistics time series, oldest first", query=HistoryQuery, tags=["gpu"])
def gpu_history(query: HistoryQuery):
    since = query.since
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    with session_scope(current_settings()) as session:
        samples = gpu.history(session, since, query.limit, query.gpu_index)
    return {"samples": samples, "count": len(samples), "limit": query.limit}
