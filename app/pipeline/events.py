"""A closed batch becomes one scored event.

Idempotent per batch: `events.batch_id` is unique, an existing event is returned as it is, and an
insert that loses a race to a concurrent run returns the winner's event. The analysis task
(`workers/tasks/analysis.py`) calls `analyse_batch` and owns only the retry policy.

When the configured analyser cannot answer (breaker open, or the task's last retry failed) and
`analysis_fallback` is on, the rule-based scorer scores the batch and the event says so
(`analyser = "builtin (fallback: ...)"`): an event with an honest label beats a batch nobody sees.

Events are read back through GET /api/events (filters, exact counts, offset or cursor pages, newest
first; `app/pipeline/paging.py`), one event's detail (its analysis, batch window, detections and
alerts), the operator's review (`reviewed`, `notes`, audited) and counts by day, camera and level.
Days are UTC days, the clock every stored time is in.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Row, bindparam, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import NotFound, checked
from app.core.settings import Settings
from app.core.time import iso_utc
from app.live import bus as live
from app.models import Alert, Camera, Detection, DetectionBatch, Event, utcnow
from app.observability import audit
from app.observability.audit import Audit
from app.pipeline import anomaly, detections, paging, runtime_config, telemetry
from app.pipeline.ai import usage
from app.pipeline.ai.analysers import AnalyserUnavailable, Analysis, BatchFacts, fallback_analyser, get_analyser
from app.pipeline.ai.breakers import CircuitOpenError, ServiceRejected, breaker
from app.pipeline.batches import closed_dict, get_aggregator
from app.pipeline.paging import Page, PageRequest

log = logging.getLogger(__name__)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _event_dict(event: Event, created: bool) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "batch_id": event.batch_id,
        "camera_id": event.camera_id,
        "risk_score": event.risk_score,
        "risk_level": event.risk_level,
        "analyser": event.analyser,
        "detection_count": event.detection_count,
        "anomaly_score": event.anomaly_score,
        "is_anomaly": bool(event.is_anomaly),
        "created": created,
    }


def _existing_event(settings: Settings, batch_id: str) -> Event | None:
    with session_scope(settings) as session:
        return session.execute(select(Event).where(Event.batch_id == batch_id)).scalar_one_or_none()


def _load_batch(settings: Settings, batch_id: str) -> dict[str, Any]:
    """The batch from Redis, or from its SQL record once the Redis keys are gone."""
    batch = get_aggregator(settings).get(batch_id)
    if batch and "closed_at" in batch:
        return batch
    with session_scope(settings) as session:
        row = session.get(DetectionBatch, batch_id)
        if row is None:
            raise NotFound(f"batch {batch_id} not found (never closed, or expired)")
        ids = list(session.execute(select(Detection.id).where(Detection.batch_id == batch_id)).scalars())
        return {
            "id": row.id,
            "camera_id": row.camera_id,
            "opened_at": row.opened_at.timestamp(),
            "last_at": row.last_detection_at.timestamp(),
            "closed_at": row.closed_at.timestamp(),
            "first_seen_at": row.first_seen_at.timestamp() if row.first_seen_at else None,
            "detection_count": row.detection_count,
            "detection_ids": sorted(ids),
        }


def _facts(settings: Settings, batch: dict[str, Any]) -> BatchFacts:
    with session_scope(settings) as session:
        rows = (
            list(
                session.execute(
                    select(Detection).where(Detection.id.in_(batch["detection_ids"])).order_by(Detection.detected_at)
                ).scalars()
            )
            if batch["detection_ids"]
            else []
        )
        camera = session.get(Camera, batch["camera_id"])
        name = camera.name if camera else batch["camera_id"]
    detections = [
        {
            "id": r.id,
            "object_type": r.object_type,
            "confidence": r.confidence,
            "bbox": {"x": r.bbox_x, "y": r.bbox_y, "width": r.bbox_width, "height": r.bbox_height},
            "detected_at": r.detected_at,
        }
        for r in rows
    ]
    return BatchFacts(
        batch["id"], batch["camera_id"], name, _utc(batch["opened_at"]), _utc(batch["last_at"]), detections
    )


def _score(settings: Settings, facts: BatchFacts, final_attempt: bool) -> Analysis:
    analyser = get_analyser(settings)
    try:
        return breaker(analyser.service, settings).call(analyser.analyse, facts)
    except CircuitOpenError as exc:
        if not settings.analysis_fallback:
            raise
        reason = "circuit open"
        log.warning("analyser breaker open; scoring batch %s with rules", facts.batch_id)
        cause: Exception = exc
    except ServiceRejected as exc:
        if not settings.analysis_fallback:
            raise
        reason, cause = "request refused", exc
    except AnalyserUnavailable as exc:
        if not (final_attempt and settings.analysis_fallback):
            raise
        reason, cause = "unavailable", exc
    result = fallback_analyser(settings).analyse(facts)
    result.analyser = f"builtin (fallback: {analyser.name} {reason})"
    result.reasoning = f"{result.reasoning} [{analyser.name} not used: {cause}]"[:8000]
    return result


def analyse_batch(
    settings: Settings, batch_id: str, *, started_at: float, first_attempt: bool, final_attempt: bool
) -> dict[str, Any]:
    """Score a closed batch and write its event; returns the event (created or found)."""
    existing = _existing_event(settings, batch_id)
    if existing is not None:
        return _event_dict(existing, created=False)
    batch = _load_batch(settings, batch_id)
    if first_attempt:
        telemetry.record(settings, "batch_to_analyze", (started_at - batch["closed_at"]) * 1000, started_at)
    with session_scope(settings) as session:
        row = session.get(DetectionBatch, batch_id)
        if row is not None and row.analysis_started_at is None:
            row.analysis_started_at = _utc(started_at)

    facts = _facts(settings, batch)
    judged = anomaly.assess(settings, facts.camera_id, facts.started_at, len(facts.detections))
    facts.anomaly = judged.context()
    call_started = time.time()
    analysis = _score(settings, facts, final_attempt)
    analysed_at = time.time()
    telemetry.record(settings, "analyze", (analysed_at - call_started) * 1000, analysed_at)
    if analysis.model:  # the LLM answered (not the rule scorer, not a fallback)
        usage.record(settings, {analysis.model: analysis.duration_ms}, backend="llm", at=analysed_at)

    level = runtime_config.severity_for(analysis.risk_score, runtime_config.thresholds(settings))
    event = Event(
        batch_id=batch_id,
        camera_id=batch["camera_id"],
        started_at=facts.started_at,
        ended_at=facts.ended_at,
        risk_score=analysis.risk_score,
        risk_level=level,
        summary=analysis.summary,
        reasoning=analysis.reasoning,
        detection_ids=[d["id"] for d in facts.detections],
        detection_count=len(facts.detections),
        analyser=analysis.analyser[:64],
        input_tokens=analysis.input_tokens,
        output_tokens=analysis.output_tokens,
        anomaly_score=judged.anomaly_score,
        is_anomaly=judged.is_anomaly,
    )
    try:
        with session_scope(settings) as session:
            session.add(event)
            session.flush()
            anomaly.learn(session, judged)
            row = session.get(DetectionBatch, batch_id)
            if row is not None:
                row.status, row.analysed_at, row.event_id = "analysed", _utc(analysed_at), event.id
    except IntegrityError:  # a concurrent run of the same batch won; its event is the event
        winner = _existing_event(settings, batch_id)
        if winner is None:
            raise
        return _event_dict(winner, created=False)
    created_at = event.created_at.timestamp() if event.created_at else time.time()
    origin = batch.get("first_seen_at") or batch["opened_at"]
    telemetry.record(settings, "total_pipeline", (created_at - origin) * 1000, created_at)
    get_aggregator(settings).retire(batch_id)
    live.publish_quietly(
        "event.created",
        {
            "event_id": event.id,
            "camera_id": event.camera_id,
            "batch_id": batch_id,
            "risk_score": event.risk_score,
            "risk_level": event.risk_level,
            "summary": event.summary,
            "detection_count": event.detection_count,
            "is_anomaly": bool(event.is_anomaly),
            "analyser": event.analyser,
        },
        settings,
    )
    out = _event_dict(event, created=True)
    out.update(input_tokens=analysis.input_tokens, output_tokens=analysis.output_tokens)
    return out


# ---- reading and reviewing events (GET/PATCH /api/events) ---------------------------------------------------
RiskLevel = Literal["low", "medium", "high", "critical"]
RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")
STATS_DAYS = 30  # the default span of GET /api/events/stats


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class EventUpdate(BaseModel):
    """PATCH /api/events/{id}: the operator's review. Fields left out keep their value; `reviewed`
    is not nullable (the schema shows no null), `notes` is (null clears them)."""

    model_config = ConfigDict(extra="forbid")

    reviewed: bool = Field(
        None,
        strict=True,
        json_schema_extra=_no_default,
        description="Reviewed by an operator; `reviewed_at` follows it",
    )
    notes: str | None = Field(None, max_length=10_000, description='Free text; null or "" clears it')


# Built once: a page's batch ids go in as one expanding parameter, so a listing does not pay for
# constructing and coercing an IN of fifty values on every request (a third of an events page's Python).
_TYPES_OF = (
    select(Detection.__table__.c.batch_id, Detection.__table__.c.object_type)
    .distinct()
    .where(Detection.__table__.c.batch_id.in_(bindparam("batch_ids", expanding=True)))
)


def _types_of(session: Session, batch_ids: list[str]) -> dict[str, list[str]]:
    """Each batch's object types, for a page of events in one query (on `(batch_id, object_type)`)."""
    out: dict[str, set[str]] = {b: set() for b in batch_ids}
    if batch_ids:
        for batch_id, kind in session.execute(_TYPES_OF, {"batch_ids": list(out)}):
            out[batch_id].add(kind)
    return {b: sorted(kinds) for b, kinds in out.items()}


