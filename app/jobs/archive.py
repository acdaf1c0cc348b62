"""The job registry's durable half: finished jobs archived from Redis into the `jobs` table, and
read back in the registry's shape once they have left the Redis index (so a job id answers long
after its Redis record is trimmed)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import upsert_insert
from app.core.time import iso_utc
from app.models import Job


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def upsert_jobs(session: Session, jobs: list[dict[str, Any]]) -> None:
    """Insert or update job rows, on PostgreSQL and SQLite alike."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": j["id"],
            "task_name": j["task"] or "",
            "queue": j["queue"] or "",
            "state": j["state"] or "",
            "args": j["args"],
            "kwargs": j["kwargs"],
            "attempts": j["attempts"],
            "error_message": j["error"],
            "traceback": j["traceback"],
            "result": j["result"],
            "worker": j["worker"],
            "idempotency_key": j["idempotency_key"],
            "request_id": j["request_id"],
            "created_at": _parse_iso(j["created_at"]) or now,
            "started_at": _parse_iso(j["started_at"]),
            "finished_at": _parse_iso(j["finished_at"]),
            "updated_at": _parse_iso(j["updated_at"]) or now,
        }
        for j in jobs
    ]
    session.execute(_upsert(session.get_bind().dialect.name), rows)


@cache
def _upsert(dialect: str) -> Any:
    """One INSERT ... ON CONFLICT statement per dialect, executed with many parameter sets: compiled
    once and cached, where a multi-row VALUES of a different length every flush was compiled anew
    each time (most of the archiver's CPU while the pipeline ran)."""
    base = upsert_insert(dialect)(Job.__table__)
    updatable = {c: base.excluded[c] for c in _COLUMNS if c not in ("id", "created_at")}
    return base.on_conflict_do_update(index_elements=["id"], set_=updatable)


_COLUMNS = (
    "id",
    "task_name",
    "queue",
    "state",
    "args",
    "kwargs",
    "attempts",
    "error_message",
    "traceback",
    "result",
    "worker",
    "idempotency_key",
    "request_id",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)


def job_from_sql(session: Session, job_id: str) -> dict[str, Any] | None:
    """A finished job that has left the Redis index, in the registry's shape."""
    row = session.execute(select(Job).where(Job.id == job_id)).scalar_one_or_none()
    if row is None:
        return None
    return {
        "id": row.id,
        "task": row.task_name,
        "queue": row.queue,
        "state": row.state,
        "args": row.args,
        "kwargs": row.kwargs,
        "attempts": row.attempts,
        "worker": row.worker,
        "error": row.error_message,
        "traceback": row.traceback,
        "result": row.result,
        "progress": None,
        "eta": None,
        "request_id": row.request_id,
        "idempotency_key": row.idempotency_key,
        "created_at": iso_utc(row.created_at),
        "started_at": iso_utc(row.started_at),
        "finished_at": iso_utc(row.finished_at),
        "updated_at": iso_utc(row.updated_at),
    }
