from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class Event(Base):
    """The analysed outcome of one detection batch; `batch_id` is unique so a retried analysis
    cannot create a second event. `reviewed`, `reviewed_at` and `notes` are the operator's.

    GET /api/events lists newest first (`started_at`, then `id`); each filter it offers leads one of
    the composite indexes below, so a page is an index range, not a sort. Every index also carries the
    other filter columns after `(started_at, id)` (which already make each key unique, so the order is
    unchanged): the exact count of a filtered listing and the rows an offset skips are then read from
    the index alone, never from the table (bench P15).

    On PostgreSQL the review queue's count (`reviewed`, then `risk_level`) also has a narrow index of
    its own: B-tree deduplication stores each distinct key once with a list of row ids, so counting
    17,000 matching events walks a few hundred bytes instead of 17,000 wide entries (2.5x faster in
    P15). SQLite has no deduplication, and its counts are already cheap, so the index is PostgreSQL's only.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_started", "started_at", "id", "camera_id", "risk_level", "reviewed", "risk_score"),
        Index("ix_events_camera_started", "camera_id", "started_at", "id", "risk_level", "reviewed", "risk_score"),
        Index("ix_events_level_started", "risk_level", "started_at", "id", "camera_id", "reviewed", "risk_score"),
        Index("ix_events_reviewed_started", "reviewed", "started_at", "id", "camera_id", "risk_level", "risk_score"),
        Index("ix_events_reviewed_level_count", "reviewed", "risk_level").ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), unique=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    risk_score: Mapped[int] = mapped_column(Integer)
    risk_level: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    reasoning: Mapped[str] = mapped_column(Text, default="")
    detection_ids: Mapped[list] = mapped_column(JSONType, default=list)
    detection_count: Mapped[int] = mapped_column(Integer, default=0)
    analyser: Mapped[str] = mapped_column(String(64), default="")
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Deviation from the camera's hour-of-week baseline (app/pipeline/anomaly.py); null while the slot is too young.
    anomaly_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    is_anomaly: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
