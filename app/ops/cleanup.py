"""Retention cleanup, orphaned files and storage figures (System API and System Operations API cleanup and
storage endpoints).

Retention cleanup deletes events, detections, GPU stats and logs older than `retention_days`, the
thumbnails of the deleted detections and, with `delete_images` on, their original images. It runs
as a job on the `cleanup` queue (`vigil.cleanup.run`, daily from beat), one at a time across every
process (a Redis lock), and deletes in batches of `VIGIL_CLEANUP_BATCH_SIZE` rows, one short
transaction each, so the tables stay usable while it runs.

A dry run walks exactly the same batches with exactly the same rules and deletes nothing, so its
counts are what the real run deletes (given the same cutoff and no new old rows in between). The
file rules, shared by both modes:

* a file is counted (and deleted) only when it exists and resolves inside its root (thumbnails
  under `VIGIL_THUMBNAIL_DIR`, images under `VIGIL_CAMERA_ROOT`); anything else is left alone;
* a file still referenced by a detection that is kept (younger than the cutoff) is kept;
* each file counts once, however many deleted detections referenced it.

A batch is the next `batch` ids past the cutoff in id order, so "ids between the batch's first and
last, past the cutoff" is exactly that batch: the delete is an index range scan rather than a
thousand-value IN list. Database rows are deleted first and committed, then their files: a crash in between leaves files
without rows, which the orphaned-file cleanup finds, never rows pointing at missing files.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.celery.app import celery
from app.core.errors import Conflict, ServiceError, Unavailable
from app.core.redis_client import KEY_PREFIX
from app.core.settings import Settings
from app.core.time import iso_now, iso_utc
from app.jobs import heartbeats
from app.jobs.enqueue import enqueue
from app.jobs.registry import TERMINAL, get_registry
from app.models import Detection, Event, GpuStat, Log, Upload
from app.pipeline import runtime_config

log = logging.getLogger(__name__)

LOCK_KEY = KEY_PREFIX + "lock:cleanup"
LAST_RUN_KEY = KEY_PREFIX + "cleanup:last"
LOCK_TTL = 120.0  # renewed every LOCK_TTL / 4 while the cleanup runs

# Release the lock only if we still hold it (a token comparison and delete in one step).
_RELEASE = """
if redis.call('GET', KEYS[1]) and cjson.decode(redis.call('GET', KEYS[1]))['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) and cjson.decode(redis.call('GET', KEYS[1]))['token'] == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


# ---- configuration at run time ----------------------------------------------------------------------
def effective_retention(session: Session, settings: Settings) -> tuple[int, bool]:
    """Retention in force: `retention_days` from the runtime config (PATCH /api/system/config) over
    the environment's default, read fresh so a change applies to the next run; `delete_images`
    from the environment."""
    return int(runtime_config.effective(settings, fresh=True)["retention_days"]), settings.delete_images


# ---- one cleanup at a time -------------------------------------------------------------------------------
class CleanupLock:
    """A Redis lock with a token, renewed by a thread while held, so a killed cleanup frees it within
    `LOCK_TTL` and a slow one never loses it."""

    def __init__(self, client: redis.Redis, holder: dict[str, Any], ttl: float = LOCK_TTL):
        self.client = client
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self.holder = dict(holder, token=self.token, since=time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.client.set(LOCK_KEY, json.dumps(self.holder), nx=True, px=int(self.ttl * 1000)):
            return False
        self._thread = threading.Thread(target=self._renew, name="cleanup-lock", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.client.eval(_RENEW, 1, LOCK_KEY, self.token, int(self.ttl * 1000)):
                    log.error("cleanup lock lost")
                    return
            except Exception:
                log.warning("cleanup lock renewal failed", exc_info=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        try:
            self.client.eval(_RELEASE, 1, LOCK_KEY, self.token)
        except Exception:
            log.warning("cleanup lock release failed; it expires in %.0fs", self.ttl, exc_info=True)

    def __enter__(self) -> CleanupLock:
        holder = current_holder(self.client)
        if not self.acquire():
            raise Conflict(
                "Another cleanup is running" + (f" (job {holder.get('job_id')})" if holder else ""),
                extra={"running_job": holder.get("job_id") if holder else None},
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def current_holder(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(LOCK_KEY)
    if not raw:
        return None
    try:
        holder = json.loads(raw)
    except ValueError:
        return None
    holder.pop("token", None)
    return holder


# ---- retention cleanup ----------------------------------------------------------------------------------
@dataclass
class CleanupReport:
    retention_days: int
    dry_run: bool
    cutoff: datetime
    delete_images: bool
    events_deleted: int = 0
    detections_deleted: int = 0
    gpu_stats_deleted: int = 0
    logs_deleted: int = 0
    uploads_deleted: int = 0
    thumbnails_deleted: int = 0
    images_deleted: int = 0
    space_reclaimed: int = 0
    files_skipped: int = 0
    batches: int = 0
    phase: str = "starting"
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_deleted": self.events_deleted,
            "detections_deleted": self.detections_deleted,
            "gpu_stats_deleted": self.gpu_stats_deleted,
            "logs_deleted": self.logs_deleted,
            "uploads_deleted": self.uploads_deleted,
            "thumbnails_deleted": self.thumbnails_deleted,
            "images_deleted": self.images_deleted,
            "space_reclaimed": self.space_reclaimed,
            "retention_days": self.retention_days,
            "dry_run": self.dry_run,
            "timestamp": iso_now(),
            "cutoff": iso_utc(self.cutoff),
            "delete_images": self.delete_images,
            "files_skipped": self.files_skipped,
            "batches": self.batches,
            "phase": self.phase,
            "duration_seconds": round(time.time() - self.started, 3),
        }


class _Files:
    """Counts (dry run) or deletes (real run) files under one root, each file once."""

    def __init__(self, root: Path, report: CleanupReport, counter: str):
        self.root = Path(root).resolve()
        self.report = report
        self.counter = counter
        self.seen: set[str] = set()

    def path_of(self, stored: str) -> Path | None:
        candidate = Path(stored)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        try:
            real = candidate.resolve()
        except OSError:
            return None
        if real == self.root or self.root not in real.parents:
            return None
        return real

    def handle(self, stored: str, dry_run: bool) -> None:
        real = self.path_of(stored)
        if real is None:
            self.report.files_skipped += 1
            log.warning("cleanup leaves %s alone: it is not inside %s", stored, self.root)
            return
        key = str(real)
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return
        if not os.path.isfile(real) or os.path.islink(real):
            self.report.files_skipped += 1
            return
        if not dry_run:
            try:
                os.unlink(real)
            except FileNotFoundError:
                return
            except OSError:
                self.report.files_skipped += 1
                log.warning("cleanup could not delete %s", real, exc_info=True)
                return
        setattr(self.report, self.counter, getattr(self.report, self.counter) + 1)
        self.report.space_reclaimed += st.st_size


def _kept_references(session: Session, column: Any, time_column: Any, values: set[str], cutoff: datetime) -> set[str]:
    """Which of `values` are still referenced by rows the cleanup keeps."""
    if not values:
        return set()
    rows = session.execute(select(column).where(column.in_(values), time_column >= cutoff).distinct())
    return {v for (v,) in rows}


def run_retention_cleanup(
    settings: Settings,
    session_factory: Callable[[], Session],
    *,
    dry_run: bool,
    now: datetime | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Delete (or, with `dry_run`, count) everything past retention; returns the report."""

    now = now or datetime.now(UTC)
    with session_factory() as session:
        days, delete_images = effective_retention(session, settings)
    report = CleanupReport(
        retention_days=days, dry_run=dry_run, cutoff=now - timedelta(days=days), delete_images=delete_images
    )
    cutoff = report.cutoff
    batch = max(1, settings.cleanup_batch_size)
    thumbnails = _Files(settings.thumbnail_dir, report, "thumbnails_deleted")
    images = _Files(settings.camera_root, report, "images_deleted")

    def step() -> None:
        report.batches += 1
        if progress is not None:
            try:
                progress(report.as_dict())
            except Exception:
                log.debug("progress report failed", exc_info=True)
        if settings.cleanup_batch_pause:
            time.sleep(settings.cleanup_batch_pause)

    # Detections first: their files go with them.
    report.phase = "detections"
    last_id = 0
    while True:
        with session_factory() as session:
            rows = session.execute(
                select(Detection.id, Detection.thumbnail_path, Detection.file_path)
                .where(Detection.detected_at < cutoff, Detection.id > last_id)
                .order_by(Detection.id)
                .limit(batch)
            ).all()
            if not rows:
                break
            ids = [r.id for r in rows]
            thumbs = {r.thumbnail_path for r in rows if r.thumbnail_path}
            originals = {r.file_path for r in rows if r.file_path} if delete_images else set()
            kept_thumbs = _kept_references(session, Detection.thumbnail_path, Detection.detected_at, thumbs, cutoff)
            kept_images = _kept_references(session, Detection.file_path, Detection.detected_at, originals, cutoff)
            if dry_run:
                report.detections_deleted += len(ids)
            else:
                result = session.execute(
                    delete(Detection).where(Detection.id.between(ids[0], ids[-1]), Detection.detected_at < cutoff)
                )
                session.commit()
                report.detections_deleted += result.rowcount
        last_id = ids[-1]
        for path in sorted(thumbs - kept_thumbs):
            thumbnails.handle(path, dry_run)
        for path in sorted(originals - kept_images):
            images.handle(path, dry_run)
        step()

    # An upload row is what stops the watcher's reconcile scan from enqueuing its file again, and the
    # scan looks at files modified within VIGIL_WATCHER_RECONCILE_MAX_AGE_SECONDS: a row goes only once
    # it is past both that window (with a day's margin) and the retention.
    uploads_cutoff = min(cutoff, now - timedelta(seconds=settings.watcher_reconcile_max_age_seconds, days=1))
    for phase, model, column, counter, before in (
        ("events", Event, Event.created_at, "events_deleted", cutoff),
        ("gpu_stats", GpuStat, GpuStat.recorded_at, "gpu_stats_deleted", cutoff),
        ("logs", Log, Log.timestamp, "logs_deleted", cutoff),
        ("uploads", Upload, Upload.first_seen_at, "uploads_deleted", uploads_cutoff),
    ):
        report.phase = phase
        last_id = 0
        while True:
            with session_factory() as session:
                ids = (
                    session.execute(
                        select(model.id).where(column < before, model.id > last_id).order_by(model.id).limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    break
                if dry_run:
                    deleted = len(ids)
                else:
                    deleted = session.execute(
                        delete(model).where(model.id.between(ids[0], ids[-1]), column < before)
                    ).rowcount
                    session.commit()
            setattr(report, counter, getattr(report, counter) + deleted)
            last_id = ids[-1]
            step()
    report.phase = "done"
    return report.as_dict()


# ---- the job, as the API starts and reads it ---------------------------------------------------------------
class CleanupFailed(ServiceError):
    status = 500
    code = "cleanup_failed"


def next_cleanup(now: datetime | None = None) -> datetime | None:
    """When beat runs the daily cleanup next, from beat's own schedule (so the two cannot disagree)."""

    entry = next((e for e in (celery.conf.beat_schedule or {}).values() if e.get("task") == "vigil.cleanup.run"), None)
    if entry is None:
        return None
    schedule = entry["schedule"]
    now = now or datetime.now(UTC)
    if hasattr(schedule, "remaining_delta"):  # crontab: the next occurrence after now
        start, delta, _ = schedule.remaining_delta(now)
        return (start + delta).astimezone(UTC)
    return now + timedelta(seconds=float(schedule))


def cleanup_workers(client: redis.Redis, settings: Settings) -> list[str]:
    """Live worker nodes consuming the `cleanup` queue right now (from heartbeats)."""
    return [b["node"] for b in heartbeats.alive(client, settings.heartbeat_ttl) if "cleanup" in (b.get("queues") or [])]


def last_run(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(LAST_RUN_KEY)
    return json.loads(raw) if raw else None


def save_last_run(client: redis.Redis, report: dict[str, Any]) -> None:
    client.set(LAST_RUN_KEY, json.dumps(report, default=str))


def cleanup_status(settings: Settings, session: Session, client: redis.Redis) -> dict[str, Any]:
    days, delete_images = effective_retention(session, settings)
    upcoming = next_cleanup()
    return {
        "running": bool(cleanup_workers(client, settings)),
        "retention_days": days,
        "cleanup_time": settings.cleanup_time,
        "delete_images": delete_images,
        "next_cleanup": iso_utc(upcoming) if upcoming else None,
        "in_progress": current_holder(client),
        "last_run": last_run(client),
        "timestamp": iso_now(),
    }


def trigger_cleanup(
    settings: Settings, client: redis.Redis, *, dry_run: bool, wait: float | None = None
) -> tuple[int, dict[str, Any]]:
    """Enqueue a cleanup job on the `cleanup` queue and wait (bounded) for its counts.

    200 with the counts when the job finishes within `wait`; 202 with the job id and its progress
    otherwise (it keeps running; GET the job or the cleanup status). 503 when no worker consumes the
    `cleanup` queue (the job would only sit there), 409 when another cleanup holds the lock.
    """

    if not cleanup_workers(client, settings):
        raise Unavailable(
            "No worker is consuming the 'cleanup' queue (cleanup_service is stopped or down); nothing was enqueued"
        )
    holder = current_holder(client)
    if holder is not None:
        raise Conflict(
            f"Another cleanup is running (job {holder.get('job_id')})", extra={"running_job": holder.get("job_id")}
        )
    job = enqueue("cleanup", {"dry_run": dry_run}, settings=settings)
    registry = get_registry(settings)
    deadline = time.monotonic() + (settings.cleanup_wait_seconds if wait is None else wait)
    record = registry.get(job.job_id)
    while (record is None or record["state"] not in TERMINAL) and time.monotonic() < deadline:
        time.sleep(0.1)
        record = registry.get(job.job_id)
    state = record["state"] if record else "waiting"
    if state == "completed":
        result = dict(record["result"] or {})
        if result.get("skipped"):
            raise Conflict(
                result.get("reason") or "Another cleanup is running",
                extra={"job_id": job.job_id, "running_job": result.get("running_job")},
            )
        return 200, dict(result, job_id=job.job_id)
    if state in ("failed", "revoked"):
        raise CleanupFailed(f"Cleanup job {job.job_id} {state}: {record.get('error')}", extra={"job_id": job.job_id})
    return 202, {
        "job_id": job.job_id,
        "state": state,
        "dry_run": dry_run,
        "progress": record.get("progress") if record else None,
        "message": "Cleanup is still running; its counts will be in the job's result",
    }
