"""Performance metrics (System Operations API): the current snapshot and the stored history."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.core.db import session_scope
from app.ops import performance

bp = Blueprint("performance", __name__)


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time_range: Literal["5m", "15m", "60m"] = Field("5m", description="How far back: 5m, 15m or 60m")


class Part(Answer):
    """A part that could not be read says `status: unavailable` and why; its figures are absent."""

    status: Literal["healthy", "unavailable"] | None = None
    error: str | None = None


class GpuPart(Part):
    gpu_name: str | None = None
    utilization: float | None = None
    memory_used_mb: int | None = None
    memory_total_mb: int | None = None
    temperature_c: float | None = None
    power_watts: float | None = None


class InferencePart(Part):
    avg_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    throughput_fps: float | None = None
    sample_count: int | None = None


class DatabasePart(Part):
    connections: int | None = Field(None, description="PostgreSQL: connections to this database")
    size_bytes: int | None = None


class RedisPart(Part):
    memory_mb: float | None = None
    connected_clients: int | None = None
    ops_per_sec: int | None = None
    version: str | None = None


class Databases(Answer):
    postgres: DatabasePart | None = Field(None, description="When the database is PostgreSQL")
    sqlite: DatabasePart | None = Field(None, description="When the database is SQLite")
    redis: RedisPart


class HostPart(Part):
    cpu_percent: float | None = None
    cpu_count: int | None = None
    load_1m: float | None = None
    ram_percent: float | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    disk_percent: float | None = None


class AiModel(Answer):
    status: str
    vram_mb: float | None


class Container(Answer):
    name: str
    group: str
    status: Literal["running", "unresponsive"]
    kind: str | None
    pid: int | None
    last_seen: str | None


class PerformanceAlert(Answer):
    metric: str
    value: float
    threshold: float
    severity: Literal["warning"]
    message: str


class Performance(Answer):
    gpu: GpuPart
    ai_models: dict[str, AiModel]
    inference: InferencePart
    databases: Databases
    host: HostPart
    containers: list[Container]
    alerts: list[PerformanceAlert]
    timestamp: str


class StoredSnapshot(BaseModel):
    """A stored snapshot: the performance object as it was stored (a part missing from an older or
    partial one is absent here too), with the time it was taken."""

    model_config = ConfigDict(extra="allow")

    gpu: GpuPart | None = None
    ai_models: dict[str, AiModel] | None = None
    inference: InferencePart | None = None
    databases: Databases | None = None
    host: HostPart | None = None
    containers: list[Container] | None = None
    alerts: list[PerformanceAlert] | None = None
    timestamp: str


class PerformanceHistory(Answer):
    snapshots: list[StoredSnapshot]
    time_range: Literal["5m", "15m", "60m"]
    count: int


@bp.get("/api/system/performance")
@endpoint(
    response=Performance,
    summary="Current performance: GPU, inference, databases, host, processes",
    tags=["performance"],
)
def current_performance():
    """A part that cannot be read says `status: "unavailable"` with the error; the endpoint stays
    200."""
    return performance.collect(current_settings(), cpu_interval=0.1)


@bp.get("/api/system/performance/history")
@endpoint(
    summary="Stored performance snapshots, oldest first",
    query=HistoryQuery,
    response=PerformanceHistory,
    tags=["performance"],
)
def performance_history(query: HistoryQuery):
    with session_scope(current_settings()) as session:
        snapshots = performance.history(session, query.time_range)
    return {"snapshots": snapshots, "time_range": query.time_range, "count": len(snapshots)}
