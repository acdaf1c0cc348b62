"""Cameras appear when the watcher first sees their folder."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Camera


def ensure_camera(session: Session, camera_id: str, name: str, folder_path: str,
                  seen_at: datetime | None = None) -> None:
    """Create the camera row if it does not exist (safe under concurrency), and mark it seen."""
    seen_at = seen_at or datetime.now(timezone.utc)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(Camera).values(id=camera_id, name=name, folder_path=folder_path, status="online",
                                          created_at=seen_at, last_seen_at=seen_at)
                    .on_conflict_do_nothing(index_elements=["id"]))
    session.execute(update(Camera).where(Camera.id == camera_id).values(last_seen_at=seen_at))
