"""Database engines and sessions, shared by the API, the workers and the migrations.

One engine per URL per process: gunicorn and Celery fork, so engines are created lazily in the
process that uses them and dropped in a child after fork (see `_after_fork_in_child`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.core.settings import Settings, get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def _after_fork_in_child() -> None:
    """A forked child (Celery pool process, gunicorn worker) gets a fresh lock, since another
    thread may have held ours at fork time, and drops the parent's pooled connections without
    closing them (closing would end the parent's database sessions)."""
    global _lock
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


BUSY_TIMEOUT_MS = 10000


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - exercised through every SQLite test
    # WAL lets the API read while a worker writes; busy_timeout turns lock contention into a short
    # wait instead of "database is locked"; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # PRAGMA optimize (below) analyses a sample of rows per index, not every row: milliseconds even
    # at a million detections.
    cur.execute("PRAGMA analysis_limit=1000")
    cur.close()


OPTIMIZE_EVERY = 3600.0  # seconds between two PRAGMA optimize runs on one pooled connection


def _sqlite_optimize(dbapi_conn, record) -> None:
    """Keep the planner's statistics (sqlite_stat1) current, so the listings' composite indexes stay
    chosen as the tables grow: SQLite's advice is `PRAGMA optimize` when a connection closes and
    periodically on long-lived ones. Pooled connections rarely close, so it also runs when one is
    checked in after an hour. It is a no-op unless a table this connection queried has no statistics
    or grew a lot since they were taken, so it is cheap where it runs."""
    now = time.monotonic()
    if dbapi_conn is None or (
        record is not None and now - record.info.setdefault("vigil_optimized", now) < OPTIMIZE_EVERY
    ):
        return
    if record is not None:
        record.info["vigil_optimized"] = now  # also after a failure: the next try is an hour later
    try:
        cur = dbapi_conn.cursor()
        # ANALYZE writes sqlite_stat1: while another writer holds the lock, give up at once (next time)
        # rather than hold a connection being handed back for the usual 10 s busy timeout.
        cur.execute("PRAGMA busy_timeout=50")
        try:
            cur.execute("PRAGMA optimize")
        finally:
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()
    except Exception:  # statistics are an optimisation: a busy or read-only database must not fail the caller
        return


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine with the options each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"timeout": 10, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "checkin", _sqlite_optimize)
        event.listen(engine, "close", lambda dbapi_conn, _record: _sqlite_optimize(dbapi_conn, None))
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


def upsert_insert(dialect: str | Session) -> Any:
    """The dialect's `insert` construct (it has `on_conflict_do_nothing`/`_do_update`): PostgreSQL's or
    SQLite's, for a dialect name or a session bound to one. The one place that chooses between them."""
    name = dialect if isinstance(dialect, str) else dialect.get_bind().dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = settings.database_url
    engine = _engines.get(url)
    if engine is None:
        with _lock:
            engine = _engines.get(url)
            if engine is None:
                engine = make_engine(url, pool_size=settings.db_pool_size, echo=settings.db_echo)
                _engines[url] = engine
                _sessionmakers[url] = sessionmaker(engine, expire_on_commit=False)
    return engine


def get_sessionmaker(settings: Settings | None = None) -> sessionmaker[Session]:
    settings = settings or get_settings()
    get_engine(settings)
    return _sessionmakers[settings.database_url]


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
