"""Events, the analysed batches: /api/events/..."""

from __future__ import annotations

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.batches import BatchOut
from app.api.detections import Cursor, DetectionOut
from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required, who
from app.api.kit.types import DbId, Offset, Timestamp
from app.pipeline import events
from app.pipeline.events import EventUpdate, RiskLevel
from app.pipeline.paging import Order, PageRequest

bp = Blueprint("events", __name__, url_prefix="/api/events")
TAGS = ["events"]
NOT_FOUND = {404: "No such event", 503: "Database unavailable"}


class EventPath(BaseModel):
    event_id: DbId = Field(description="Event id")


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str | None = Field(None, min_length=1, max_length=64)
    risk_level: list[RiskLevel] | None = Field(
        None,
        description="low, medium, high, critical; several: repeat the "
        "parameter (`risk_level=high&risk_level=critical`)",
    )
    min_risk: int | None = Field(None, ge=0, le=100, description="Risk score at least")
    max_risk: int | None = Field(None, ge=0, le=100, description="Risk score at most")
    reviewed: bool | None = Field(None, description="true: reviewed only; false: not reviewed only")
    anomaly: bool | None = Field(None, description="true: only events marked anomalous; false: only the others")
    object_type: str | None = Field(
        None, min_length=1, max_length=64, description="Only events with a detection of this type (any case)"
    )
    start: Timestamp | None = Field(None, description="Started at or after")
    end: Timestamp | None = Field(None, description="Started at or before")
    limit: int = Field(50, ge=1, le=500)
    offset: Offset = 0
    cursor: str | None = Cursor
    order: Order = Field("desc", description="`desc`: newest first by start time (default); `asc`: oldest first")


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str | None = Field(None, min_length=1, max_length=64)
    start: Timestamp | None = Field(None, description="Events started at or after; default `end` - 30 days")
    end: Timestamp | None = Field(None, description="Events started at or before; default now")


class EventOut(Answer):
    id: int
    camera_id: str
    batch_id: str
    started_at: str | None = Field(description="The batch's first detection")
    ended_at: str | None = Field(description="The batch's last detection")
    risk_score: int = Field(description="0-100")
    risk_level: str = Field(description="low | medium | high | critical, from the severity thresholds")
    summary: str = Field(description="The analyser's summary")
    object_types: list[str] = Field(description="The object types its detections found")
    detection_count: int
    analyser: str = Field(description="Who scored it: `builtin`, the LLM's name, or `builtin (fallback: ...)`")
    anomaly_score: float | None = Field(
        description="Standard deviations from the camera's hour-of-week baseline; null while the baseline is too young"
    )
    is_anomaly: bool = Field(description="anomaly_score above the configured threshold_stdev")
    reviewed: bool
    reviewed_at: str | None
    notes: str | None
    created_at: str | None


class EventAlert(Answer):
    id: str
    rule_id: str | None
    rule_name: str
    severity: str
    status: str
    created_at: str | None


class EventDetail(EventOut):
    camera_name: str | None
    reasoning: str = Field(description="The analyser's reasoning")
    input_tokens: int | None
    output_tokens: int | None
    batch: BatchOut | None = Field(description="The batch window the event covers")
    analysis_job_id: str | None
    detections: list[DetectionOut] = Field(
        description="In the order found, at most 500 (all: GET /api/detections?batch_id=)"
    )
    alerts: list[EventAlert] = Field(description="Alerts the event raised (GET /api/alerts/{id} for deliveries)")


class EventPage(Answer):
    events: list[EventOut]
    count: int = Field(description="Events matching the filters, not only this page")
    limit: int
    offset: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class LevelCounts(Answer):
    low: int
    medium: int
    high: int
    critical: int


class DayCount(Answer):
    date: str = Field(description="UTC day, YYYY-MM-DD")
    count: int
    by_risk_level: LevelCounts


class CameraCount(Answer):
    camera_id: str
    name: str | None
    count: int
    by_risk_level: LevelCounts


class EventStats(Answer):
    start: str | None
    end: str | None
    camera_id: str | None
    total: int
    reviewed: int
    unreviewed: int
    by_risk_level: LevelCounts
    by_day: list[DayCount] = Field(description="Days with events, oldest first")
    by_camera: list[CameraCount] = Field(description="Cameras with events, most first")


_FIRST = "$response.body#/events/0/id"
LIST_LINKS = {
    "GetEvent": Link("events.get_event", {"event_id": _FIRST}),
    "ReviewEvent": Link("events.update_event", {"event_id": _FIRST}),
}


@bp.get("")
@endpoint(
    query=EventsQuery,
    response=EventPage,
    summary="List events, newest first",
    tags=TAGS,
    errors={503: "Database unavailable"},
    links=LIST_LINKS,
)
def list_events(query: EventsQuery):
    """Filters combine; `count` is exact. Page with `offset` or, at any depth for the same cost, with
    `cursor` (the previous page's `next_cursor`; an `offset` with it skips rows after it). `anomaly`
    filters on the flag the camera's baseline set (GET /api/system/anomaly-config)."""
    page = PageRequest(limit=query.limit, offset=query.offset, cursor=query.cursor, order=query.order)
    with dependencies_required():
        found, rows = events.list_events(
            current_settings(),
            page,
            camera_id=query.camera_id,
            risk_levels=query.risk_level,
            min_risk=query.min_risk,
            max_risk=query.max_risk,
            reviewed=query.reviewed,
            anomaly=query.anomaly,
            start=query.start,
            end=query.end,
            object_type=query.object_type,
        )
    return {
        "events": rows,
        "count": found.count,
        "limit": query.limit,
        "offset": query.offset,
        "next_cursor": found.next_cursor,
    }


@bp.get("/stats")
@endpoint(
    query=StatsQuery,
    response=EventStats,
    summary="Event counts by UTC day, camera and risk level",
    tags=TAGS,
    errors={503: "Database unavailable"},
)
def event_stats(query: StatsQuery):
    with dependencies_required():
        return events.event_stats(current_settings(), start=query.start, end=query.end, camera_id=query.camera_id)


@bp.get("/<int:event_id>")
@endpoint(
    path=EventPath,
    response=EventDetail,
    summary="Get an event with its analysis, batch, detections and alerts",
    tags=TAGS,
    errors=NOT_FOUND,
)
def get_event(event_id: int):
    with dependencies_required():
        return events.get_event(current_settings(), event_id)


@bp.patch("/<int:event_id>")
@endpoint(
    path=EventPath,
    body=EventUpdate,
    response=EventOut,
    summary="Review an event: reviewed, notes (audited)",
    tags=TAGS,
    errors=NOT_FOUND,
)
def update_event(event_id: int, body: EventUpdate):
    with dependencies_required():
        return events.update_event(current_settings(), event_id, body, who())
