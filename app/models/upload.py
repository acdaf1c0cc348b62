from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, UTCDateTime, utcnow


class Upload(Base):
    """One file the watcher accepted from a camera folder, and what became of it ("no upload left behind").

    A file is identified by `(path, size, mtime_ns)`, which the watcher can compare with `stat()`
    without reading the file: a reconciliation scan of the camera root finds what no row records
    (files written while the watcher was down), and the unique constraint makes recording a file
    idempotent when the scan and the live observer see it together (`ON CONFLICT DO NOTHING`).
    A rewritten file (new size or mtime) is a new upload. `file_hash` (SHA-256) finds the earlier
    upload of the same content, whose `job_id` says whether that job still exists; `first_seen_at`
    is when the watcher saw the file complete.

    `outcome`: `queued` (job enqueued), `detected` (the job finished), `duplicate` (same content as a
    live earlier upload: `reason` names it), `skipped` (not a complete image after its settle time,
    or outside the root: `reason` says which), `disabled` (its camera is disabled: recorded, not
    detected), `failed` (the job failed for good).
    """

    __tablename__ = "uploads"
    __table_args__ = (
        UniqueConstraint("path", "size", "mtime_ns", name="uq_uploads_path"),
        Index("ix_uploads_camera_seen", "camera_id", "first_seen_at"),
        Index("ix_uploads_outcome_seen", "outcome", "first_seen_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    file_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="queued")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
