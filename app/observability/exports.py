"""Log exports (platform API `GET /logs/export`): a job on the `cleanup` queue writes the file, the API
reports its status and serves the download.

The export streams: rows come from the database in chunks (`yield_per`: a server-side cursor on
PostgreSQL, SQLite's incremental cursor) and go straight into the file, so a million rows never
sit in memory. The file is written as `<id>.<ext>.part` and renamed when complete, so a download
never sees half a file, and a job re-run after a worker died (acks are late) simply starts over.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from app.celery.app import celery
from app.core.context import request_id_var
from app.core.db import get_engine, session_scope
from app.core.errors import Conflict, NotFound, ServiceError, Unavailable
from app.core.settings import Settings
from app.core.time import iso_utc
from app.models.export import LogExport
from app.models.log import Log
from app.observability.logs import LogFilter, as_platform, conditions, database_errors, prepare_connection

log = logging.getLogger(__name__)

EXPORT_TASK = "vigil.cleanup.export_logs"
CHUNK = 2000
PROGRESS_EVERY = 20_000


class Gone(ServiceError):
    status = 410
    code = "export_expired"


@dataclass(frozen=True)
class Format:
    extension: str
    content_type: str  # the bare media type: the download adds `; charset=utf-8` to text types, once


FORMATS: dict[str, Format] = {
    "csv": Format("csv", "text/csv"),
    "json": Format("json", "application/json"),
    "txt": Format("txt", "text/plain"),
}
CSV_COLUMNS = (
    "id",
    "timestamp",
    "level",
    "service",
    "message",
    "request_id",
    "job_id",
    "camera_id",
    "user_id",
    "duration_ms",
    "source",
    "metadata",
)


# --- API side ------------------------------------------------------------------------------------------
def create(settings: Settings, f: LogFilter, fmt: str) -> LogExport:
    """Record the export, then queue its job. The row is committed first, so the job always finds
    it; a publish that fails marks it failed and answers 503 rather than leaving it processing."""

    export_id = f"export_logs_{uuid.uuid4().hex[:20]}"
    job_id = str(uuid.uuid4())
    with database_errors(), session_scope(settings) as session:
        session.add(
            LogExport(
                id=export_id,
                status="processing",
                format=fmt,
                filters=f.to_json(),
                job_id=job_id,
                request_id=request_id_var.get(),
                row_count=0,
            )
        )
    try:
        celery.send_task(EXPORT_TASK, kwargs={"export_id": export_id}, task_id=job_id)
    except Exception as exc:
        with session_scope(settings) as session:
            row = session.get(LogExport, export_id)
            row.status, row.error = "failed", f"could not queue the export: {type(exc).__name__}"
        raise Unavailable("The broker is unavailable; the export was not queued.") from None
    log.info("log export %s queued (%s)", export_id, fmt, extra={"export_id": export_id, "format": fmt})
    with session_scope(settings) as session:
        return session.get(LogExport, export_id)


def get(settings: Settings, export_id: str) -> LogExport:
    with database_errors(), session_scope(settings) as session:
        row = session.get(LogExport, export_id)
    if row is None:
        raise NotFound(f"Export {export_id} not found", code="export_not_found")
    return row


def download_url(settings: Settings, export: LogExport) -> str | None:
    if export.status != "completed":
        return None
    return f"{settings.public_url.rstrip('/')}/api/v1/platform/system/logs/export/{export.id}/download"


def describe(settings: Settings, export: LogExport) -> dict[str, Any]:
    expires = (
        export.finished_at + timedelta(hours=settings.export_retention_hours)
        if export.finished_at and export.status == "completed"
        else None
    )
    return {
        "export_id": export.id,
        "status": export.status,
        "download_url": download_url(settings, export),
        "format": export.format,
        "row_count": export.row_count,
        "size_bytes": export.size_bytes,
        "filters": {k: v for k, v in (export.filters or {}).items() if v not in (None, False)},
        "error": export.error,
        "created_at": iso_utc(export.created_at),
        "started_at": iso_utc(export.started_at),
        "finished_at": iso_utc(export.finished_at),
        "expires_at": iso_utc(expires),
    }


def file_for_download(settings: Settings, export_id: str) -> tuple[Path, LogExport]:
    """The finished file of an export: 404 unknown, 409 not finished, 410 expired or gone."""
    export = get(settings, export_id)
    if export.status in ("processing", "failed"):
        raise Conflict(f"Export {export_id} is {export.status}; nothing to download.", code="export_not_ready")
    root = Path(settings.export_dir).resolve()
    path = (root / (export.file_name or "")).resolve()
    if export.status != "completed" or root not in path.parents or not path.is_file():
        raise Gone(f"Export {export_id} has expired; run it again.")
    return path, export


# --- worker side ---------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, fh: TextIO):
        self.fh = fh

    def row(self, row: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _CsvWriter(_Writer):
    def __init__(self, fh: TextIO):
        super().__init__(fh)
        self.csv = csv.writer(fh)
        self.csv.writerow(CSV_COLUMNS)

    def row(self, row: Any) -> None:
        data = as_platform(row)
        meta = data.pop("metadata")
        self.csv.writerow(
            [
                data["id"],
                data["timestamp"],
                data["level"],
                data["service"],
                data["message"],
                data["request_id"] or "",
                row.job_id or "",
                row.camera_id or "",
                data["user_id"] or "",
                "" if row.duration_ms is None else row.duration_ms,
                row.source,
                json.dumps(meta, separators=(",", ":"), default=str),
            ]
        )


class _JsonWriter(_Writer):
    """A JSON array written element by element: valid JSON, never held whole in memory."""

    def __init__(self, fh: TextIO):
        super().__init__(fh)
        self.first = True
        fh.write("[")

    def row(self, row: Any) -> None:
        self.fh.write("\n" if self.first else ",\n")
        self.first = False
        self.fh.write(json.dumps(as_platform(row), separators=(",", ":"), default=str))

    def close(self) -> None:
        self.fh.write("\n]\n")


class _TextWriter(_Writer):
    def row(self, row: Any) -> None:
        message = row.message.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        self.fh.write(
            f"{iso_utc(row.timestamp)} {row.level:<8} [{row.component}] req={row.request_id or '-'} "
            f"job={row.job_id or '-'}: {message}\n"
        )


WRITERS: dict[str, Callable[[TextIO], _Writer]] = {"csv": _CsvWriter, "json": _JsonWriter, "txt": _TextWriter}


def run(settings: Settings, export_id: str, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The export job: stream the filtered logs (oldest first) into the export's file."""
    now = datetime.now(UTC)
    with session_scope(settings) as session:
        export = session.get(LogExport, export_id)
        if export is None:
            return {"export_id": export_id, "status": "missing"}
        export.status, export.started_at, export.error = "processing", now, None
        fmt, f = export.format, LogFilter.from_json(export.filters or {})
    root = Path(settings.export_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{export_id}.{FORMATS[fmt].extension}"
    part = root / (name + ".part")
    count = 0
    try:
        engine = get_engine(settings)
        with engine.connect() as conn, open(part, "w", encoding="utf-8", newline="") as fh:
            prepare_connection(conn)
            stream = conn.execution_options(yield_per=CHUNK)
            result = stream.execute(
                select(*Log.__table__.columns).where(*conditions(f, conn.dialect.name)).order_by(Log.timestamp, Log.id)
            )
            writer = WRITERS[fmt](fh)
            for row in result:
                writer.row(row)
                count += 1
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(count)
            writer.close()
        os.replace(part, root / name)
    except BaseException as exc:
        part.unlink(missing_ok=True)
        with session_scope(settings) as session:
            export = session.get(LogExport, export_id)
            if export is not None:
                export.status, export.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
                export.finished_at, export.row_count = datetime.now(UTC), count
        raise
    size = (root / name).stat().st_size
    with session_scope(settings) as session:
        export = session.get(LogExport, export_id)
        export.status, export.file_name, export.row_count, export.size_bytes = "completed", name, count, size
        export.finished_at = datetime.now(UTC)
    log.info(
        "log export %s completed: %d rows, %d bytes",
        export_id,
        count,
        size,
        extra={"export_id": export_id, "rows": count, "size_bytes": size},
    )
    return {"export_id": export_id, "status": "completed", "rows": count, "size_bytes": size}


def purge_expired(settings: Settings, now: datetime | None = None) -> int:
    """Delete export files past their retention and mark their rows `expired`; returns how many."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=settings.export_retention_hours)
    purged = 0
    with session_scope(settings) as session:
        rows = (
            session.execute(select(LogExport).where(LogExport.status == "completed", LogExport.finished_at < cutoff))
            .scalars()
            .all()
        )
        for export in rows:
            if export.file_name:
                (Path(settings.export_dir) / export.file_name).unlink(missing_ok=True)
            export.status = "expired"
            purged += 1
    return purged
