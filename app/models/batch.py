from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class DetectionBatch(Base):
    """A closed detection batch: the durable record of one camera window and what became of it.

    Open batches live in Redis (app/pipeline/batches.py), where several detection workers add to
    them atomically; a batch gets its row here when it closes, and the analysis fills in the rest.
    The stage timestamps are the ones the pipeline-latency figures are computed from.
    """

    __tablename__ = "detection_batches"
    __table_args__ = (Index("ix_detection_batches_camera_closed", "camera_id", "closed_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="closed")  # closed | analysed | failed
    close_reason: Mapped[str] = mapped_column(String(16))  # window | idle
    detection_count: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_detection_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    analysis_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    analysis_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    analysed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
