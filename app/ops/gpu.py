"""GPU figures: NVML sampling (used by the GPU monitor) and the reads behind /api/system/gpu.

NVML is reached through `pynvml` (the `nvidia-ml-py` package) or any object shaped like it, which
is how the tests exercise the GPU path on machines without one. Without a driver or a GPU every
figure is null: that is a normal state for a CPU-only install, so it is logged once, at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.celery.queues import QUEUES
from app.core.time import iso_utc
from app.jobs.registry import INDEX_KEY, JOB_KEY, JobRegistry
from app.models import GpuStat

log = logging.getLogger(__name__)

GPU_FIELDS = ("gpu_name", "utilization", "memory_used", "memory_total", "temperature", "power_usage")
FPS_WINDOW = 60.0
MIB = 1024 * 1024
DETECTION_QUEUES = tuple(q.name for q in QUEUES if q.family == "detection")


def empty_sample() -> dict[str, Any]:
    return {name: None for name in GPU_FIELDS}


class NvmlSampler:
    """Samples every GPU NVML reports. A figure a device does not support is null; a failure of
    NVML as a whole marks it unavailable until a later `init` succeeds."""

    def __init__(self, nvml: Any = None):
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py
        self.nvml = nvml
        self.ready = False
        self.reason: str | None = None
        self.count = 0
        self._unsupported: set[tuple[int, str]] = set()

    def init(self) -> bool:
        try:
            self.nvml.nvmlInit()
            self.count = int(self.nvml.nvmlDeviceGetCount())
        except Exception as exc:  # no driver, no library, no device: all mean "no GPU figures"
            self.ready, self.reason, self.count = False, f"{type(exc).__name__}: {exc}", 0
            return False
        self.ready, self.reason = True, None
        if self.count == 0:
            self.reason = "NVML reports no GPU"
        return True

    def shutdown(self) -> None:
        if self.ready:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
        self.ready = False

    def sample(self) -> list[dict[str, Any]]:
        """One dict per GPU; raises if NVML itself fails (the caller then re-initialises later)."""
        nvml = self.nvml
        out = []
        for index in range(self.count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = self._field(index, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
            out.append(
                {
                    "gpu_index": index,
                    "gpu_name": self._field(index, "name", lambda: _text(nvml.nvmlDeviceGetName(handle))),
                    "utilization": self._field(
                        index, "utilization", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                    ),
                    "memory_used": int(memory.used // MIB) if memory is not None else None,
                    "memory_total": int(memory.total // MIB) if memory is not None else None,
                    "temperature": self._field(
                        index,
                        "temperature",
                        lambda: float(nvml.nvmlDeviceGetTemperature(handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))),
                    ),
                    "power_usage": self._field(
                        index, "power", lambda: round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 2)
                    ),
                }
            )
        return out

    def _field(self, index: int, name: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as exc:
            if _is_not_supported(exc):
                if (index, name) not in self._unsupported:
                    self._unsupported.add((index, name))
                    log.info("GPU %d does not report %s; it stays null", index, name)
                return None
            raise


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_not_supported(exc: Exception) -> bool:
    return "NotSupported" in type(exc).__name__ or "Not Supported" in str(exc)


# ---- inference figures from the job registry ------------------------------------------------------
def inference_fps(registry: JobRegistry, now: float | None = None, window: float = FPS_WINDOW) -> float | None:
    """Detection jobs completed per second over the last minute; null when none completed (no
    measurement, rather than a misleading 0)."""
    now = time.time() if now is None else now
    done = sum(registry.count_since(q, "completed", now - window) for q in DETECTION_QUEUES)
    return round(done / window, 3) if done else None


def inference_latency(
    registry: JobRegistry, now: float | None = None, window: float = 300.0, sample: int = 500
) -> dict[str, Any]:
    """Run time (started -> finished) of recent completed detection jobs: average and p95, in ms."""
    now = time.time() if now is None else now
    durations: list[float] = []
    for queue in DETECTION_QUEUES:
        ids = registry.r.zrevrangebyscore(f"{INDEX_KEY}{queue}:completed", "+inf", now - window, start=0, num=sample)
        if not ids:
            continue
        with registry.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(JOB_KEY + job_id, "started_at", "finished_at")
            times = pipe.execute()
        durations += [(float(f) - float(s)) * 1000 for s, f in times if s and f]
    if not durations:
        return {
            "avg_latency_ms": None,
            "p95_latency_ms": None,
            "throughput_fps": inference_fps(registry, now),
            "sample_count": 0,
        }
    durations.sort()
    p95 = durations[min(len(durations) - 1, int(round(0.95 * (len(durations) - 1))))]
    return {
        "avg_latency_ms": round(sum(durations) / len(durations), 2),
        "p95_latency_ms": round(p95, 2),
        "throughput_fps": inference_fps(registry, now),
        "sample_count": len(durations),
    }


# ---- reads for the API ------------------------------------------------------------------------------


def sample_dict(row: Any) -> dict[str, Any]:
    return {
        "recorded_at": iso_utc(row.recorded_at),
        "gpu_name": row.gpu_name,
        "utilization": row.utilization,
        "memory_used": row.memory_used,
        "memory_total": row.memory_total,
        "temperature": row.temperature,
        "power_usage": row.power_usage,
        "inference_fps": row.inference_fps,
        "gpu_index": row.gpu_index,
    }


def latest(session: Session, max_age: float, gpu_index: int = 0) -> dict[str, Any] | None:
    """The newest sample of a GPU if it is fresh (the monitor is alive), else None."""

    cutoff = datetime.now(UTC) - timedelta(seconds=max_age)
    row = session.execute(
        select(GpuStat)
        .where(GpuStat.gpu_index == gpu_index, GpuStat.recorded_at >= cutoff)
        .order_by(GpuStat.recorded_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    return sample_dict(row) if row is not None else None


def history(session: Session, since: datetime | None, limit: int, gpu_index: int = 0) -> list[dict[str, Any]]:
    """Samples in time order: the first `limit` after `since`, or the latest `limit` without it."""

    query = select(GpuStat).where(GpuStat.gpu_index == gpu_index)
    if since is not None:
        rows = (
            session.execute(
                query.where(GpuStat.recorded_at >= since)
                .order_by(GpuStat.recorded_at.asc(), GpuStat.id.asc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
    else:
        rows = list(
            reversed(
                session.execute(query.order_by(GpuStat.recorded_at.desc(), GpuStat.id.desc()).limit(limit))
                .scalars()
                .all()
            )
        )
    return [sample_dict(r) for r in rows]


def current(session: Session, registry: JobRegistry, max_age: float) -> dict[str, Any]:
    """GET /api/system/gpu: the fresh sample of GPU 0 (nulls without one) and live inference fps."""
    sample = latest(session, max_age)
    body = empty_sample()
    if sample is not None:
        body.update({k: sample[k] for k in GPU_FIELDS})
        body["recorded_at"] = sample["recorded_at"]
    else:
        body["recorded_at"] = None
    body["inference_fps"] = inference_fps(registry)
    return body