def as_dict(event: Event | Row, object_types: list[str]) -> dict[str, Any]:
    """An event as listings show it (the detail adds its analysis, batch, detections and alerts)."""
    return {
        "id": event.id,
        "camera_id": event.camera_id,
        "batch_id": event.batch_id,
        "started_at": iso_utc(event.started_at),
        "ended_at": iso_utc(event.ended_at),
        "risk_score": event.risk_score,
        "risk_level": event.risk_level,
        "summary": event.summary,
        "object_types": object_types,
        "detection_count": event.detection_count,
        "analyser": event.analyser,
        "anomaly_score": event.anomaly_score,
        "is_anomaly": bool(event.is_anomaly),
        "reviewed": bool(event.reviewed),
        "reviewed_at": iso_utc(event.reviewed_at),
        "notes": event.notes,
        "created_at": iso_utc(event.created_at),
    }


def _load(session: Session, event_id: int) -> Event:
    event = session.get(Event, event_id)
    if event is None:
        raise NotFound(f"No event with id {event_id}", code="event_not_found")
    return event


def _filters(
    *,
    camera_id: str | None = None,
    risk_levels: list[str] | None = None,
    min_risk: int | None = None,
    max_risk: int | None = None,
    reviewed: bool | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    object_type: str | None = None,
    anomaly: bool | None = None,
) -> list[ColumnElement[bool]]:
    where = [
        c
        for c in (
            Event.camera_id == camera_id if camera_id else None,
            Event.risk_level.in_(risk_levels) if risk_levels else None,
            Event.risk_score >= min_risk if min_risk is not None else None,
            Event.risk_score <= max_risk if max_risk is not None else None,
            Event.reviewed == reviewed if reviewed is not None else None,
            Event.started_at >= start if start else None,
            Event.started_at <= end if end else None,
            Event.is_anomaly == anomaly if anomaly is not None else None,
        )
        if c is not None
    ]
    if object_type:  # an event "has" a type when a detection of its batch has it
        where.append(exists().where(Detection.batch_id == Event.batch_id, Detection.object_type == object_type.lower()))
    return where


