"""Detection batches, open (Redis) and closed (SQL): /api/batches/..."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.detections import DetectionOut
from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required
from app.api.kit.types import Offset
from app.pipeline import batches, detections

bp = Blueprint("batches", __name__, url_prefix="/api/batches")
TAGS = ["batches"]
ERRORS = {503: "Database or Redis unavailable"}


class BatchPath(BaseModel):
    batch_id: str = Field(min_length=1, max_length=64, description="Batch id")


class BatchesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str | None = Field(None, min_length=1, max_length=64)
    status: Literal["open", "closed", "analysed", "failed"] | None = Field(
        None,
        description="`open` (collecting detections, in Redis), `closed` (handed to analysis), `analysed`, "
        "`failed`; default all",
    )
    limit: int = Field(50, ge=1, le=500)
    offset: Offset = 0


class BatchOut(Answer):
    id: str
    camera_id: str | None
    status: str = Field(description="open | closed | analysed | failed")
    close_reason: str | None = Field(description="window | idle; null while open")
    detection_count: int
    first_seen_at: str | None = Field(description="When the watcher saw the batch's first image")
    opened_at: str | None
    last_detection_at: str | None
    closes_at: str | None = Field(description="Open batches: when it closes unless more detections arrive")
    closed_at: str | None
    analysis_job_id: str | None
    analysis_started_at: str | None
    analysed_at: str | None
    event_id: int | None


class BatchDetail(BatchOut):
    detection_ids: list[int]
    detections: list[DetectionOut] = Field(
        description="In the order found, at most 500 (all: GET /api/detections?batch_id=)"
    )


class BatchPage(Answer):
    batches: list[BatchOut]
    count: int = Field(description="Batches matching the filters, open and closed")
    open_count: int = Field(description="How many of them are open (they lead the first page)")
    limit: int
    offset: int


@bp.get("")
@endpoint(
    query=BatchesQuery,
    response=BatchPage,
    summary="List batches: open ones first, then closed, newest first",
    tags=TAGS,
    errors=ERRORS,
    links={"GetBatch": Link("batches.get_batch", {"batch_id": "$response.body#/batches/0/id"})},
)
def list_batches(query: BatchesQuery):
    with dependencies_required():
        count, open_count, rows = batches.list_batches(
            current_settings(), camera_id=query.camera_id, status=query.status, limit=query.limit, offset=query.offset
        )
    return {"batches": rows, "count": count, "open_count": open_count, "limit": query.limit, "offset": query.offset}


@bp.get("/<batch_id>")
@endpoint(
    path=BatchPath,
    response=BatchDetail,
    summary="Get a batch with its detections and analysis job",
    tags=TAGS,
    errors={404: "No such batch", **ERRORS},
)
def get_batch(batch_id: str):
    settings = current_settings()
    with dependencies_required():
        batch = batches.get_batch(settings, batch_id)
        batch["detections"] = detections.of_batch(settings, batch_id)
    return batch
