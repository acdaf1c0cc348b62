"""Pipeline status, telemetry, latency and stats (001/003/004)."""
from __future__ import annotations

import time
from flask import Blueprint
from pydantic import BaseModel, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
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



@bp.get("/api/system/pipeline")
@endpoint(summary="Pipeline status: file watcher, open batches, degradation mode", tags=["pipeline"],
          errors={503: "Redis unavailable"})
def pipeline_status():
    with dependencies_required():
        return status.pipeline_status(current_settings())


@bp.get("/api/system/telemetry")
@endpoint(summary="Pipeline telemetry: queue depths and per-stage latencies (last hour)", tags=["pipeline"],
          errors={503: "Redis unavailable"})
def telemetry():
    with dependencies_required():
        return stages.telemetry(current_settings())


@bp.get("/api/system/pipeline-latency")
@endpoint(query=LatencyQuery, summary="Pipeline latency percentiles per stage, from recorded stage timestamps",
          tags=["pipeline"], errors={503: "Redis unavailable"})
def pipeline_latency(query: LatencyQuery):
    with dependencies_required():
        return stages.latency(current_settings(), query.window_minutes)


@bp.get("/api/system/pipeline-latency/history")
@endpoint(query=LatencyHistoryQuery, summary="Pipeline latency per time bucket (buckets with samples)",
          tags=["pipeline"], errors={503: "Redis unavailable"})
def pipeline_latency_history(query: LatencyHistoryQuery):
    with dependencies_required():
        return stages.latency_history(current_settings(), query.since, query.bucket_seconds)


@bp.get("/api/system/stats")
@endpoint(summary="System statistics: cameras, events, detections, uptime", tags=["pipeline"],
          errors={503: "Database unavailable"})
def stats():
    with dependencies_required():
        return stages.stats(current_settings(), STARTED_AT)
