"""Agent logs in the one log store (`logs`, app/observability/logs.py): POST /logs writes client log
lines there (`component` = the agent id, `source` = `agent`, `trace_id` kept as the request id so a
search by it finds the API's own lines of that request too), GET /logs reads them back with the same
search the other log endpoints use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from app.core.db import session_scope
from app.core.settings import Settings
from app.core.time import iso_utc
from app.models import Log
from app.observability import logs as log_store

LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "error": "ERROR"}
WIRE_LEVEL = {v: k for k, v in LEVELS.items()} | {"CRITICAL": "error"}
SOURCE = "agent"


def ingest(settings: Settings, entries: list[dict[str, Any]]) -> int:
    now = datetime.now(UTC)
    rows = []
    for e in entries:
        extra: dict[str, Any] = {}
        if e.get("context"):
            extra["context"] = e["context"]
        if e.get("trace_id"):
            extra["trace_id"] = e["trace_id"]
        rows.append(
            {
                "timestamp": e.get("timestamp") or now,
                "level": LEVELS[e["level"]],
                "component": (e.get("agent_id") or "client")[:64],
                "message": e["message"],
                "camera_id": None,
                "request_id": (e.get("trace_id") or None) and e["trace_id"][:64],
                "job_id": None,
                "user_id": None,
                "duration_ms": None,
                "extra": extra or None,
                "source": SOURCE,
            }
        )
    with session_scope(settings) as session, log_store.database_errors():
        session.execute(insert(Log), rows)
    return len(rows)


def query(
    settings: Settings,
    agent_id: str | None,
    level: str | None,
    start: datetime | None,
    end: datetime | None,
    search: str | None,
    limit: int,
) -> dict[str, Any]:
    f = log_store.LogFilter(
        level=LEVELS[level] if level else None, component=agent_id, text=search or None, start=start, end=end
    )
    with session_scope(settings) as session, log_store.database_errors():
        total, rows = log_store.search(session, f, limit=limit, offset=0, timeout=settings.log_search_timeout)
        logs = [
            {
                "id": f"log_{r.id}",
                "timestamp": iso_utc(r.timestamp),
                "level": WIRE_LEVEL.get(r.level, r.level.lower()),
                "agent_id": r.component,
                "message": r.message,
                "trace_id": (r.extra or {}).get("trace_id") or r.request_id,
                "context": (r.extra or {}).get("context"),
                "source": r.source,
            }
            for r in rows
        ]
    return {"logs": logs, "total": total, "limit": limit}
