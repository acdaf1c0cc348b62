"""Log search, statistics and frontend ingest over the `logs` table.

Searching: the database filters, in one query shape for both backends. Full-text queries are
case-insensitive substring matches of every word (ILIKE on PostgreSQL, LIKE on SQLite). Regular
expressions are first compiled with RE2 (google-re2): a syntax error, a feature RE2 refuses
(backreferences, lookaround) or a pattern whose program is too large is a 400 before the database
sees it. Then PostgreSQL runs it with its own `~` operator (its engine does not backtrack
exponentially on RE2-valid patterns) and SQLite through a `regexp()` function backed by RE2
(SQLAlchemy's default one uses Python's backtracking `re`, which `(a+)+$` can hang). Every search
also runs under a deadline: `statement_timeout` on PostgreSQL, a progress handler on SQLite, so no
query, catastrophic or merely huge, can hold a server thread longer than VIGIL_LOG_SEARCH_TIMEOUT.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import re2
from sqlalchemy import ColumnElement, Connection, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.core.context import request_id_var
from app.core.errors import InvalidInput, NotFound, Unavailable
from app.core.time import iso_utc
from app.models.log import Log

MAX_PATTERN = 1000
_SLASHED = re.compile(r"^/(?P<pattern>.+)/(?P<flags>i?)$", re.S)


# --- filters ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogFilter:
    """Everything a log listing, search or export can filter by (all optional, combined with AND)."""

    level: str | None = None
    component: str | None = None
    camera_id: str | None = None
    source: str | None = None
    request_id: str | None = None
    job_id: str | None = None
    user_id: str | None = None
    text: str | None = None  # every word must appear, case-insensitive
    regex: str | None = None  # RE2 syntax, validated
    ignore_case: bool = False  # for `regex`
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise InvalidInput(
                "start must not be after end", errors=[{"location": "query", "field": "start", "message": "after end"}]
            )
        if self.regex is not None:
            compile_regex(self.regex, self.ignore_case)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start", "end"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogFilter:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("start", "end"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)


def parse_query(query: str | None, mode: str = "auto") -> dict[str, Any]:
    """The platform API's `query` parameter as LogFilter fields: `mode=text|regex`, or `auto`, where
    `/pattern/` (or `/pattern/i`) is a regular expression and anything else is full text."""
    if not query:
        return {}
    if mode == "regex":
        return {"regex": query}
    if mode == "auto":
        m = _SLASHED.match(query)
        if m:
            return {"regex": m.group("pattern"), "ignore_case": m.group("flags") == "i"}
    return {"text": query}


def _bad_regex(message: str) -> InvalidInput:
    return InvalidInput(
        f"Invalid regular expression: {message}",
        code="invalid_regex",
        errors=[{"location": "query", "field": "query", "message": message}],
    )


@functools.lru_cache(maxsize=128)
def compile_regex(pattern: str, ignore_case: bool = False):
    """An RE2 program for `pattern`, or a 400 saying why there can be none."""

    if len(pattern) > MAX_PATTERN:
        raise _bad_regex(f"longer than {MAX_PATTERN} characters")
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    options.max_mem = 8 << 20  # bounds the compiled program: a{1000}{1000} is refused, not built
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise _bad_regex(str(detail)) from None


def _sqlite_regexp(pattern: str, value: str | None) -> int:
    if value is None:
        return 0
    ignore_case = pattern.startswith("(?i)")
    program = compile_regex(pattern[4:] if ignore_case else pattern, ignore_case)
    return 1 if program.search(value) else 0


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def conditions(f: LogFilter, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a filter on the given dialect."""
    out: list[ColumnElement[bool]] = []
    for column, value in (
        (Log.level, f.level),
        (Log.component, f.component),
        (Log.camera_id, f.camera_id),
        (Log.source, f.source),
        (Log.request_id, f.request_id),
        (Log.job_id, f.job_id),
        (Log.user_id, f.user_id),
    ):
        if value is not None:
            out.append(column == value)
    if f.start is not None:
        out.append(Log.timestamp >= f.start)
    if f.end is not None:
        out.append(Log.timestamp <= f.end)
    if f.text:
        for word in f.text.split():
            out.append(Log.message.ilike(f"%{_like_escape(word)}%", escape="\\"))
    if f.regex is not None:
        if dialect == "postgresql":
            out.append(Log.message.op("~*" if f.ignore_case else "~")(f.regex))
        else:
            out.append(Log.message.op("REGEXP")(("(?i)" if f.ignore_case else "") + f.regex))
    return out


# --- bounded execution ------------------------------------------------------------------------------------
def prepare_connection(conn: Connection) -> None:
    """Give a SQLite connection the RE2-backed `regexp()` (replacing SQLAlchemy's `re` one)."""
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        raw.create_function("regexp", 2, _sqlite_regexp, deterministic=True)


