"""Pipeline: cameras with their last upload, the watcher, open batches, recent events in their risk colours (the
severity palette of GET /api/system/severity) with a thumbnail where one exists, and latency per stage."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, render_template, send_file

from app.api.kit.current import current_settings
from app.core.settings import Settings
from app.pipeline import cameras, detections, events, media, runtime_config, status, telemetry
from app.pipeline.paging import PageRequest

bp = Blueprint("pipeline", __name__)

RECENT_EVENTS = 20
WINDOW_MINUTES = 60
STAGE_NAMES = {
    "watch": "File written → watcher saw it",
    "watch_to_detect": "Watcher → detection started",
    "detect": "Detector call",
    "detect_to_batch": "Detector → batch",
    "batch": "Batch open → closed",
    "batch_to_analyze": "Batch closed → analysis started",
    "analyze": "Analyser call",
    "total_pipeline": "First image seen → event written",
}


def _thumbnail(settings: Settings, batch_id: str) -> int | None:
    """The first detection of the batch that has a thumbnail, by id (served by `thumbnail` below)."""
    for found in detections.of_batch(settings, batch_id, limit=10):
        if found.get("thumbnail_url"):
            return int(found["id"])
    return None


def stage_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every stage with its figures over the last hour, in the order an image goes through them."""
    measured = {
        **telemetry.telemetry(settings, WINDOW_MINUTES)["latencies"],
        **{k: v for k, v in telemetry.latency(settings, WINDOW_MINUTES).items() if k in STAGE_NAMES},
    }
    return [{"stage": stage, "label": label, "figures": measured.get(stage)} for stage, label in STAGE_NAMES.items()]


@bp.get("/pipeline")
def index() -> str:
    settings = current_settings()
    _found, recent = events.list_events(settings, PageRequest(limit=RECENT_EVENTS))
    for event in recent:
        event["thumbnail_id"] = _thumbnail(settings, event["batch_id"])
    return render_template(
        "console/pipeline.html",
        state=status.pipeline_status(settings),
        cameras=cameras.list_cameras(settings),
        events=recent,
        stages=stage_rows(settings),
        window_minutes=WINDOW_MINUTES,
        severity=runtime_config.severity_definitions(runtime_config.thresholds(settings))["definitions"],
    )


@bp.get("/thumbnails/<int:detection_id>")
def thumbnail(detection_id: int) -> Response:
    """Served from inside the thumbnail directory only (`media.thumbnail_file` checks), to signed-in users."""
    path = media.thumbnail_file(current_settings(), detection_id)
    response = send_file(path, mimetype=media.media_type(path))
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
