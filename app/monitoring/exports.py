"""POST /metrics/export: the rollups over a period as CSV or JSON, written under VIGIL_EXPORT_DIR like the
log exports, with a status record (Redis, kept VIGIL_EXPORT_RETENTION_HOURS) and a download path.

The file is written from the rollup rows (never the `jobs` table), which is bounded and quick, so the
export is complete by the time the 202 answers; the status endpoint still reports it the way a
client of an asynchronous export expects (`status`, `rows`, `download_url`)."""

from __future__ import annotations

import csv
import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from app.core.db import session_scope
from app.core.errors import InvalidInput, NotFound
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.monitoring import rollups
from app.monitoring.metrics import GRANULARITY

EXPORT_KEY = KEY_PREFIX + "monitoring:export:"
MAX_BUCKETS = 100_000
BASE = "/api/v1/monitoring/metrics/export/"


def _path(settings: Settings, export_id: str, fmt: str) -> Path:
    return Path(settings.export_dir) / "monitoring" / f"{export_id}.{fmt}"


def _values(counts: rollups.Counts, metric: str) -> list[tuple[str, float]]:
    if metric == "requests":
        return [("requests", counts.requests), ("successful", counts.successes), ("failed", counts.failures)]
    if metric == "latency":
        return [("avg_ms", counts.avg_ms), ("p95_ms", counts.percentile(95)), ("p99_ms", counts.percentile(99))]
    if metric == "tokens":
        return [("input_tokens", counts.input_tokens), ("output_tokens", counts.output_tokens)]
    return [(f"errors_{t}", n) for t, n in counts.errors.items()]


def create(
    settings: Settings, metrics: list[str], start: datetime, end: datetime, fmt: str, granularity: str
) -> dict[str, Any]:
    if start > end:
        raise InvalidInput("period.start must not be after period.end", code="validation_error")
    span = GRANULARITY[granularity]
    first, last = int(start.timestamp()) // span * span, int(end.timestamp())
    if (last - first) // span > MAX_BUCKETS:
        raise InvalidInput(f"{granularity} buckets over that period exceed {MAX_BUCKETS}; use a coarser granularity")
    export_id = uuid.uuid4().hex
    with session_scope(settings) as session:
        rows = rollups.read(session, span, first, last + 1)
    cells: dict[tuple[int, str], rollups.Counts] = {}
    for row in rows:
        cells.setdefault((row.bucket, row.agent_id), rollups.Counts()).add(row)
    lines = [
        {"timestamp": iso_utc(bucket), "agent_id": agent, "metric": name, "value": value}
        for (bucket, agent), counts in sorted(cells.items())
        for metric in metrics
        for name, value in _values(counts, metric)
    ]
    path = _path(settings, export_id, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        if fmt == "csv":
            writer = csv.DictWriter(fh, fieldnames=["timestamp", "agent_id", "metric", "value"])
            writer.writeheader()
            writer.writerows(lines)
        else:
            json.dump(lines, fh)
    now = time.time()
    record = {
        "export_id": export_id,
        "status": "completed",
        "format": fmt,
        "metrics": metrics,
        "granularity": granularity,
        "period": {"start": iso_utc(start), "end": iso_utc(end)},
        "rows": len(lines),
        "created_at": iso_utc(now),
        "completed_at": iso_utc(time.time()),
        "expires_at": iso_utc(now + settings.export_retention_hours * 3600),
        "status_url": BASE + export_id,
        "download_url": BASE + export_id + "/download",
    }
    get_redis(settings).set(EXPORT_KEY + export_id, json.dumps(record), ex=settings.export_retention_hours * 3600)
    return record


def get(settings: Settings, export_id: str) -> dict[str, Any]:
    raw = get_redis(settings).get(EXPORT_KEY + export_id)
    if not raw:
        raise NotFound(f"No metrics export '{export_id[:64]}' (or it expired)", code="export_not_found")
    return json.loads(raw)


def file_for(settings: Settings, export_id: str) -> tuple[Path, str]:
    record = get(settings, export_id)
    path = _path(settings, export_id, record["format"])
    if not path.is_file():
        raise NotFound(f"The file of export '{export_id}' is gone", code="export_not_found")
    return path, record["format"]
