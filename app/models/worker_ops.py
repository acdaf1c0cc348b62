"""Tables of the worker-operations area: GPU samples, supervisor restart history, performance
snapshots. Each is append-mostly and read by time range, hence the time indexes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class GpuStat(Base):
    """One NVML sample of one GPU (the GPU monitor writes one per device every poll interval)."""

    __tablename__ = "gpu_stats"
    __table_args__ = (Index("ix_gpu_stats_gpu_recorded", "gpu_index", "recorded_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    gpu_index: Mapped[int] = mapped_column(Integer, default=0)
    gpu_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utilization: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_used: Mapped[int | None] = mapped_column(Integer, nullable=True)  # MB
    memory_total: Mapped[int | None] = mapped_column(Integer, nullable=True)  # MB
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)  # Celsius
    power_usage: Mapped[float | None] = mapped_column(Float, nullable=True)  # watts
    inference_fps: Mapped[float | None] = mapped_column(Float, nullable=True)


class WorkerRestartEvent(Base):
    """The supervisor's restart history (System Monitoring guide `restart-history`): crashes, restarts, give-ups and
    manual actions, kept in SQL so it survives the supervisor and Redis."""

    __tablename__ = "worker_restart_events"
    __table_args__ = (Index("ix_worker_restart_events_worker_ts", "worker_name", "timestamp"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    worker_name: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))  # success | crashed | failed | manual
    action: Mapped[str | None] = mapped_column(String(16), nullable=True)  # manual: start/stop/restart/reset
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    node: Mapped[str | None] = mapped_column(String(255), nullable=True)


class PerformanceSnapshot(Base):
    """What GET /api/system/performance showed at `timestamp`; the performance history reads these."""

    __tablename__ = "performance_snapshots"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    data: Mapped[dict] = mapped_column(JSONType, default=dict)
