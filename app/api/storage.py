"""Storage statistics (003/004): disk, per-directory usage and table sizes."""
from __future__ import annotations

from flask import Blueprint

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.core.db import session_scope
from app.ops.storage import storage_stats
bp = Blueprint("storage", __name__)


@bp.get("/api/system/storage")
@endpoint(summary="Disk usage, thumbnail/image/clip directories and row counts", tags=["storage"])
def storage():
    settings = current_settings()
    with session_scope(settings) as session:
        return storage_stats(settings, session)
