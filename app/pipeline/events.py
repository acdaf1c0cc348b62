"""A closed batch becomes one scored event.

Idempotent per batch: `events.batch_id` is unique, an existing event is returned as it is, and an
insert that loses a race to a concurrent run returns the winner's event. The analysis task
(`workers/tasks/analysis.py`) calls `analyse_batch` and owns only the retry policy.

When the configured analyser cannot answer (breaker open, or the task's last retry failed) and
`analysis_fallback` is on, the rule-based scorer scores the batch and the event says so
(`analyser = "builtin (fallback: ...)"`): an event with an honest label beats a batch nobody sees.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.core.db import session_scope
from app.models import Camera, Detection, DetectionBatch, Event
from app.pipeline import telemetry
from app.pipeline import runtime_config
from app.pipeline.ai.analysers import AnalyserUnavailable, Analysis, BatchFacts, fallback_analyser, get_analyser
from app.pipeline.batches import get_aggregator
from app.pipeline.ai.breakers import CircuitOpenError, ServiceRejected, breaker
from app.core.errors import NotFound
from app.core.settings import Settings

log = logging.getLogger(__name__)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _event_dict(event: Event, created: bool) -> dict[str, Any]:
    return {"event_id": event.id, "batch_id": event.batch_id, "camera_id": event.camera_id,
            "risk_score": event.risk_score, "risk_level": event.risk_level, "analyser": event.analyser,
            "detection_count": event.detection_count, "created": created}


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
        return {"id": row.id, "camera_id": row.camera_id, "opened_at": row.opened_at.timestamp(),
                "last_at": row.last_detection_at.timestamp(), "closed_at": row.closed_at.timestamp(),
                "first_seen_at": row.first_seen_at.timestamp() if row.first_seen_at else None,
                "detection_count": row.detection_count, "detection_ids": sorted(ids)}


def _facts(settings: Settings, batch: dict[str, Any]) -> BatchFacts:
    with session_scope(settings) as session:
        rows = list(session.execute(select(Detection).where(Detection.id.in_(batch["detection_ids"]))
                                    .order_by(Detection.detected_at)).scalars()) if batch["detection_ids"] else []
        camera = session.get(Camera, batch["camera_id"])
        name = camera.name if camera else batch["camera_id"]
    detections = [{"id": r.id, "object_type": r.object_type, "confidence": r.confidence,
                   "bbox": {"x": r.bbox_x, "y": r.bbox_y, "width": r.bbox_width, "height": r.bbox_height},
                   "detected_at": r.detected_at} for r in rows]
    return BatchFacts(batch["id"], batch["camera_id"], name, _utc(batch["opened_at"]), _utc(batch["last_at"]),
                      detections)


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


def analyse_batch(settings: Settings, batch_id: str, *, started_at: float, first_attempt: bool,
                  final_attempt: bool) -> dict[str, Any]:
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
    call_started = time.time()
    analysis = _score(settings, facts, final_attempt)
    analysed_at = time.time()
    telemetry.record(settings, "analyze", (analysed_at - call_started) * 1000, analysed_at)

    level = runtime_config.severity_for(analysis.risk_score, runtime_config.thresholds(settings))
    event = Event(batch_id=batch_id, camera_id=batch["camera_id"], started_at=facts.started_at,
                  ended_at=facts.ended_at, risk_score=analysis.risk_score, risk_level=level,
                  summary=analysis.summary, reasoning=analysis.reasoning,
                  detection_ids=[d["id"] for d in facts.detections], detection_count=len(facts.detections),
                  analyser=analysis.analyser[:64], input_tokens=analysis.input_tokens,
                  output_tokens=analysis.output_tokens)
    try:
        with session_scope(settings) as session:
            session.add(event)
            session.flush()
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
    out = _event_dict(event, created=True)
    out.update(input_tokens=analysis.input_tokens, output_tokens=analysis.output_tokens)
    return out
