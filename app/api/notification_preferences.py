"""Notification preferences (System Operations API): /api/notification-preferences/...

The global switch, sound and risk filters, per-camera settings and quiet hours that decide whether an
alert's notifications are sent (app/alerts/preferences.py). Every change is audited; errors are the
family's `{"detail", "errors"?, "request_id"}`.
"""

from __future__ import annotations

from flask import Blueprint
from pydantic import BaseModel, Field

from app.alerts import preferences
from app.alerts.preferences import CameraSettingUpdate, PreferencesUpdate, QuietHoursCreate, Sound
from app.alerts.rules import Severity
from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required, who

bp = Blueprint("notification_preferences", __name__, url_prefix="/api/notification-preferences")
TAGS = ["notification preferences"]
DB = {503: "Database unavailable"}


class CameraPath(BaseModel):
    camera_id: str = Field(min_length=1, max_length=64, description="Camera id")


class PeriodPath(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The period's id (a UUID)")


class PreferencesOut(Answer):
    enabled: bool = Field(description="The global switch")
    sound: Sound
    risk_filters: list[Severity] = Field(description="Risk levels (of the event) that notify")
    updated_at: str | None = Field(description="null until an operator stores preferences (the defaults apply)")
    updated_by: str | None


class CameraSettingOut(Answer):
    camera_id: str
    camera_name: str
    enabled: bool
    risk_threshold: int = Field(ge=0, le=100, description="Events below this risk score send nothing")
    configured: bool = Field(description="false: no setting stored, the defaults (enabled, 0) apply")
    updated_at: str | None


class CameraSettingList(Answer):
    cameras: list[CameraSettingOut]
    count: int


class QuietHoursOut(Answer):
    id: str
    label: str
    start_time: str = Field(description="HH:MM:SS, site time")
    end_time: str = Field(description="HH:MM:SS, site time")
    days: list[str] = Field(description="monday..sunday")
    wraps_midnight: bool
    active_now: bool
    created_at: str | None


class QuietHoursList(Answer):
    quiet_hours: list[QuietHoursOut]
    count: int
    timezone: str = Field(description="The site time zone the periods are read in (VIGIL_SITE_TIMEZONE)")
    active_now: list[str] = Field(description="Labels of the periods covering the current time")


class QuietHoursDeleted(Answer):
    id: str
    label: str
    deleted: bool


_CAMERA = "$response.body#/cameras/0/camera_id"


@bp.get("")
@endpoint(response=PreferencesOut, summary="Get the global notification preferences", tags=TAGS, errors=DB)
def get_preferences():
    """Without stored preferences: enabled, sound `default`, every risk level."""
    with dependencies_required():
        return preferences.get_preferences(current_settings())


@bp.put("")
@endpoint(
    body=PreferencesUpdate,
    response=PreferencesOut,
    summary="Update the global notification preferences (audited)",
    tags=TAGS,
    errors=DB,
)
def update_preferences(body: PreferencesUpdate):
    """Fields left out keep their value. `enabled: false` sends no alert notification (each alert
    records `suppressed: disabled`); `risk_filters` are the event risk levels that notify."""
    with dependencies_required():
        return preferences.update_preferences(current_settings(), body, who())


@bp.get("/cameras")
@endpoint(
    response=CameraSettingList,
    summary="List every camera's notification setting",
    tags=TAGS,
    errors=DB,
    links={
        "GetCameraSetting": Link("notification_preferences.get_camera_setting", {"camera_id": _CAMERA}),
        "UpdateCameraSetting": Link("notification_preferences.update_camera_setting", {"camera_id": _CAMERA}),
    },
)
def list_camera_settings():
    """Every camera, with the defaults (enabled, threshold 0, `configured` false) where none is stored."""
    with dependencies_required():
        rows = preferences.list_camera_settings(current_settings())
    return {"cameras": rows, "count": len(rows)}


@bp.get("/cameras/<camera_id>")
@endpoint(
    path=CameraPath,
    response=CameraSettingOut,
    summary="Get a camera's notification setting",
    tags=TAGS,
    errors={404: "No such camera", **DB},
)
def get_camera_setting(camera_id: str):
    with dependencies_required():
        return preferences.get_camera_setting(current_settings(), camera_id)


@bp.put("/cameras/<camera_id>")
@endpoint(
    path=CameraPath,
    body=CameraSettingUpdate,
    response=CameraSettingOut,
    summary="Update a camera's notification setting (audited)",
    tags=TAGS,
    errors={404: "No such camera", **DB},
)
def update_camera_setting(camera_id: str, body: CameraSettingUpdate):
    """`enabled: false` sends nothing for the camera's alerts (`suppressed: camera_disabled`); an event
    below `risk_threshold` sends nothing (`suppressed: below_camera_threshold`)."""
    with dependencies_required():
        return preferences.update_camera_setting(current_settings(), camera_id, body, who())


@bp.get("/quiet-hours")
@endpoint(response=QuietHoursList, summary="List the quiet-hours periods", tags=TAGS, errors=DB)
def list_quiet_hours():
    with dependencies_required():
        return preferences.list_quiet_hours(current_settings())


@bp.post("/quiet-hours")
@endpoint(
    body=QuietHoursCreate,
    response=QuietHoursOut,
    status=201,
    summary="Create a quiet-hours period (audited)",
    tags=TAGS,
    errors={409: "Too many periods (100)", **DB},
    links={"DeleteQuietHours": Link("notification_preferences.delete_quiet_hours", {"id": "$response.body#/id"})},
)
def create_quiet_hours(body: QuietHoursCreate):
    """Read in the site time zone; an end at or before the start wraps midnight (and belongs to the
    day it starts on), equal start and end cover the whole day, periods may overlap. Inside one, alert
    notifications are not sent (`suppressed: quiet_hours`) unless the alert is critical and
    VIGIL_QUIET_HOURS_CRITICAL_BREAKTHROUGH is on; VIGIL_QUIET_HOURS_HELD says whether they are dropped
    or sent when the period ends."""
    with dependencies_required():
        return preferences.create_quiet_hours(current_settings(), body, who())


@bp.delete("/quiet-hours/<id>")
@endpoint(
    path=PeriodPath,
    response=QuietHoursDeleted,
    summary="Delete a quiet-hours period (audited)",
    tags=TAGS,
    errors={404: "No such period", **DB},
)
def delete_quiet_hours(id: str):
    with dependencies_required():
        return preferences.delete_quiet_hours(current_settings(), id, who())
