"""Cameras: created when the watcher first sees their folder; read, renamed, disabled and deleted
through /api/cameras.

Status comes from the last upload (`last_seen_at`, which the watcher refreshes at most once a
minute), so it needs no heartbeat from the camera: `online` when the camera uploaded within
`camera_silent_after_seconds` (VIGIL_CAMERA_SILENT_AFTER_SECONDS), `silent` within
`camera_offline_after_seconds` (VIGIL_CAMERA_OFFLINE_AFTER_SECONDS), `offline` after that or when it
never uploaded. Cameras that upload on motion are quiet for hours at night without being broken,
hence the middle state: "nothing lately" is not yet "gone".
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, delete, false, func, select, update
from sqlalchemy.orm import Session

from app.core.db import session_scope, upsert_insert
from app.core.errors import Conflict, NotFound, checked
from app.core.settings import Settings
from app.core.time import iso_utc
from app.models import AlertCooldown, Camera, Detection, DetectionBatch, Event, Upload
from app.observability import audit
from app.observability.audit import Audit
from app.pipeline.batches import get_aggregator

log = logging.getLogger(__name__)

# The thresholds' defaults, for the API's documentation; the values in force are the settings.
SILENT_AFTER_SECONDS: int = Settings.model_fields["camera_silent_after_seconds"].default
OFFLINE_AFTER_SECONDS: int = Settings.model_fields["camera_offline_after_seconds"].default
DELETE_CHUNK = 5000  # rows per transaction when a camera is deleted with its data
Status = Literal["online", "silent", "offline"]


def ensure_camera(
    session: Session, camera_id: str, name: str, folder_path: str, seen_at: datetime | None = None
) -> None:
    """Create the camera row if it does not exist (safe under concurrency), and mark it seen."""
    seen_at = seen_at or datetime.now(UTC)
    insert = upsert_insert(session)
    session.execute(
        insert(Camera)
        .values(
            id=camera_id, name=name, folder_path=folder_path, status="online", created_at=seen_at, last_seen_at=seen_at
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    session.execute(update(Camera).where(Camera.id == camera_id).values(last_seen_at=seen_at))


def camera_enabled(session: Session, camera_id: str) -> bool:
    """A camera not created yet counts as enabled: the first upload makes it, enabled."""
    enabled = session.execute(select(Camera.enabled).where(Camera.id == camera_id)).scalar_one_or_none()
    return enabled is None or bool(enabled)


def status_of(
    last_seen_at: datetime | None,
    now: datetime,
    silent_after: float = SILENT_AFTER_SECONDS,
    offline_after: float = OFFLINE_AFTER_SECONDS,
) -> Status:
    if last_seen_at is None:
        return "offline"
    age = (now - last_seen_at).total_seconds()
    if age <= silent_after:
        return "online"
    return "silent" if age <= offline_after else "offline"


def thresholds(settings: Settings) -> dict[str, int]:
    """The status thresholds in force, as every listing reports them."""
    return {
        "silent_after_seconds": settings.camera_silent_after_seconds,
        "offline_after_seconds": settings.camera_offline_after_seconds,
    }


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# Something besides whitespace, no control characters (the same rule as alert rule names in
# app/alerts/rules.py), with explicit classes: `\s` means different things to the schema's readers.
_TRIM = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
NAME_PATTERN = rf"^[{_TRIM}]*[^{_CONTROL}]*[^{_CONTROL}{_TRIM}][^{_CONTROL}]*[{_TRIM}]*$"


class CameraUpdate(BaseModel):
    """PATCH /api/cameras/{id}: the fields sent change, the others stay. Optional but not nullable
    (leave a field out instead): the schema shows no null, and a null is a 422. The name is checked
    as sent (so its length is the schema's) and stored stripped."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=NAME_PATTERN,
        json_schema_extra=_no_default,
        description="Display name (the analyser's summaries use it too)",
    )
    enabled: bool = Field(
        None, strict=True, json_schema_extra=_no_default, description="false: uploads are recorded but not detected"
    )


