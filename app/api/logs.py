"""Logs: /api/logs (System Operations API) and /api/v1/platform/system/logs (platform API).

The System Operations API lists, counts and ingests; the platform API searches (full text or RE2
regex) and exports through a job on the `cleanup` queue. Both read the same `logs` table that every
process's sink writes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, Literal

from flask import Blueprint, send_file
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.errors import ApiError
from app.api.kit.types import MAX_DB_ID, Offset, Timestamp, any_case
from app.core.db import get_sessionmaker
from app.observability import exports, logs

bp = Blueprint("logs", __name__)


PLATFORM = "/api/v1/platform/system/logs"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Levels and sources are read in any letter case (`_upper`/`_lower`), and the schema says so.
Level = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], WithJsonSchema(any_case(*LEVELS))]
PlatformLevel = Annotated[
    Literal["debug", "info", "warning", "error", "critical"], WithJsonSchema(any_case(*(v.lower() for v in LEVELS)))
]
Source = Annotated[Literal["backend", "frontend"], WithJsonSchema(any_case("backend", "frontend"))]


def _session():
    return get_sessionmaker(current_settings())()


def _ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# --- System Operations API: /api/logs -----------------------------------------------------------------
class SystemLogsQuery(BaseModel):
    level: Level | None = Field(None, description="DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)")
    component: str | None = Field(None, max_length=64, description="Module/component name")
    camera_id: str | None = Field(None, max_length=64)
    source: Source | None = None
    search: str | None = Field(
        None, max_length=1000, description="Every word must appear in the message (case-insensitive)"
    )
    start_date: Timestamp | None = Field(None, description="From (inclusive); naive times are UTC")
    end_date: Timestamp | None = Field(None, description="To (inclusive)")
    limit: int = Field(100, ge=1, le=1000)
    offset: Offset = 0

    _level = field_validator("level", mode="before")(_upper)
    _source = field_validator("source", mode="before")(_lower)


class LogPath(BaseModel):
    log_id: int = Field(ge=1, le=MAX_DB_ID, description="Log entry id")


class SystemLog(Answer):
    id: int
    timestamp: str
    level: str
    component: str
    message: str
    camera_id: str | None
    request_id: str | None
    job_id: str | None
    user_id: str | None
    duration_ms: float | None
    extra: dict[str, Any] | None
    source: str


class SystemLogPage(Answer):
    logs: list[SystemLog]
    count: int = Field(description="Entries matching the filters, not only this page")
    limit: int
    offset: int


class LogStats(Answer):
    total_today: int
    errors_today: int = Field(description="ERROR and CRITICAL")
    warnings_today: int
    by_component: dict[str, int]
    by_level: dict[str, int]
    top_component: str | None


class FrontendAccepted(Answer):
    success: Literal[True]
    count: int
    message: str


class FrontendRejected(BaseModel):
    """The System Operations API's frontend-ingest error shape, with the family's `detail` and `request_id`."""

    model_config = ConfigDict(extra="forbid")

    detail: str
    request_id: str | None = None
    success: Literal[False]
    count: Literal[0]
    message: str
    errors: list[str] = Field(description="`field: problem` for each problem")


@bp.get("/api/logs")
@endpoint(
    query=SystemLogsQuery,
    response=SystemLogPage,
    summary="List logs, newest first",
    tags=["logs"],
    errors={400: "Invalid parameters, or start_date after end_date"},
    links={"GetLog": Link("logs.get_log", {"log_id": "$response.body#/logs/0/id"})},
)
def list_logs(query: SystemLogsQuery):
    """`count` is the number of entries matching the filters (not only this page). A
    `start_date` after `end_date` is a 400 (a rule between two parameters, which the schema cannot
    state)."""
    f = logs.LogFilter(
        level=query.level,
        component=query.component,
        camera_id=query.camera_id,
        source=query.source,
        text=query.search,
        start=query.start_date,
        end=query.end_date,
    )
    with _session() as session:
        total, rows = logs.search(
            session, f, limit=query.limit, offset=query.offset, timeout=current_settings().log_search_timeout
        )
        return {"logs": [logs.as_system(r) for r in rows], "count": total, "limit": query.limit, "offset": query.offset}


@bp.get("/api/logs/stats")
@endpoint(response=LogStats, summary="Log statistics for today (UTC)", tags=["logs"])
def log_stats():
    with _session() as session:
        return logs.stats(session)


@bp.get("/api/logs/<other_than(frontend):log_id>")  # GET /api/logs/frontend: a 405 naming POST
@endpoint(
    path=LogPath, response=SystemLog, summary="Get one log entry", tags=["logs"], errors={404: "No such log entry"}
)
def get_log(log_id: int):
    with _session() as session:
        return logs.as_system(logs.get(session, log_id))


class FrontendLogEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    level: Level = Field(description="DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)")
    message: str = Field(min_length=1, max_length=10_000)
    timestamp: Timestamp | None = Field(None, description="ISO 8601; defaults to server time")
    component: str | None = Field(None, max_length=64, description="Frontend component name")
    context: dict[str, Any] | None = Field(None, description="Additional context (JSON object)")
    url: str | None = Field(None, max_length=2048)
    user_agent: str | None = Field(None, max_length=512)

    _level = field_validator("level", mode="before")(_upper)


class FrontendBatch(BaseModel):
    model_config = ConfigDict(strict=True)

    entries: list[FrontendLogEntry] = Field(min_length=1, max_length=100, description="1-100 log entries")


def _frontend_errors(batch: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Validation failures in the System Operations API's documented frontend-ingest shape:
    `{"success": false, "count": 0, "message": ..., "errors": ["field: problem", ...]}` (plus `detail`
    and `request_id`, like every error of the family)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(**kwargs: Any) -> Any:
            try:
                return view(**kwargs)
            except ApiError as err:
                if err.code not in ("validation_error", "invalid_json"):
                    raise
                problems = [f"{e['field'] or e['location']}: {e['message']}" for e in (err.errors or [])]
                entries_bad = any((e.get("field") or "") == "entries" for e in (err.errors or []))
                message = "Batch must contain 1-100 entries" if batch and entries_bad else err.message
                raise ApiError(
                    err.status,
                    message,
                    code=err.code,
                    extra={"success": False, "count": 0, "message": message, "errors": problems or [err.message]},
                ) from None

        return wrapper

    return decorate


FRONTEND_ERRORS = {
    400: ("Body not JSON or not UTF-8, in the System Operations API's shape", FrontendRejected),
    422: ("Invalid entry, in the System Operations API's shape", FrontendRejected),
}


@bp.post("/api/logs/frontend")
@_frontend_errors(batch=False)
@endpoint(
    body=FrontendLogEntry,
    status=201,
    response=FrontendAccepted,
    summary="Submit one frontend log entry",
    tags=["logs"],
    errors=FRONTEND_ERRORS,
)
def frontend_log(body: FrontendLogEntry):
    with _session() as session:
        count = logs.ingest_frontend(session, [body.model_dump()])
    return {"success": True, "count": count, "message": "Log entry recorded"}


@bp.post("/api/logs/frontend/batch")
@_frontend_errors(batch=True)
@endpoint(
    body=FrontendBatch,
    status=201,
    response=FrontendAccepted,
    summary="Submit 1-100 frontend log entries",
    tags=["logs"],
    errors={
        **FRONTEND_ERRORS,
        422: ("Invalid entries, or not 1-100 of them, in the System Operations API's shape", FrontendRejected),
    },
)
def frontend_batch(body: FrontendBatch):
    with _session() as session:
        count = logs.ingest_frontend(session, [e.model_dump() for e in body.entries])
    return {"success": True, "count": count, "message": f"{count} log entries recorded"}


# --- platform API: /api/v1/platform/system/logs ----------------------------------------------------------------
class PlatformLogFilter(BaseModel):
    query: str | None = Field(
        None,
        max_length=1000,
        description="Full text (every word, case-insensitive), or a regular expression "
        "(RE2 syntax) written `/pattern/` or `/pattern/i`, or with mode=regex",
    )
    mode: Literal["auto", "text", "regex"] = Field("auto", description="How to read `query`")
    level: PlatformLevel | None = None
    service: str | None = Field(None, max_length=64, description="Service (component) name")
    start_time: Timestamp | None = Field(None, description="ISO 8601; naive times are UTC")
    end_time: Timestamp | None = None
    request_id: str | None = Field(None, max_length=128)
    user_id: str | None = Field(None, max_length=64)

    _level = field_validator("level", mode="before")(_lower)

    def to_filter(self) -> logs.LogFilter:
        return logs.LogFilter(
            level=self.level.upper() if self.level else None,
            component=self.service,
            request_id=self.request_id,
            user_id=self.user_id,
            start=self.start_time,
            end=self.end_time,
            **logs.parse_query(self.query, self.mode),
        )


class PlatformLogsQuery(PlatformLogFilter):
    limit: int = Field(50, ge=1, le=100)
    offset: Offset = 0


class ExportQuery(PlatformLogFilter):
    format: Literal["csv", "json", "txt"] = "csv"


class ExportPath(BaseModel):
    export_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")


class PlatformLog(Answer):
    id: str = Field(description="log_<n>")
    timestamp: str
    level: str
    service: str
    message: str
    request_id: str | None
    user_id: str | None
    metadata: dict[str, Any]


class LogPagination(Answer):
    total: int
    limit: int
    offset: int


class PlatformLogPage(Answer):
    logs: list[PlatformLog]
    pagination: LogPagination


ExportState = Literal["processing", "completed", "failed", "expired"]


class ExportStarted(Answer):
    export_id: str
    status: ExportState
    download_url: str | None


class ExportStatus(Answer):
    export_id: str
    status: ExportState
    download_url: str | None = Field(description="Set once completed; absolute when VIGIL_PUBLIC_URL is set")
    format: Literal["csv", "json", "txt"]
    row_count: int | None
    size_bytes: int | None
    filters: dict[str, Any]
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    expires_at: str | None


_EXPORT_LINKS = {
    "ExportStatus": Link("logs.export_status", {"export_id": "$response.body#/data/export_id"}),
    "ExportDownload": Link("logs.export_download", {"export_id": "$response.body#/data/export_id"}),
}


@bp.get(PLATFORM)
@endpoint(
    query=PlatformLogsQuery,
    response=PlatformLogPage,
    summary="Search logs (full text or regex), newest first",
    tags=["logs"],
    errors={400: "Invalid parameters, invalid regular expression, start_time after end_time, or search timed out"},
)
def search_logs(query: PlatformLogsQuery):
    """Full text: every word of `query` must appear in the message, case-insensitive. Written
    `/pattern/` (or `/pattern/i`), or with `mode=regex`, `query` is an RE2 regular expression.
    `query` read as a regular expression must be valid RE2 (else 400 `invalid_regex`), and a search
    that runs longer than VIGIL_LOG_SEARCH_TIMEOUT is a 400 `search_timeout`; a `start_time` after
    `end_time` is a 400. These are rules the schema cannot state."""
    f = query.to_filter()
    with _session() as session:
        total, rows = logs.search(
            session, f, limit=query.limit, offset=query.offset, timeout=current_settings().log_search_timeout
        )
        return _ok(
            {
                "logs": [logs.as_platform(r) for r in rows],
                "pagination": {"total": total, "limit": query.limit, "offset": query.offset},
            }
        )


@bp.get(f"{PLATFORM}/export")
@endpoint(
    query=ExportQuery,
    response=ExportStarted,
    links=_EXPORT_LINKS,
    tags=["logs"],
    summary="Export filtered logs (csv, json, txt) through a background job",
    errors={
        400: "Invalid parameters, invalid regular expression, or start_time after end_time",
        503: "Broker or database unavailable",
    },
)
def export_logs(query: ExportQuery):
    """Answers at once with `status: processing`; poll `/logs/export/{export_id}` until `completed`,
    then fetch `download_url`. The filters are those of the search, with the same rules: an invalid
    RE2 pattern or a `start_time` after `end_time` is a 400."""
    settings = current_settings()
    export = exports.create(settings, query.to_filter(), query.format)
    body = exports.describe(settings, export)
    return _ok({"export_id": body["export_id"], "status": body["status"], "download_url": body["download_url"]})


@bp.get(f"{PLATFORM}/export/<export_id>")
@endpoint(
    path=ExportPath,
    response=ExportStatus,
    summary="Status of a log export",
    tags=["logs"],
    errors={404: "No such export"},
    links={"ExportDownload": Link("logs.export_download", {"export_id": "$response.body#/data/export_id"})},
)
def export_status(export_id: str):
    settings = current_settings()
    return _ok(exports.describe(settings, exports.get(settings, export_id)))


@bp.get(f"{PLATFORM}/export/<export_id>/download")
@endpoint(
    path=ExportPath,
    summary="Download a finished log export",
    tags=["logs"],
    responses={206: None, 304: None},
    content={
        "text/csv": {"type": "string", "description": "csv exports (charset utf-8)"},
        "application/json": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/PlatformLog"},
            "description": "json exports: every entry, oldest first",
        },
        "text/plain": {"type": "string", "description": "txt exports (charset utf-8)"},
    },
    errors={
        404: "No such export",
        409: "Export not finished",
        410: "Export expired",
        416: "The Range asked for is outside the file",
    },
)
def export_download(export_id: str):
    """The file itself (text/csv, application/json or text/plain, by the export's format), streamed
    from disk, as an attachment. Conditional and Range requests work (304, 206), so a large export
    can be fetched again or resumed."""
    settings = current_settings()
    path, export = exports.file_for_download(settings, export_id)
    return send_file(
        path,
        mimetype=exports.FORMATS[export.format].content_type,
        as_attachment=True,
        download_name=path.name,
        conditional=True,
    )
