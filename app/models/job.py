from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow


class Job(Base):
    """Durable history of the job registry.

    The live index (waiting/active and recent finished jobs, by queue and state) is in Redis next
    to the broker; finished jobs are flushed here in batches so history survives the Redis index's
    retention window. See docs/architecture.md, "Job registry".
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue_state_finished", "queue", "state", "finished_at"),
        Index("ix_jobs_state_finished", "state", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(255), index=True)
    queue: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    args: Mapped[list] = mapped_column(JSONType, default=list)
    kwargs: Mapped[dict] = mapped_column(JSONType, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[object | None] = mapped_column(JSONType, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
