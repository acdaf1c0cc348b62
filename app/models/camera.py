from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Camera(Base):
    """A camera is a folder under the camera root; its id is the normalised folder name.

    `name` starts as the folder's name and is the display name an operator may change (the analyser
    and the API show it); the folder is `folder_path`. `last_seen_at` is the watcher's last upload
    from the folder (refreshed at most once a minute), from which the API derives online / silent /
    offline; the stored `status` column predates that and is not read. A disabled camera's uploads
    are recorded but not detected.
    """

    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    folder_path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(32), default="online")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