@contextmanager
def bounded(session: Session, timeout: float) -> Iterator[None]:
    """Run the block's queries under a deadline; a query past it is a 400 `search_timeout`.

    Database errors become service errors: an invalid pattern PostgreSQL refuses is a 400, a
    database that cannot be reached a 503, never a 500.
    """
    raw = None
    try:
        conn = session.connection()
        prepare_connection(conn)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
        else:
            raw = conn.connection.driver_connection
            deadline = time.monotonic() + timeout
            raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 20_000)
        yield
    except DBAPIError as exc:
        raise translate_db_error(exc, timeout) from None
    finally:
        if raw is not None:
            raw.set_progress_handler(None, 0)


def translate_db_error(exc: DBAPIError, timeout: float | None = None) -> Exception:
    code = getattr(exc.orig, "pgcode", None)
    text = str(exc.orig)
    if code == "57014" or "interrupted" in text:
        return InvalidInput(
            f"Search stopped after {timeout:g}s; narrow the time range or the pattern.", code="search_timeout"
        )
    if code == "2201B":
        return _bad_regex(text.splitlines()[0])
    if exc.connection_invalidated or code is None or code.startswith("08"):
        return Unavailable(f"Log database unavailable: {type(exc.orig).__name__}")
    return Unavailable(f"Log query failed: {type(exc.orig).__name__}")


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn a database outage into a 503 for code paths without a search deadline."""
    try:
        yield
    except DBAPIError as exc:
        raise translate_db_error(exc) from None


# --- queries ------------------------------------------------------------------------------------------------
def search(session: Session, f: LogFilter, *, limit: int, offset: int, timeout: float) -> tuple[int, list[Log]]:
    """One page of matching logs, newest first, with the total number of matches."""
    dialect = session.get_bind().dialect.name
    where = conditions(f, dialect)
    with bounded(session, timeout):
        total = session.execute(select(func.count()).select_from(Log).where(*where)).scalar_one()
        rows = list(
            session.execute(
                select(Log).where(*where).order_by(Log.timestamp.desc(), Log.id.desc()).limit(limit).offset(offset)
            ).scalars()
        )
    return int(total), rows


def get(session: Session, log_id: int) -> Log:
    with database_errors():
        row = session.get(Log, log_id)
    if row is None:
        raise NotFound(f"Log entry {log_id} not found")
    return row


def stats(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Today's counts (UTC day): totals, errors (ERROR and CRITICAL), warnings, by component and level."""
    now = now or datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with database_errors():
        by_level = dict(
            session.execute(select(Log.level, func.count()).where(Log.timestamp >= today).group_by(Log.level)).all()
        )
        by_component = dict(
            session.execute(
                select(Log.component, func.count())
                .where(Log.timestamp >= today)
                .group_by(Log.component)
                .order_by(func.count().desc(), Log.component)
            ).all()
        )
    return {
        "total_today": sum(by_level.values()),
        "errors_today": by_level.get("ERROR", 0) + by_level.get("CRITICAL", 0),
        "warnings_today": by_level.get("WARNING", 0),
        "by_component": by_component,
        "by_level": by_level,
        "top_component": next(iter(by_component), None),
    }


def ingest_frontend(session: Session, entries: list[dict[str, Any]]) -> int:
    """Store frontend log entries (already validated) in one statement; returns how many."""
    now = datetime.now(UTC)
    request_id = request_id_var.get()
    rows = []
    for entry in entries:
        context = entry.get("context") or {}
        extra = {"context": context} if context else {}
        for key in ("url", "user_agent"):
            if entry.get(key):
                extra[key] = entry[key]
        user = context.get("userId", context.get("user_id")) if isinstance(context, dict) else None
        rows.append(
            {
                "timestamp": entry.get("timestamp") or now,
                "level": entry["level"],
                "component": (entry.get("component") or "frontend")[:64],
                "message": entry["message"],
                "camera_id": (
                    str(context["camera_id"])[:64] if isinstance(context, dict) and context.get("camera_id") else None
                ),
                "request_id": request_id,
                "job_id": None,
                "user_id": str(user)[:64] if user is not None else None,
                "duration_ms": None,
                "extra": extra or None,
                "source": "frontend",
            }
        )
    with database_errors():
        session.execute(insert(Log), rows)
        session.commit()
    return len(rows)


# --- shapes ----------------------------------------------------------------------------------------------------


def as_system(row: Any) -> dict[str, Any]:
    """A log in the System Operations API's shape (integer id, upper-case level, component)."""
    return {
        "id": row.id,
        "timestamp": iso_utc(row.timestamp),
        "level": row.level,
        "component": row.component,
        "message": row.message,
        "camera_id": row.camera_id,
        "request_id": row.request_id,
        "job_id": row.job_id,
        "user_id": row.user_id,
        "duration_ms": row.duration_ms,
        "extra": row.extra,
        "source": row.source,
    }


def as_platform(row: Any) -> dict[str, Any]:
    """A log in the platform API's shape (`log_<id>`, lower-case level, service, metadata)."""
    metadata = dict(row.extra or {})
    for key in ("job_id", "camera_id", "duration_ms", "source"):
        value = getattr(row, key)
        if value is not None:
            metadata[key] = value
    return {
        "id": f"log_{row.id}",
        "timestamp": iso_utc(row.timestamp),
        "level": row.level.lower(),
        "service": row.component,
        "message": row.message,
        "request_id": row.request_id,
        "user_id": row.user_id,
        "metadata": metadata,
    }