def list_events(settings: Settings, page: PageRequest, **filters: Any) -> tuple[Page, list[dict[str, Any]]]:
    """Events matching every filter given (`_filters`), newest first by `started_at` (or oldest)."""
    with session_scope(settings) as session:
        found = paging.fetch(session, select(Event.__table__), _filters(**filters), Event.started_at, Event.id, page)
        kinds = _types_of(session, [e.batch_id for e in found.rows])
        return found, [as_dict(e, kinds[e.batch_id]) for e in found.rows]


def get_event(settings: Settings, event_id: int) -> dict[str, Any]:
    """The event with what explains it: the analyser's summary and reasoning, the batch window it
    covers (and its analysis job), its detections (the first `BATCH_DETECTIONS_MAX`) and its alerts."""
    with session_scope(settings) as session:
        event = _load(session, event_id)
        out = as_dict(event, _types_of(session, [event.batch_id])[event.batch_id])
        camera = session.get(Camera, event.camera_id)
        batch = session.get(DetectionBatch, event.batch_id)
        alerts = session.execute(
            select(Alert).where(Alert.event_id == event_id).order_by(Alert.created_at, Alert.id)
        ).scalars()
        out.update(
            camera_name=camera.name if camera else None,
            reasoning=event.reasoning,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            batch=closed_dict(batch) if batch else None,
            analysis_job_id=batch.analysis_job_id if batch else None,
            detections=detections.of_batch(settings, event.batch_id, session=session),
            alerts=[
                {
                    "id": a.id,
                    "rule_id": a.rule_id,
                    "rule_name": a.rule_name,
                    "severity": a.severity,
                    "status": a.status,
                    "created_at": iso_utc(a.created_at),
                }
                for a in alerts
            ],
        )
        return out


