"""System: readiness (database, Redis, AI, workers), the GPU, storage, and charts of the last hour drawn from the
history the API serves: pipeline throughput and latency (GET /api/system/pipeline-latency/history) and the GPU's
samples (GET /api/system/gpu/history)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, render_template

from app.api.kit.current import current_settings
from app.console import charts
from app.core.db import session_scope
from app.jobs.registry import get_registry
from app.ops import gpu, health
from app.ops.storage import storage_stats
from app.pipeline import telemetry

bp = Blueprint("system", __name__)

HOUR = 3600
BUCKET = 60
GPU_SAMPLES = 720


def _count(stage: str) -> Any:
    return lambda snap: float((snap.get(stage) or {}).get("sample_count") or 0)


def _p95_seconds(stage: str) -> Any:
    def read(snap: dict[str, Any]) -> float | None:
        figures = snap.get(stage)
        return None if not figures else figures["p95_ms"] / 1000

    return read


def pipeline_charts(history: dict[str, Any], start: float, end: float) -> list[charts.Chart]:
    """Throughput (samples per minute: a minute without any is a zero) and p95 latency (a gap) per stage."""
    snapshots = history["snapshots"]
    buckets = charts.minute_buckets(start, end, BUCKET)
    throughput = []
    for label, stage in (("images detected", "watch_to_detect"), ("events written", "total_pipeline")):
        got = charts.from_snapshots(snapshots, _count(stage))
        throughput.append((label, [(t, got.get(t, 0.0)) for t in buckets]))
    latency = []
    for label, stage in (
        ("image seen → event", "total_pipeline"),
        ("watcher → detection", "watch_to_detect"),
        ("batch closed → analysis", "batch_to_analyze"),
    ):
        got = charts.from_snapshots(snapshots, _p95_seconds(stage))
        latency.append((label, [(t, got.get(t)) for t in buckets]))
    return [
        charts.line_chart(
            "Pipeline throughput, per minute",
            "per minute",
            throughput,
            start,
            end,
            empty="Nothing went through the pipeline in the last hour.",
        ),
        charts.line_chart(
            "Pipeline latency, p95", "s", latency, start, end, empty="No latency samples in the last hour."
        ),
    ]


def gpu_chart(samples: list[dict[str, Any]], start: float, end: float) -> charts.Chart:
    def at(sample: dict[str, Any]) -> float:
        return datetime.fromisoformat(sample["recorded_at"].replace("Z", "+00:00")).timestamp()

    def memory(sample: dict[str, Any]) -> float | None:
        used, total = sample.get("memory_used"), sample.get("memory_total")
        return used / total * 100 if used is not None and total else None

    series = [
        ("utilisation", [(at(s), s.get("utilization")) for s in samples]),
        ("memory used", [(at(s), memory(s)) for s in samples]),
    ]
    return charts.line_chart(
        "GPU, last hour",
        "%",
        series,
        start,
        end,
        y_max=100,
        empty="No GPU samples in the last hour: no GPU, or the GPU monitor is not running.",
    )


@bp.get("/system")
def index() -> str:
    settings = current_settings()
    end = time.time()
    start = end - HOUR
    verdict = health.readiness(settings)
    with session_scope(settings) as session:
        gpu_now = gpu.current(session, get_registry(settings), max_age=3 * settings.gpu_poll_interval)
        gpu_history = gpu.history(session, datetime.fromtimestamp(start, tz=UTC), GPU_SAMPLES)
        storage = storage_stats(settings, session)
    history = telemetry.latency_history(settings, HOUR // 60, BUCKET)
    return render_template(
        "console/system.html",
        verdict=verdict,
        gpu=gpu_now,
        storage=storage,
        charts=[*pipeline_charts(history, start, end), gpu_chart(gpu_history, start, end)],
    )