def _counts(session: Session, camera_ids: list[str] | None, now: datetime) -> dict[str, dict[str, int]]:
    """Per camera: events, unreviewed events, and detections in the last 24 hours. Two grouped
    COUNTs read from indexes in their order (no sort); a total of detections is not among them, since
    it would walk a million-entry index on every listing (a camera's total: the `count` of
    GET /api/detections?camera_id=...&limit=1)."""
    unreviewed = func.sum(case((Event.reviewed == false(), 1), else_=0))
    events = select(Event.camera_id, func.count(), unreviewed).group_by(Event.camera_id)
    recent = (
        select(Detection.camera_id, func.count())
        .where(Detection.detected_at >= now - timedelta(hours=24))
        .group_by(Detection.camera_id)
    )
    if camera_ids is not None:
        events = events.where(Event.camera_id.in_(camera_ids))
        recent = recent.where(Detection.camera_id.in_(camera_ids))
    out: dict[str, dict[str, int]] = {}

    def of(camera_id: str) -> dict[str, int]:
        return out.setdefault(camera_id, {"events": 0, "unreviewed_events": 0, "detections_24h": 0})

    for camera_id, count, not_reviewed in session.execute(events):
        of(camera_id).update(events=count, unreviewed_events=int(not_reviewed or 0))
    for camera_id, count in session.execute(recent):
        of(camera_id)["detections_24h"] = count
    return out


def as_dict(
    camera: Camera, counts: dict[str, int] | None, now: datetime, settings: Settings | None = None
) -> dict[str, Any]:
    """`settings` carries the status thresholds (their defaults without it)."""
    silent, offline = (
        (settings.camera_silent_after_seconds, settings.camera_offline_after_seconds)
        if settings is not None
        else (SILENT_AFTER_SECONDS, OFFLINE_AFTER_SECONDS)
    )
    return {
        "id": camera.id,
        "name": camera.name,
        "folder": Path(camera.folder_path).name,
        "folder_path": camera.folder_path,
        "enabled": bool(camera.enabled),
        "status": status_of(camera.last_seen_at, now, silent, offline),
        "last_seen_at": iso_utc(camera.last_seen_at),
        "created_at": iso_utc(camera.created_at),
        "counts": counts or {"events": 0, "unreviewed_events": 0, "detections_24h": 0},
    }


def load(session: Session, camera_id: str) -> Camera:
    camera = session.get(Camera, camera_id)
    if camera is None:
        raise NotFound(f"No camera with id '{camera_id}'", code="camera_not_found")
    return camera


def list_cameras(
    settings: Settings, *, status: Status | None = None, enabled: bool | None = None
) -> list[dict[str, Any]]:
    """Every camera (a site has tens, not thousands), by id; `status` and `enabled` filter."""
    now = datetime.now(UTC)
    with session_scope(settings) as session:
        query = select(Camera).order_by(Camera.id)
        if enabled is not None:
            query = query.where(Camera.enabled == enabled)
        cameras = list(session.execute(query).scalars())
        counts = _counts(session, None, now)
    out = [as_dict(c, counts.get(c.id), now, settings) for c in cameras]
    return [c for c in out if status is None or c["status"] == status]


