"""One image through the detector: filter, thumbnails, SQL rows, the camera's batch, stage samples;
and the detections read back (GET /api/detections).

The detection task (`workers/tasks/detection.py`) calls `process_image` and owns only the retry
policy. The work is idempotent per job: a job run twice (a worker killed after the commit; acks
are late) finds its own rows by `job_id` and neither inserts nor batches them again. An image of a
disabled camera is not detected: its job completes with `skipped: "camera disabled"`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import NotFound
from app.core.redis_client import get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs.enqueue import resolve_in_root
from app.live import bus as live
from app.models import Camera, Detection, Event
from app.pipeline import paging, runtime_config, telemetry
from app.pipeline.ai import usage
from app.pipeline.ai.breakers import breaker
from app.pipeline.ai.detectors import Detection as Found
from app.pipeline.ai.detectors import DetectionResult, get_detector
from app.pipeline.batches import get_aggregator
from app.pipeline.cameras import camera_enabled, ensure_camera
from app.pipeline.paging import Page, PageRequest

log = logging.getLogger(__name__)


class InvalidImagePath(ValueError):
    """The job names a path outside the camera root, or one that is not there: never retried."""


@dataclass
class Outcome:
    camera_id: str
    found: int
    kept: int
    batch_id: str | None
    detection_ids: list[int]
    inference_time_ms: float | None
    backend: str
    repeated: bool = False
    skipped: str | None = None  # why the image was not detected (its camera is disabled)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "camera_id": self.camera_id,
            "detections_found": self.found,
            "detections_kept": self.kept,
            "batch_id": self.batch_id,
            "detection_ids": self.detection_ids,
            "inference_time_ms": self.inference_time_ms,
            "backend": self.backend,
            "repeated": self.repeated,
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def write_thumbnails(
    settings: Settings, image_path: Path, camera_id: str, stem: str, found: list[Found], image: Any = None
) -> list[str | None]:
    """A JPEG crop (with a margin) per detection, longest side `thumbnail_max_side`, cut from `image`
    (the frame the detector decoded) or else from the file. A thumbnail that cannot be written is
    logged and left out; it never fails the detection."""
    import cv2  # OpenCV is loaded only in the processes that run detection

    paths: list[str | None] = [None] * len(found)
    if image is None:
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        return paths
    height, width = image.shape[:2]
    folder = Path(settings.thumbnail_dir) / camera_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        log.warning("cannot create thumbnail folder %s", folder, exc_info=True)
        return paths
    for i, d in enumerate(found):
        mx, my = int(d.width * 0.1), int(d.height * 0.1)
        x0, y0 = max(0, d.x - mx), max(0, d.y - my)
        x1, y1 = min(width, d.x + d.width + mx), min(height, d.y + d.height + my)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = image[y0:y1, x0:x1]
        scale = min(1.0, settings.thumbnail_max_side / max(crop.shape[:2]))
        if scale < 1.0:
            crop = cv2.resize(
                crop,
                (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                interpolation=cv2.INTER_AREA,
            )
        target = folder / f"{stem}_{i}.jpg"
        try:
            if cv2.imwrite(str(target), crop, [cv2.IMWRITE_JPEG_QUALITY, 85]):
                paths[i] = str(target)
        except cv2.error:
            log.warning("thumbnail %s not written", target, exc_info=True)
    return paths


def _existing(session: Session, job_id: str) -> list[Detection]:
    return list(session.execute(select(Detection).where(Detection.job_id == job_id).order_by(Detection.id)).scalars())


def _assign(settings: Settings, ids: list[int], batch_id: str) -> None:
    with session_scope(settings) as session:
        session.execute(update(Detection).where(Detection.id.in_(ids)).values(batch_id=batch_id))


def _add_to_batch(
    settings: Settings,
    camera_id: str,
    ids: list[int],
    seen_at: float | None,
    detected_at: float,
    samples: list[tuple[str, float, float | None]],
) -> str:
    """Add the detections to the camera's open batch; its `detect_to_batch` sample joins `samples`,
    which the caller sends with its other bookkeeping."""
    config = runtime_config.effective(settings)
    batch_id, _count, _opened = get_aggregator(settings).add(
        camera_id,
        ids,
        window=config["batch_window_seconds"],
        idle=config["batch_idle_timeout_seconds"],
        seen_at=seen_at,
    )
    batched_at = time.time()
    samples.append(("detect_to_batch", (batched_at - detected_at) * 1000, batched_at))
    _assign(settings, ids, batch_id)
    return batch_id


def process_image(
    settings: Settings,
    *,
    job_id: str,
    camera_id: str,
    path: str,
    file_hash: str | None,
    seen_at: float | None,
    started_at: float,
    first_attempt: bool,
) -> Outcome:
    """Detect objects in one image and feed the camera's batch.

    Raises `InvalidImagePath` (never retried), `breakers.CircuitOpenError` and the detector's
    `DetectorUnavailable` (retried by the task), `ServiceRejected` (the image was refused: not retried).
    """
    try:
        real = resolve_in_root(path, settings.camera_root)
    except ValueError as exc:
        raise InvalidImagePath(str(exc)) from None
    if not real.is_file():
        raise InvalidImagePath(f"no such file: {real}")
    with session_scope(settings) as session:  # one read transaction for both questions
        enabled = camera_enabled(session, camera_id)
        done = _existing(session, job_id) if enabled else []
    if not enabled:  # recorded (the job and its outcome stay in the registry), not detected
        log.info("camera %s is disabled; %s not detected", camera_id, real.name)
        return Outcome(camera_id, 0, 0, None, [], None, "", skipped="camera disabled")

    samples: list[tuple[str, float, float | None]] = []  # written together, after the detector's answer
    if seen_at is not None and first_attempt:
        samples.append(("watch_to_detect", (started_at - seen_at) * 1000, started_at))
        samples.append(("watch", (seen_at - os.stat(real).st_mtime) * 1000, seen_at))

    if done:  # this job already stored its detections: finish what is missing, add nothing
        ids = [d.id for d in done]
        batch_id = done[0].batch_id
        if batch_id is None:  # stored, then stopped before its batch: add them now
            late: list[tuple[str, float, float | None]] = []
            batch_id = _add_to_batch(settings, camera_id, ids, seen_at, time.time(), late)
            telemetry.record_many(settings, late)
        return Outcome(camera_id, len(done), len(done), batch_id, ids, None, "", repeated=True)

    detector = get_detector(settings)
    # The job's bookkeeping in Redis (the breaker's success, the stage samples, the model's usage) is
    # queued here and sent in one round trip at the end, also when the job fails after the detector
    # answered: on a saturated machine each synchronous round trip waits for Redis to be scheduled,
    # and three of them cost the pool about as much as everything else around the detector.
    bookkeeping = get_redis(settings).pipeline(transaction=False)
    answered = False
    try:
        call_started = time.time()
        result = breaker(detector.service, settings).call(detector.detect, real, record_on=bookkeeping)
        detected_at, answered = time.time(), True
        samples.append(("detect", (detected_at - call_started) * 1000, detected_at))
        usage.queue_record(
            bookkeeping,
            settings,
            result.extra.get("model_times_ms") or {},
            backend=result.backend,
            at=detected_at,
            load_times=getattr(detector, "load_times", None),
        )
        return _store(settings, result, job_id, camera_id, real, file_hash, seen_at, detected_at, samples)
    finally:
        if answered:  # the stage samples describe a detection; a refused or failed call has none
            telemetry.queue_samples(bookkeeping, settings, samples)
        _send(bookkeeping)


def _send(pipe: redis.client.Pipeline) -> None:
    """Send queued bookkeeping; a Redis error loses it (logged), never the detections."""
    try:
        pipe.execute()
    except redis.RedisError:
        log.warning("could not record a detection's timings and model usage", exc_info=True)
    finally:
        pipe.reset()


def _store(
    settings: Settings,
    result: DetectionResult,
    job_id: str,
    camera_id: str,
    real: Path,
    file_hash: str | None,
    seen_at: float | None,
    detected_at: float,
    samples: list[tuple[str, float, float | None]],
) -> Outcome:
    """Keep the detections over the confidence threshold: thumbnails, rows, the camera's batch."""
    threshold = runtime_config.effective(settings)["detection_confidence_threshold"]
    kept = [d for d in result.detections if d.confidence >= threshold]
    if not kept:
        return Outcome(camera_id, len(result.detections), 0, None, [], result.inference_time_ms, result.backend)

    stem = (file_hash or job_id)[:16] + "_" + job_id[:8]
    thumbs = write_thumbnails(settings, real, camera_id, stem, kept, result.image)
    with session_scope(settings) as session:
        if session.get(Camera, camera_id) is None:  # a job sent through the API, not the watcher
            ensure_camera(session, camera_id, camera_id, str(real.parent))
        rows = [
            Detection(
                camera_id=camera_id,
                file_path=str(real),
                file_hash=file_hash,
                object_type=d.object_type,
                confidence=d.confidence,
                bbox_x=d.x,
                bbox_y=d.y,
                bbox_width=d.width,
                bbox_height=d.height,
                thumbnail_path=thumb,
                job_id=job_id,
                seen_at=_utc(seen_at),
                detected_at=_utc(detected_at),
            )
            for d, thumb in zip(kept, thumbs)
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    batch_id = _add_to_batch(settings, camera_id, ids, seen_at, detected_at, samples)
    for row_id, d in zip(ids, kept):
        live.publish_quietly(
            "detection.new",
            {
                "detection_id": row_id,
                "camera_id": camera_id,
                "object_type": d.object_type,
                "confidence": d.confidence,
                "bbox": [int(d.x), int(d.y), int(d.width), int(d.height)],
                "batch_id": batch_id,
                "job_id": job_id,
                "detected_at": iso_utc(detected_at),
            },
            settings,
        )
    return Outcome(
        camera_id, len(result.detections), len(kept), batch_id, ids, result.inference_time_ms, result.backend
    )


# ---- reading detections (GET /api/detections) ---------------------------------------------------------------
BATCH_DETECTIONS_MAX = 500  # an event's or a batch's detections in its detail; the rest through the listing


def as_dict(settings: Settings, row: Detection | Row) -> dict[str, Any]:
    """A detection with links to its media (under `public_url` when one is set)."""
    base = f"{settings.public_url.rstrip('/')}/api/detections/{row.id}"
    return {
        "id": row.id,
        "camera_id": row.camera_id,
        "object_type": row.object_type,
        "confidence": round(row.confidence, 4),
        "bbox": {"x": row.bbox_x, "y": row.bbox_y, "width": row.bbox_width, "height": row.bbox_height},
        "detected_at": iso_utc(row.detected_at),
        "seen_at": iso_utc(row.seen_at),
        "batch_id": row.batch_id,
        "job_id": row.job_id,
        "file_path": row.file_path,
        "file_hash": row.file_hash,
        "image_url": f"{base}/image",
        "thumbnail_url": f"{base}/thumbnail" if row.thumbnail_path else None,
    }


def list_detections(
    settings: Settings,
    page: PageRequest,
    *,
    camera_id: str | None = None,
    object_type: str | None = None,
    min_confidence: float | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    batch_id: str | None = None,
) -> tuple[Page, list[dict[str, Any]]]:
    """Detections matching every filter given, newest first (or oldest, `page.order`); the time range
    is on `detected_at`, both ends inclusive."""
    where = [
        c
        for c in (
            Detection.camera_id == camera_id if camera_id else None,
            Detection.object_type == object_type.lower() if object_type else None,
            Detection.confidence >= min_confidence if min_confidence is not None else None,
            Detection.detected_at >= start if start else None,
            Detection.detected_at <= end if end else None,
            Detection.batch_id == batch_id if batch_id else None,
        )
        if c is not None
    ]
    with session_scope(settings) as session:
        found = paging.fetch(session, select(Detection.__table__), where, Detection.detected_at, Detection.id, page)
        return found, [as_dict(settings, r) for r in found.rows]


def get_detection(settings: Settings, detection_id: int) -> dict[str, Any]:
    """One detection, with the event its batch became (when it has been analysed)."""
    with session_scope(settings) as session:
        row = session.get(Detection, detection_id)
        if row is None:
            raise NotFound(f"No detection with id {detection_id}", code="detection_not_found")
        out = as_dict(settings, row)
        out["event_id"] = (
            session.execute(select(Event.id).where(Event.batch_id == row.batch_id)).scalar_one_or_none()
            if row.batch_id
            else None
        )
        return out


def of_batch(
    settings: Settings, batch_id: str, *, limit: int = BATCH_DETECTIONS_MAX, session: Session | None = None
) -> list[dict[str, Any]]:
    """A batch's detections in the order they were found, at most `limit` (in `session` when the
    caller reads more in the same transaction)."""
    if session is None:
        with session_scope(settings) as own:
            return of_batch(settings, batch_id, limit=limit, session=own)
    rows = session.execute(
        select(Detection)
        .where(Detection.batch_id == batch_id)
        .order_by(Detection.detected_at, Detection.id)
        .limit(limit)
    ).scalars()
    return [as_dict(settings, r) for r in rows]
