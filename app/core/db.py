"""Database engines and sessions, shared by the API, the workers and the migrations.

One engine per URL per process: gunicorn and Celery fork, so engines are created lazily in the
process that uses them and dropped in a child after fork (see `_after_fork_in_child`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
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


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - exercised through every SQLite test
    # WAL lets the API read while a worker writes; busy_timeout turns lock contention into a short
    # wait instead of "database is locked"; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine with the options each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"timeout": 10, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
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
