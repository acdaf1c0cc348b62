"""GPU statistics (System API, System Operations API): the latest NVML sample and its history."""

from __future__ import annotations

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.types import Timestamp
from app.core.db import session_scope
from app.jobs.registry import get_registry
from app.ops import gpu

bp = Blueprint("gpu", __name__)


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Timestamp | None = Field(None, description="Lower bound for recorded_at (ISO 8601; UTC if no zone)")
    limit: int = Field(300, ge=1, le=5000, description="Max samples (1-5000)")
    gpu_index: int = Field(0, ge=0, le=63, description="Which GPU (NVML index)")


class GpuNow(Answer):
    """The System API's fields for GPU 0, null without a fresh sample; `inference_fps` is live."""

    gpu_name: str | None
    utilization: float | None = Field(description="Percent")
    memory_used: int | None = Field(description="MB")
    memory_total: int | None = Field(description="MB")
    temperature: float | None = Field(description="Celsius")
    power_usage: float | None = Field(description="Watts")
    inference_fps: float | None = Field(description="Detection jobs completed per second, last minute")
    recorded_at: str | None


class GpuSample(Answer):
    recorded_at: str
    gpu_name: str | None
    utilization: float | None
    memory_used: int | None
    memory_total: int | None
    temperature: float | None
    power_usage: float | None
    inference_fps: float | None
    gpu_index: int


class GpuHistory(Answer):
    samples: list[GpuSample]
    count: int
    limit: int


@bp.get("/api/system/gpu")
@endpoint(response=GpuNow, summary="Current GPU statistics (all null without a GPU)", tags=["gpu"])
def current_gpu():
    settings = current_settings()
    with session_scope(settings) as session:
        return gpu.current(session, get_registry(settings), max_age=3 * settings.gpu_poll_interval)


@bp.get("/api/system/gpu/history")
@endpoint(summary="GPU statistics time series, oldest first", query=HistoryQuery, response=GpuHistory, tags=["gpu"])
def gpu_history(query: HistoryQuery):
    """With `since`, the first `limit` samples from then on (page forward with the last
    `recorded_at`); without it, the latest `limit`. Unknown parameters are refused."""
    with session_scope(current_settings()) as session:
        samples = gpu.history(session, query.since, query.limit, query.gpu_index)
    return {"samples": samples, "count": len(samples), "limit": query.limit}
