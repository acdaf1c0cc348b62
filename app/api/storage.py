"""Storage statistics (003/004): disk, per-directory usage and table sizes."""
from __future__ import annotations

from flask import Blueprint, current_app

from app.api.kit.endpoint import endpoint
from app.core.db import session_scope
from app.ops import cleanup
bp = Blueprint("storage", __name__)


@bp.get("/api/system/storage")
@endpoint(summary="Disk usage, thumbnail/image/clip directories and row counts", tags=["storage"])
def storage():
    settings = current_app.config["VIGIL_SETTINGS"]
    with session_scope(settings) as session:
        return cleanup.storage_stats(settings, session)
