"""Cameras: /api/cameras/..."""

from __future__ import annotations

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer, SystemError
from app.api.kit.respond import dependencies_required, who
from app.pipeline import cameras
from app.pipeline.cameras import OFFLINE_AFTER_SECONDS, SILENT_AFTER_SECONDS, CameraUpdate, Status

bp = Blueprint("cameras", __name__, url_prefix="/api/cameras")
TAGS = ["cameras"]
NOT_FOUND = {404: "No such camera", 503: "Database unavailable"}
STATUS_DOC = (
    f"From the last upload: `online` within VIGIL_CAMERA_SILENT_AFTER_SECONDS (default {SILENT_AFTER_SECONDS} s), "
    f"`silent` within VIGIL_CAMERA_OFFLINE_AFTER_SECONDS (default {OFFLINE_AFTER_SECONDS} s), `offline` after that "
    "or never; the values in force are in every listing"
)


class CameraPath(BaseModel):
    camera_id: str = Field(min_length=1, max_length=64, description="Camera id (the normalised folder name)")


class CamerasQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status | None = Field(None, description=STATUS_DOC)
    enabled: bool | None = None


class DeleteQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    with_data: bool = Field(
        False,
        description="Also delete the camera's events (and their alerts), detections and "
        "batches; without it a camera that has any is refused (409)",
    )


class CameraCounts(Answer):
    events: int
    unreviewed_events: int
    detections_24h: int = Field(
        description="Detections in the last 24 hours (a camera's total: "
        "`count` of GET /api/detections?camera_id=...&limit=1)"
    )


class CameraOut(Answer):
    id: str
    name: str = Field(description="Display name (the folder's name until changed)")
    folder: str = Field(description="The camera's folder under the camera root")
    folder_path: str
    enabled: bool = Field(description="false: uploads are recorded but not detected")
    status: Status = Field(description=STATUS_DOC)
    last_seen_at: str | None = Field(description="Last upload (refreshed at most once a minute)")
    created_at: str | None
    counts: CameraCounts


class CameraList(Answer):
    cameras: list[CameraOut]
    count: int
    silent_after_seconds: int = Field(description="No upload for this long: `silent`")
    offline_after_seconds: int = Field(description="No upload for this long: `offline`")


class DataDeleted(Answer):
    events: int
    detections: int
    batches: int


class CameraDeleted(Answer):
    id: str
    deleted: bool
    data_deleted: DataDeleted
    folder_present: bool = Field(
        description="The folder is still in the camera root: its next upload makes the camera again"
    )
    note: str | None


class CameraHasData(SystemError):
    """409 of DELETE without `with_data`: what the camera still has."""

    camera_id: str
    data: DataDeleted = Field(description="How many events, detections and batches it has")
    event_ids: list[int] = Field(description="Its latest events (at most 10), newest first")


_FIRST = "$response.body#/cameras/0/id"


@bp.get("")
@endpoint(
    query=CamerasQuery,
    response=CameraList,
    summary="List cameras with status and counts",
    tags=TAGS,
    errors={503: "Database unavailable"},
    links={
        "GetCamera": Link("cameras.get_camera", {"camera_id": _FIRST}),
        "UpdateCamera": Link("cameras.update_camera", {"camera_id": _FIRST}),
    },
)
def list_cameras(query: CamerasQuery):
    with dependencies_required():
        rows = cameras.list_cameras(current_settings(), status=query.status, enabled=query.enabled)
    return {
        "cameras": rows,
        "count": len(rows),
        **cameras.thresholds(current_settings()),
    }


@bp.get("/<camera_id>")
@endpoint(path=CameraPath, response=CameraOut, summary="Get a camera", tags=TAGS, errors=NOT_FOUND)
def get_camera(camera_id: str):
    with dependencies_required():
        return cameras.get_camera(current_settings(), camera_id)


@bp.patch("/<camera_id>")
@endpoint(
    path=CameraPath,
    body=CameraUpdate,
    response=CameraOut,
    summary="Rename a camera or enable/disable it (audited)",
    tags=TAGS,
    errors=NOT_FOUND,
)
def update_camera(camera_id: str, body: CameraUpdate):
    with dependencies_required():
        return cameras.update_camera(current_settings(), camera_id, body, who())


@bp.delete("/<camera_id>")
@endpoint(
    path=CameraPath,
    query=DeleteQuery,
    response=CameraDeleted,
    summary="Delete a camera; with its data only when asked (audited)",
    tags=TAGS,
    errors={
        409: ("The camera has events, detections or batches (named) and with_data is not set", CameraHasData),
        **NOT_FOUND,
    },
)
def delete_camera(camera_id: str, query: DeleteQuery):
    with dependencies_required():
        return cameras.delete_camera(current_settings(), camera_id, who(), with_data=query.with_data)