def get_camera(settings: Settings, camera_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    with session_scope(settings) as session:
        camera = load(session, camera_id)
        return as_dict(camera, _counts(session, [camera_id], now).get(camera_id), now, settings)


def update_camera(
    settings: Settings, camera_id: str, values: CameraUpdate | dict[str, Any], who: Audit
) -> dict[str, Any]:
    """Rename or enable/disable; the audit entry names each changed field's old and new value, and an
    update that changes nothing writes none."""
    changes = checked(CameraUpdate, values).model_dump(exclude_unset=True)
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    now = datetime.now(UTC)
    with session_scope(settings) as session:
        camera = load(session, camera_id)
        diff = {k: {"old": getattr(camera, k), "new": v} for k, v in changes.items() if getattr(camera, k) != v}
        for key, change in diff.items():
            setattr(camera, key, change["new"])
        if diff:
            session.add(audit.entry("camera_updated", "camera", camera_id, who, {"changes": diff}))
        session.flush()
        return as_dict(camera, _counts(session, [camera_id], now).get(camera_id), now, settings)


def _delete_chunked(settings: Settings, model: Any, camera_id: str) -> int:
    """Delete a camera's rows of `model` a chunk per transaction, so a camera with a million
    detections does not hold the database (SQLite: every writer) for one long transaction."""
    total = 0
    while True:
        with session_scope(settings) as session:
            ids = select(model.id).where(model.camera_id == camera_id).limit(DELETE_CHUNK).scalar_subquery()
            gone = session.execute(delete(model).where(model.id.in_(ids))).rowcount
        total += gone
        if gone < DELETE_CHUNK:
            return total


def delete_camera(settings: Settings, camera_id: str, who: Audit, *, with_data: bool = False) -> dict[str, Any]:
    """Delete a camera. While it has events, detections or batches this is refused (409, naming them)
    unless `with_data`, which deletes them too (their alerts go with the events). Files stay where they
    are: originals are the camera's, thumbnails go with the next orphaned-file cleanup. A folder still
    in the camera root makes the camera again on its next upload, which the answer says.

    The camera's open batch is dropped from Redis first: handed to analysis, its record would name a
    camera that no longer exists."""
    with session_scope(settings) as session:
        camera = load(session, camera_id)
        folder = Path(camera.folder_path)
        events = session.execute(
            select(func.count()).select_from(Event).where(Event.camera_id == camera_id)
        ).scalar_one()
        latest = list(
            session.execute(
                select(Event.id)
                .where(Event.camera_id == camera_id)
                .order_by(Event.started_at.desc(), Event.id.desc())
                .limit(10)
            ).scalars()
        )
        detections = session.execute(
            select(func.count()).select_from(Detection).where(Detection.camera_id == camera_id)
        ).scalar_one()
        batches = session.execute(
            select(func.count()).select_from(DetectionBatch).where(DetectionBatch.camera_id == camera_id)
        ).scalar_one()
    data = {"events": events, "detections": detections, "batches": batches}
    if (events or detections or batches) and not with_data:
        shown = ", ".join(str(i) for i in latest) + (", ..." if events > len(latest) else "")
        what = [f"{events} event{'s' if events != 1 else ''}" + (f" (ids {shown})" if events else "")] if events else []
        what += [f"{n} {name}" for name, n in (("detections", detections), ("batches", batches)) if n]
        raise Conflict(
            f"Camera '{camera_id}' has {' and '.join(what)}; delete with ?with_data=true to delete "
            "them too, or keep the camera and disable it (PATCH enabled=false).",
            code="camera_has_data",
            extra={"camera_id": camera_id, "data": data, "event_ids": latest},
        )
    get_aggregator(settings).discard_camera(camera_id)
    deleted = {"events": 0, "detections": 0, "batches": 0}
    if with_data:  # events first: their alerts cascade with them; then the rest, then the camera
        deleted["events"] = _delete_chunked(settings, Event, camera_id)
        deleted["detections"] = _delete_chunked(settings, Detection, camera_id)
        deleted["batches"] = _delete_chunked(settings, DetectionBatch, camera_id)
        _delete_chunked(settings, Upload, camera_id)
    with session_scope(settings) as session:
        camera = load(session, camera_id)
        session.execute(delete(AlertCooldown).where(AlertCooldown.camera_id == camera_id))
        session.delete(camera)
        session.add(
            audit.entry(
                "camera_deleted",
                "camera",
                camera_id,
                who,
                {"name": camera.name, "with_data": with_data, "deleted": deleted},
            )
        )
    log.info("camera %s deleted (%s)", camera_id, deleted)
    return {
        "id": camera_id,
        "deleted": True,
        "data_deleted": deleted,
        "folder_present": folder.is_dir(),
        "note": (
            "the folder is still in the camera root: its next upload makes the camera again"
            if folder.is_dir()
            else None
        ),
    }
