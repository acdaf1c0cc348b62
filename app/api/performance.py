"""Performance metrics (004): the current snapshot and the stored history."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.core.db import session_scope
from app.ops import performance
bp = Blueprint("performance", __name__)


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time_range: Literal["5m", "15m", "60m"] = Field("5m", description="How far back: 5m, 15m or 60m")


@bp.get("/api/system/performance")
@endpoint(summary="Current performance: GPU, inference, databases, host, processes", tags=["performance"])
def current_performance():
    return performance.collect(current_settings(), cpu_interval=0.1)


@bp.get("/api/system/performance/history")
@endpoint(summary="Stored performance snapshots, oldest first", query=HistoryQuery, tags=["performance"])
def performance_history(query: HistoryQuery):
    with session_scope(current_settings()) as session:
        snapshots = performance.history(session, query.time_range)
    return {"snapshots": snapshots, "time_range": query.time_range, "count": len(snapshots)}
