"""Pipeline status, telemetry, latency and stats (System Monitoring guide, System API, System Operations API)."""

from __future__ import annotations

import time
from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required
from app.pipeline import status
from app.pipeline import telemetry as stages  # `telemetry` is this module's handler name

bp = Blueprint("pipeline", __name__)
STARTED_AT = time.time()  # the API process's start, for uptime_seconds


class LatencyQuery(BaseModel):
    window_minutes: int = Field(60, ge=1, le=1440, description="Time window for the statistics, minutes")


class LatencyHistoryQuery(BaseModel):
    since: int = Field(60, ge=1, le=1440, description="Minutes of history")
    bucket_seconds: int = Field(60, ge=10, le=3600, description="Bucket size, seconds")


class SkippedUpload(Answer):
    path: str
    camera_id: str
    reason: str = Field(description="Why it is not a complete image (e.g. a truncated JPEG)")
    at: str = Field(description="When the watcher reported it (ISO 8601 UTC)")


class ReconcileScan(Answer):
    at: str = Field(description="When the scan of the camera root started (ISO 8601 UTC)")
    files: int = Field(description="Images in the camera folders")
    missed: int = Field(description="Found without an upload row, and queued")
    older: int = Field(description="Older than VIGIL_WATCHER_RECONCILE_MAX_AGE_SECONDS: not compared, left alone")
    deleted_camera: int = Field(description="Unrecorded, but older than their camera's deletion through the API")
    seconds: float


class FileWatcher(Answer):
    running: bool
    camera_root: str
    pending_tasks: int
    observer_type: str | None
    enqueued: int | None = Field(None, description="While running: files enqueued since it started")
    duplicates: int | None = Field(None, description="While running: duplicates skipped since it started")
    skipped: int | None = Field(
        None, description="While running: files reported since it started as not a complete image after settling"
    )
    recent_skipped: list[SkippedUpload] | None = Field(None, description="The latest of those, newest first")
    reconciled: int | None = Field(
        None, description="While running: files enqueued because a reconcile scan found them unrecorded"
    )
    last_reconcile: ReconcileScan | None = None
    node: str | None = None


class OpenBatch(Answer):
    batch_id: str
    camera_id: str | None
    detection_count: int
    started_at: float | None = Field(description="Epoch seconds")
    age_seconds: float
    last_activity_seconds: float


class BatchAggregator(Answer):
    active_batches: int
    batches: list[OpenBatch]
    batch_window_seconds: int
    idle_timeout_seconds: int


class AiServiceState(Answer):
    name: Literal["detector", "analyser"]
    status: Literal["healthy", "degraded", "unhealthy", "unknown"]
    circuit_state: Literal["closed", "open", "half_open", "unknown"]
    last_check: str | None
    consecutive_failures: int
    error_message: str | None


class Degradation(Answer):
    mode: Literal["normal", "degraded", "minimal", "offline"]
    is_degraded: bool
    redis_healthy: bool
    memory_queue_size: Literal[0] = Field(description="Always 0: the broker is Redis, no in-memory fallback")
    fallback_queues: dict[str, int]
    services: list[AiServiceState]
    available_features: list[Literal["detection", "batching", "analysis", "llm_analysis"]]


class PipelineStatus(Answer):
    file_watcher: FileWatcher
    batch_aggregator: BatchAggregator
    degradation: Degradation
    timestamp: str


class StageFigures(Answer):
    avg_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    sample_count: int


class QueueDepths(Answer):
    detection_queue: int
    analysis_queue: int


class StageLatencies(Answer):
    watch: StageFigures | None
    detect: StageFigures | None
    batch: StageFigures | None
    analyze: StageFigures | None


class Telemetry(Answer):
    queues: QueueDepths
    latencies: StageLatencies
    window_minutes: int
    timestamp: str


class PipelineLatency(Answer):
    watch_to_detect: StageFigures | None
    detect_to_batch: StageFigures | None
    batch_to_analyze: StageFigures | None
    total_pipeline: StageFigures | None
    window_minutes: int
    timestamp: str


class BucketFigures(Answer):
    avg_ms: float
    p50_ms: float
    p95_ms: float
    sample_count: int


class LatencyBucket(Answer):
    timestamp: str
    watch_to_detect: BucketFigures | None
    detect_to_batch: BucketFigures | None
    batch_to_analyze: BucketFigures | None
    total_pipeline: BucketFigures | None


class LatencyHistory(Answer):
    snapshots: list[LatencyBucket]
    count: int
    since: int
    bucket_seconds: int


class Stats(Answer):
    total_cameras: int
    total_events: int
    total_detections: int
    uptime_seconds: float = Field(description="This API process's")
    timestamp: str


@bp.get("/api/system/pipeline")
@endpoint(
    response=PipelineStatus,
    summary="Pipeline status: file watcher, open batches, degradation mode",
    tags=["pipeline"],
    errors={503: "Redis unavailable"},
)
def pipeline_status():
    with dependencies_required():
        return status.pipeline_status(current_settings())


@bp.get("/api/system/telemetry")
@endpoint(
    response=Telemetry,
    summary="Pipeline telemetry: queue depths and per-stage latencies (last hour)",
    tags=["pipeline"],
    errors={503: "Redis unavailable"},
)
def telemetry():
    with dependencies_required():
        return stages.telemetry(current_settings())


@bp.get("/api/system/pipeline-latency")
@endpoint(
    query=LatencyQuery,
    response=PipelineLatency,
    summary="Pipeline latency percentiles per stage, from recorded stage timestamps",
    tags=["pipeline"],
    errors={503: "Redis unavailable"},
)
def pipeline_latency(query: LatencyQuery):
    with dependencies_required():
        return stages.latency(current_settings(), query.window_minutes)


@bp.get("/api/system/pipeline-latency/history")
@endpoint(
    query=LatencyHistoryQuery,
    response=LatencyHistory,
    summary="Pipeline latency per time bucket (buckets with samples)",
    tags=["pipeline"],
    errors={503: "Redis unavailable"},
)
def pipeline_latency_history(query: LatencyHistoryQuery):
    with dependencies_required():
        return stages.latency_history(current_settings(), query.since, query.bucket_seconds)


@bp.get("/api/system/stats")
@endpoint(
    response=Stats,
    summary="System statistics: cameras, events, detections, uptime",
    tags=["pipeline"],
    errors={503: "Database unavailable"},
)
def stats():
    with dependencies_required():
        return stages.stats(current_settings(), STARTED_AT)
