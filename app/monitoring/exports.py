"""POST /metrics/export: the rollups over a period as CSV or JSON, written under VIGIL_EXPORT_DIR like the
log exports, by a job on the `cleanup` queue (`vigil.cleanup.export_metrics`, workers/tasks/exports.py).

The API answers 202 at once with `status: processing`; the job writes the file and marks the status record
(Redis, kept VIGIL_EXPORT_RETENTION_HOURS) `completed` with its `rows`, or `failed` with an `error`. The
job goes through `celery.send_task` with its own task id, as the log export's does, so the job registry
records it when it is published and the jobs API shows it. The file is written as `<id>.<ext>.part` and
renamed when complete, so a download never sees half a file and a re-run (acks are late) starts over.
Files older than the retention are deleted by the hourly `vigil.cleanup.purge_exports` (`purge_expired`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from app.celery.app import celery
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.monitoring import rollups
from app.monitoring.metrics import GRANULARITY

log = logging.getLogger(__name__)

EXPORT_KEY = KEY_PREFIX + "monitoring:export:"
EXPORT_TASK = "vigil.cleanup.export_metrics"
MAX_BUCKETS = 100_000
BASE = "/api/v1/monitoring/metrics/export/"
COLUMNS = ["timestamp", "agent_id", "metric", "value"]


def _dir(settings: Settings) -> Path:
    return Path(settings.export_dir) / "monitoring"


def _path(settings: Settings, export_id: str, fmt: str) -> Path:
    return _dir(settings) / f"{export_id}.{fmt}"


def _ttl(settings: Settings) -> int:
    return max(1, int(settings.export_retention_hours * 3600))


def _save(settings: Settings, record: dict[str, Any]) -> None:
    get_redis(settings).set(EXPORT_KEY + record["export_id"], json.dumps(record), ex=_ttl(settings))


def _values(counts: rollups.Counts, metric: str) -> list[tuple[str, float]]:
    if metric == "requests":
        return [("requests", counts.requests), ("successful", counts.successes), ("failed", counts.failures)]
    if metric == "latency":
        return [("avg_ms", counts.avg_ms), ("p95_ms", counts.percentile(95)), ("p99_ms", counts.percentile(99))]
    if metric == "tokens":
        return [("input_tokens", counts.input_tokens), ("output_tokens", counts.output_tokens)]
    return [(f"errors_{t}", n) for t, n in counts.errors.items()]


# --- API side ------------------------------------------------------------------------------------------
def create(
    settings: Settings, metrics: list[str], start: datetime, end: datetime, fmt: str, granularity: str
) -> dict[str, Any]:
    """Record the export as `processing`, then queue its job. The record is written first, so the job
    always finds it; a publish that fails marks it failed and answers 503 rather than leaving it processing."""
    if start > end:
        raise InvalidInput("period.start must not be after period.end", code="validation_error")
    span = GRANULARITY[granularity]
    first, last = int(start.timestamp()) // span * span, int(end.timestamp())
    if (last - first) // span > MAX_BUCKETS:
        raise InvalidInput(f"{granularity} buckets over that period exceed {MAX_BUCKETS}; use a coarser granularity")
    export_id = uuid.uuid4().hex
    job_id = str(uuid.uuid4())
    record = {
        "export_id": export_id,
        "status": "processing",
        "format": fmt,
        "metrics": metrics,
        "granularity": granularity,
        "period": {"start": iso_utc(start), "end": iso_utc(end)},
        "rows": 0,
        "created_at": iso_utc(time.time()),
        "completed_at": None,
        "expires_at": None,
        "error": None,
        "job_id": job_id,
        "status_url": BASE + export_id,
        "download_url": None,
    }
    _save(settings, record)
    try:
        celery.send_task(EXPORT_TASK, kwargs={"export_id": export_id}, task_id=job_id)
    except Exception as exc:
        _save(settings, {**record, "status": "failed", "error": f"could not queue the export: {type(exc).__name__}"})
        raise Unavailable("The broker is unavailable; the export was not queued.") from None
    log.info("metrics export %s queued (%s)", export_id, fmt, extra={"export_id": export_id, "format": fmt})
    return record


def get(settings: Settings, export_id: str) -> dict[str, Any]:
    raw = get_redis(settings).get(EXPORT_KEY + export_id)
    if not raw:
        raise NotFound(f"No metrics export '{export_id[:64]}' (or it expired)", code="export_not_found")
    return json.loads(raw)


def file_for(settings: Settings, export_id: str) -> tuple[Path, str]:
    """The finished file: 404 unknown or expired, 409 while processing or once failed (as the log export)."""
    record = get(settings, export_id)
    if record["status"] != "completed":
        raise Conflict(
            f"Export {export_id} is {record['status']}; nothing to download.",
            code="export_not_ready",
            extra={"status": record["status"]},
        )
    path = _path(settings, export_id, record["format"])
    if not path.is_file():
        raise NotFound(f"The file of export '{export_id}' is gone", code="export_not_found")
    return path, record["format"]


# --- worker side ---------------------------------------------------------------------------------------------
def run(settings: Settings, export_id: str) -> dict[str, Any]:
    """The export job: read the rollup rows of the period and write them, one row per bucket, agent and value."""
    try:
        record = get(settings, export_id)
    except NotFound:
        return {"export_id": export_id, "status": "missing"}
    record.update(status="processing", error=None)
    part = _path(settings, export_id, record["format"]).with_suffix(f".{record['format']}.part")
    try:
        span = GRANULARITY[record["granularity"]]
        start = datetime.fromisoformat(record["period"]["start"])
        end = datetime.fromisoformat(record["period"]["end"])
        first, last = int(start.timestamp()) // span * span, int(end.timestamp())
        with session_scope(settings) as session:
            rows = rollups.read(session, span, first, last + 1)
        cells: dict[tuple[int, str], rollups.Counts] = {}
        for row in rows:
            cells.setdefault((row.bucket, row.agent_id), rollups.Counts()).add(row)
        lines = [
            {"timestamp": iso_utc(bucket), "agent_id": agent, "metric": name, "value": value}
            for (bucket, agent), counts in sorted(cells.items())
            for metric in record["metrics"]
            for name, value in _values(counts, metric)
        ]
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "w", newline="", encoding="utf-8") as fh:
            if record["format"] == "csv":
                writer = csv.DictWriter(fh, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(lines)
            else:
                json.dump(lines, fh)
        os.replace(part, _path(settings, export_id, record["format"]))
    except BaseException as exc:
        try:
            part.unlink(missing_ok=True)
        except OSError:  # the folder itself is what failed
            pass
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000], completed_at=iso_utc(time.time()))
        _save(settings, record)
        raise
    now = time.time()
    record.update(
        status="completed",
        rows=len(lines),
        completed_at=iso_utc(now),
        expires_at=iso_utc(now + _ttl(settings)),
        download_url=BASE + export_id + "/download",
    )
    _save(settings, record)  # the record's TTL restarts with the file's retention
    log.info("metrics export %s completed: %d rows", export_id, len(lines), extra={"export_id": export_id})
    return {"export_id": export_id, "status": "completed", "rows": len(lines)}


def purge_expired(settings: Settings, now: float | None = None) -> int:
    """Delete export files (and `.part` files a dead job left) older than the retention; returns how many.
    Their status records expire by themselves (Redis TTL)."""
    now = time.time() if now is None else now
    cutoff = now - _ttl(settings)
    purged = 0
    folder = _dir(settings)
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                purged += 1
        except FileNotFoundError:
            continue
    return purged
