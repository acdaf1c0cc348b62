"""Detections and their media: /api/detections/..."""

from __future__ import annotations

from flask import Blueprint, Response, send_file
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required
from app.api.kit.types import DbId, Offset, Timestamp
from app.pipeline import detections, media
from app.pipeline.paging import CURSOR_PATTERN, Order, PageRequest

bp = Blueprint("detections", __name__, url_prefix="/api/detections")
TAGS = ["detections"]
NOT_FOUND = {404: "No such detection", 503: "Database unavailable"}
MEDIA_ERRORS = {
    404: "No such detection, or its file is missing or outside the camera root / thumbnail directory",
    416: "The Range asked for is outside the file",
    503: "Database unavailable",
}
MEDIA_ANSWERS = {206: None, 304: None}  # conditional and Range requests of the file as it is
BINARY = {"type": "string", "format": "binary"}
CURSOR_DOC = "The `next_cursor` of the previous page: the page after it (`offset`, if given, skips rows after it)"
Cursor = Field(None, max_length=40, pattern=CURSOR_PATTERN, description=CURSOR_DOC)


class DetectionPath(BaseModel):
    detection_id: DbId = Field(description="Detection id")


class DetectionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str | None = Field(None, min_length=1, max_length=64)
    object_type: str | None = Field(
        None, min_length=1, max_length=64, description="`person`, `face`, `car`, ... (any case)"
    )
    min_confidence: float | None = Field(None, ge=0, le=1, description="Only detections at least this confident")
    start: Timestamp | None = Field(None, description="Detected at or after")
    end: Timestamp | None = Field(None, description="Detected at or before")
    batch_id: str | None = Field(None, min_length=1, max_length=64, description="Only this batch's detections")
    limit: int = Field(50, ge=1, le=500)
    offset: Offset = 0
    cursor: str | None = Cursor
    order: Order = Field("desc", description="`desc`: newest first (default); `asc`: oldest first")


class ImageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boxes: bool = Field(False, description="Draw every box found in the image (this detection's in red), as JPEG")


class BBox(Answer):
    x: int
    y: int
    width: int
    height: int


class DetectionOut(Answer):
    id: int
    camera_id: str
    object_type: str
    confidence: float = Field(description="0-1")
    bbox: BBox = Field(description="Pixels of the original image")
    detected_at: str | None
    seen_at: str | None = Field(description="When the watcher saw the file complete")
    batch_id: str | None
    job_id: str | None = Field(description="The detection job (one per image)")
    file_path: str
    file_hash: str | None = Field(description="SHA-256 of the image")
    image_url: str
    thumbnail_url: str | None


class DetectionDetail(DetectionOut):
    event_id: int | None = Field(description="The event the detection's batch became, once analysed")


class DetectionPage(Answer):
    detections: list[DetectionOut]
    count: int = Field(description="Detections matching the filters, not only this page")
    limit: int
    offset: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


_FIRST = "$response.body#/detections/0/id"


@bp.get("")
@endpoint(
    query=DetectionsQuery,
    response=DetectionPage,
    summary="List detections, newest first",
    tags=TAGS,
    errors={503: "Database unavailable"},
    links={
        "GetDetection": Link("detections.get_detection", {"detection_id": _FIRST}),
        "GetDetectionImage": Link("detections.detection_image", {"detection_id": _FIRST}),
        "GetDetectionThumbnail": Link("detections.detection_thumbnail", {"detection_id": _FIRST}),
    },
)
def list_detections(query: DetectionsQuery):
    """Filters combine; `count` is exact. Page with `offset` or, at any depth for the same cost, with
    `cursor` (the previous page's `next_cursor`; an `offset` with it skips rows after it)."""
    page = PageRequest(limit=query.limit, offset=query.offset, cursor=query.cursor, order=query.order)
    with dependencies_required():
        found, rows = detections.list_detections(
            current_settings(),
            page,
            camera_id=query.camera_id,
            object_type=query.object_type,
            min_confidence=query.min_confidence,
            start=query.start,
            end=query.end,
            batch_id=query.batch_id,
        )
    return {
        "detections": rows,
        "count": found.count,
        "limit": query.limit,
        "offset": query.offset,
        "next_cursor": found.next_cursor,
    }


@bp.get("/<detection_id>")
@endpoint(path=DetectionPath, response=DetectionDetail, summary="Get a detection", tags=TAGS, errors=NOT_FOUND)
def get_detection(detection_id: int):
    with dependencies_required():
        return detections.get_detection(current_settings(), detection_id)


@bp.get("/<detection_id>/image")
@endpoint(
    path=DetectionPath,
    query=ImageQuery,
    summary="The original image (JPEG or PNG; with ?boxes=1 a JPEG with the boxes drawn)",
    tags=TAGS,
    responses=MEDIA_ANSWERS,
    content={"image/jpeg": BINARY, "image/png": BINARY},
    errors=MEDIA_ERRORS,
)
def detection_image(detection_id: int, query: ImageQuery):
    """Served only from inside the camera root: a stored path that resolves elsewhere is a 404.
    Conditional and Range requests of the original work (304, 206)."""
    settings = current_settings()
    with dependencies_required():
        if query.boxes:
            return Response(
                media.image_with_boxes(settings, detection_id),
                mimetype="image/jpeg",
                headers={"Cache-Control": "private, max-age=60"},
            )
        path = media.image_file(settings, detection_id)
    return send_file(path, mimetype=media.media_type(path), conditional=True, max_age=3600)


@bp.get("/<detection_id>/thumbnail")
@endpoint(
    path=DetectionPath,
    summary="The detection's thumbnail (JPEG)",
    tags=TAGS,
    responses=MEDIA_ANSWERS,
    content={"image/jpeg": BINARY},
    errors=MEDIA_ERRORS,
)
def detection_thumbnail(detection_id: int):
    """Served only from inside the thumbnail directory."""
    with dependencies_required():
        path = media.thumbnail_file(current_settings(), detection_id)
    return send_file(path, mimetype=media.media_type(path), conditional=True, max_age=3600)
