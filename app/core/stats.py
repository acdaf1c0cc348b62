"""Latency statistics shared by the pipeline, infrastructure and benchmark figures."""

from __future__ import annotations

from typing import Any


def percentile(ordered: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on *sorted* values."""
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(values: list[float]) -> dict[str, Any] | None:
    """avg/min/max/p50/p95/p99 (ms, as given) and the sample count; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return {
        "avg_ms": round(sum(ordered) / len(ordered), 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p95_ms": round(percentile(ordered, 95), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "sample_count": len(ordered),
    }
