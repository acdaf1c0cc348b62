"""What the core-resource API tests share (cameras, events, detections, batches): an app on its own
settings, rows written as the pipeline writes them, and a check that an answer has exactly the
fields its declared response model documents."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app import create_app
from app.core.db import session_scope
from app.models import Camera, Detection, DetectionBatch, Event

UTC = UTC
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


def client_for(settings: Any) -> Any:
    flask_app = create_app(settings)
    flask_app.testing = True
    return flask_app.test_client()


def add_camera(
    settings: Any,
    camera_id: str,
    *,
    last_seen: datetime | None = None,
    enabled: bool = True,
    folder: Path | None = None,
) -> None:
    with session_scope(settings) as session:
        session.add(
            Camera(
                id=camera_id,
                name=camera_id.replace("_", " ").title(),
                folder_path=str(folder or Path(settings.camera_root) / camera_id),
                enabled=enabled,
                last_seen_at=last_seen,
            )
        )


def add_event(
    settings: Any,
    camera_id: str,
    *,
    started: datetime = T0,
    risk: int = 50,
    level: str = "medium",
    kinds: tuple[str, ...] = ("person",),
    reviewed: bool = False,
    file_path: str | None = None,
    batch: bool = True,
    confidence: float = 0.9,
) -> tuple[int, str, list[int]]:
    """An event with its closed batch and one detection per kind, as the pipeline leaves them:
    (event id, batch id, detection ids)."""
    batch_id = uuid.uuid4().hex
    with session_scope(settings) as session:
        rows = [
            Detection(
                camera_id=camera_id,
                file_path=file_path or f"{settings.camera_root}/{camera_id}/x.jpg",
                object_type=kind,
                confidence=confidence,
                bbox_x=10 * i,
                bbox_y=20,
                bbox_width=30,
                bbox_height=40,
                batch_id=batch_id,
                job_id=f"job-{batch_id[:8]}",
                detected_at=started + timedelta(seconds=i),
            )
            for i, kind in enumerate(kinds)
        ]
        session.add_all(rows)
        session.flush()
        ids = [r.id for r in rows]
        if batch:
            session.add(
                DetectionBatch(
                    id=batch_id,
                    camera_id=camera_id,
                    status="analysed",
                    close_reason="idle",
                    detection_count=len(ids),
                    opened_at=started,
                    last_detection_at=started + timedelta(seconds=len(ids)),
                    closed_at=started + timedelta(seconds=30),
                    analysis_job_id=f"ana-{batch_id[:8]}",
                    analysed_at=started + timedelta(seconds=31),
                )
            )
        event = Event(
            batch_id=batch_id,
            camera_id=camera_id,
            started_at=started,
            ended_at=started + timedelta(seconds=len(ids)),
            risk_score=risk,
            risk_level=level,
            summary=f"{len(ids)} objects",
            reasoning="because",
            detection_ids=ids,
            detection_count=len(ids),
            analyser="builtin",
            reviewed=reviewed,
        )
        session.add(event)
        session.flush()
        if batch:
            session.get(DetectionBatch, batch_id).event_id = event.id
        return event.id, batch_id, ids


def assert_shape(model: type[BaseModel], body: Any) -> None:
    """`body` has exactly the fields `model` documents, at every level (the OpenAPI response schema
    cannot drift from what the handler returns), and validates against it."""
    model.model_validate(body)
    assert set(body) == set(model.model_fields), (model.__name__, set(body) ^ set(model.model_fields))
    for name, info in model.model_fields.items():
        value = body[name]
        for candidate in (info.annotation, *typing.get_args(info.annotation)):
            inner = typing.get_args(candidate)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and isinstance(value, dict):
                assert_shape(candidate, value)
            elif (
                typing.get_origin(candidate) is list
                and inner
                and isinstance(inner[0], type)
                and issubclass(inner[0], BaseModel)
            ):
                for item in value or []:
                    assert_shape(inner[0], item)