def update_event(settings: Settings, event_id: int, values: EventUpdate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Record the operator's review. Marking an event reviewed stamps `reviewed_at` (unmarking clears
    it); the audit entry names each changed field's old and new value, and a change of nothing writes none."""
    changes = checked(EventUpdate, values).model_dump(exclude_unset=True)
    if "notes" in changes and changes["notes"] is not None and not changes["notes"].strip():
        changes["notes"] = None
    with session_scope(settings) as session:
        event = _load(session, event_id)
        diff = {k: {"old": getattr(event, k), "new": v} for k, v in changes.items() if getattr(event, k) != v}
        if "reviewed" in diff:
            event.reviewed_at = utcnow() if diff["reviewed"]["new"] else None
        for key, change in diff.items():
            setattr(event, key, change["new"])
        if diff:
            session.add(audit.entry("event_updated", "event", str(event_id), who, {"changes": diff}))
        session.flush()
        out = as_dict(event, _types_of(session, [event.batch_id])[event.batch_id])
    if diff:  # after the commit: a subscriber that reads the event back sees the change
        live.publish_quietly(
            "event.updated",
            {
                "event_id": event_id,
                "camera_id": out["camera_id"],
                "risk_score": out["risk_score"],
                "reviewed": out["reviewed"],
                "notes": out["notes"],
                "changed": sorted(diff),
            },
            settings,
        )
    return out


def _day(session: Session) -> ColumnElement[str]:
    """`started_at` as its UTC date, `YYYY-MM-DD`. SQLite stores UTC text, so `date()` is exact there;
    PostgreSQL's `date()` would use the session's time zone, so the value is taken to UTC first."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", Event.started_at), "YYYY-MM-DD")
    return func.date(Event.started_at)


def event_stats(
    settings: Settings, *, start: datetime | None = None, end: datetime | None = None, camera_id: str | None = None
) -> dict[str, Any]:
    """Events started in [start, end] (default: the last `STATS_DAYS` days) counted by UTC day and
    risk level, by camera and risk level, and by review: three small grouped queries on the covering
    `started_at` index rather than one grouped by everything (thousands of groups to sort and fold)."""
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=STATS_DAYS)
    where = _filters(camera_id=camera_id, start=start, end=end)

    def bucket(**fields: Any) -> dict[str, Any]:
        return {**fields, "count": 0, "by_risk_level": dict.fromkeys(RISK_LEVELS, 0)}

    levels = dict.fromkeys(RISK_LEVELS, 0)
    by_day: dict[str, dict[str, Any]] = {}
    by_camera: dict[str, dict[str, Any]] = {}
    with session_scope(settings) as session:
        day = _day(session).label("day")
        days = session.execute(
            select(day, Event.risk_level, func.count()).where(*where).group_by(day, Event.risk_level)
        ).all()
        cameras = session.execute(
            select(Event.camera_id, Event.risk_level, func.count())
            .where(*where)
            .group_by(Event.camera_id, Event.risk_level)
        ).all()
        reviewed = dict(
            session.execute(select(Event.reviewed, func.count()).where(*where).group_by(Event.reviewed)).all()
        )
        names = dict(session.execute(select(Camera.id, Camera.name)).all())
    for day_value, level, count in days:
        entry = by_day.setdefault(str(day_value), bucket(date=str(day_value)))
        entry["count"] += count
        entry["by_risk_level"][level] = entry["by_risk_level"].get(level, 0) + count
        levels[level] = levels.get(level, 0) + count
    for camera, level, count in cameras:
        entry = by_camera.setdefault(camera, bucket(camera_id=camera, name=names.get(camera)))
        entry["count"] += count
        entry["by_risk_level"][level] = entry["by_risk_level"].get(level, 0) + count
    done = sum(n for flag, n in reviewed.items() if flag)
    total = sum(reviewed.values())
    return {
        "start": iso_utc(start),
        "end": iso_utc(end),
        "camera_id": camera_id,
        "total": total,
        "reviewed": done,
        "unreviewed": total - done,
        "by_risk_level": levels,
        "by_day": [by_day[d] for d in sorted(by_day)],
        "by_camera": sorted(by_camera.values(), key=lambda c: (-c["count"], c["camera_id"])),
    }
