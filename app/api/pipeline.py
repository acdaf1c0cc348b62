"""Pipeline status, telemetry, latency and stats (001/003/004)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import redis
from flask import Blueprint, current_app
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

from app.api.endpoint import endpoint
from app.services import pipeline
from app.services.errors import Unavailable

bp = Blueprint("pipeline", __name__)
STARTED_AT = time.time()  # the API process's start, for uptime_seconds


class LatencyQuery(BaseModel):
    window_minutes: int = Field(60, ge=1, le=1440, description="Time window for the statistics, minutes")


class LatencyHistoryQuery(BaseModel):
    since: int = Field(60, ge=1, le=1440, description="Minutes of history")
    bucket_seconds: int = Field(60, ge=10, le=3600, description="Bucket size, seconds")


@contextmanager
def dependencies_required() -> Iterator[None]:
    """Redis or the database down is a 503 that names it, not a 500."""
    try:
        yield
    except redis.RedisError as exc:
        raise Unavailable(f"Redis unavailable: {type(exc).__name__}") from None
    except OperationalError as exc:
        raise Unavailable(f"Database unavailable: {type(exc.orig).__name__}") from None


def _settings():
    return current_app.config["VIGIL_SETTINGS"]


@bp.get("/api/system/pipeline")
@endpoint(summary="Pipeline status: file watcher, open batches, degradation mode", tags=["pipeline"],
          errors={503: "Redis unavailable"})
def pipeline_status():
    with dependencies_required():
        return pipeline.pipeline_status(_settings())


@bp.get("/api/system/telemetry")
@endpoint(summary="Pipeline telemetry: queue depths and per-stage latencies (last hour)", tags=["pipeline"],
          errors={503: "Redis unavailable"})
def telemetry():
    with dependencies_required():
        return pipeline.telemetry(_settings())


@bp.get("/api/system/pipeline-latency")
@endpoint(query=LatencyQuery, summary="Pipeline latency percentiles per stage, from recorded stage timestamps",
          tags=["pipeline"], errors={503: "Redis unavailable"})
def pipeline_latency(query: LatencyQuery):
    with dependencies_required():
        return pipeline.latency(_settings(), query.window_minutes)


@bp.get("/api/system/pipeline-latency/history")
@endpoint(query=LatencyHistoryQuery, summary="Pipeline latency per time bucket (buckets with samples)",
          tags=["pipeline"], errors={503: "Redis unavailable"})
def pipeline_latency_history(query: LatencyHistoryQuery):
    with dependencies_required():
        return pipeline.latency_history(_settings(), query.since, query.bucket_seconds)


@bp.get("/api/system/stats")
@endpoint(summary="System statistics: cameras, events, detections, uptime", tags=["pipeline"],
          errors={503: "Database unavailable"})
def stats():
    with dependencies_required():
        return pipeline.stats(_settings(), STARTED_AT)
