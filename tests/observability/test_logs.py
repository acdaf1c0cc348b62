"""Structured logs: the database sink, the System Operations API's /api/logs family and the platform API's
search, on SQLite and PostgreSQL."""

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import func, insert, select, text

from app.core.context import camera_id_var, job_id_var, request_id_var
from app.core.db import make_engine
from app.core.errors import InvalidInput
from app.models import Log
from app.observability import logs as log_service
from app.observability.log_sink import DatabaseLogHandler

PLATFORM = "/api/v1/platform/system/logs"


def _rows(db_url, *where):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(Log.__table__).where(*where).order_by(Log.id))]
    finally:
        engine.dispose()


def _seed(db_url, rows):
    base = {
        "camera_id": None,
        "request_id": None,
        "job_id": None,
        "user_id": None,
        "duration_ms": None,
        "extra": None,
        "source": "backend",
    }
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Log.__table__), [{**base, **r} for r in rows])
    finally:
        engine.dispose()


def _logger(handler):
    logger = logging.getLogger(f"test.sink.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


# --- the sink ----------------------------------------------------------------------------------------------
def test_sink_writes_context_and_extra_fields(db_url):
    handler = DatabaseLogHandler(db_url, component="detection_worker", flush_interval=0.05)
    logger = _logger(handler)
    tokens = [request_id_var.set("req-sink-1"), job_id_var.set("job-sink-1"), camera_id_var.set("front_door")]
    try:
        logger.info("detected %d objects", 3, extra={"duration_ms": 12.5, "objects": ["person", "car"]})
        try:
            raise ValueError("model server said no")
        except ValueError:
            logger.exception("inference failed")
    finally:
        for var, token in zip((request_id_var, job_id_var, camera_id_var), tokens):
            var.reset(token)
    logger.warning("no context here", extra={"component": "gpu_monitor"})
    assert handler.flush(timeout=10)
    rows = _rows(db_url, Log.component.in_(["detection_worker", "gpu_monitor"]))
    assert [r["message"] for r in rows] == ["detected 3 objects", "inference failed", "no context here"]
    first, second, third = rows
    assert (first["level"], first["request_id"], first["job_id"], first["camera_id"]) == (
        "INFO",
        "req-sink-1",
        "job-sink-1",
        "front_door",
    )
    assert first["duration_ms"] == 12.5 and first["source"] == "backend"
    assert first["extra"]["objects"] == ["person", "car"] and first["extra"]["logger"] == logger.name
    assert "ValueError: model server said no" in second["extra"]["exception"]
    assert third["component"] == "gpu_monitor" and third["request_id"] is None and third["job_id"] is None
    handler.close()


def _stop_pg(pg):
    import os

    pg._run("pg_ctl", "-D", os.path.join(pg.dir, "data"), "-m", "fast", "-w", "stop")


def _restart_pg(pg):
    import os

    pg._run(
        "pg_ctl",
        "-D",
        os.path.join(pg.dir, "data"),
        "-l",
        os.path.join(pg.dir, "log"),
        "-w",
        "-t",
        "60",
        "start",
        "-o",
        f"-p {pg.port} -h 127.0.0.1 -k {pg.dir} -c fsync=off",
    )


@pytest.mark.slow
def test_database_outage_neither_blocks_requests_nor_loses_more_than_the_buffer(tmp_path):
    from app import create_app
    from app.core.migrate import upgrade
    from app.core.settings import Settings
    from tests.servers import PostgresServer

    pg = PostgresServer().start()  # its own server: this test stops it
    try:
        url = pg.create_database("outage")
        upgrade(url)
        handler = DatabaseLogHandler(url, component="outage_test", capacity=500, flush_interval=0.1)
        logger = _logger(handler)
        logger.info("before the outage")
        assert handler.flush(timeout=10)
        _stop_pg(pg)

        started = time.perf_counter()
        for i in range(1000):
            logger.info("during the outage %d", i)
        emit_seconds = time.perf_counter() - started
        assert emit_seconds < 2.0, f"emit waited for the database: {emit_seconds:.2f}s for 1000 records"
        assert handler.dropped == 500  # the buffer keeps 500; the rest is counted, not silently lost

        # Requests keep being served while the database is down; the log routes say 503, not 500.
        settings = Settings.from_env(database_url=url, log_flush_interval=0.1)
        client = create_app(settings).test_client()
        t0 = time.perf_counter()
        assert client.get("/health").status_code == 200
        r = client.get("/api/logs")
        assert r.status_code == 503 and "unavailable" in r.get_json()["detail"]
        r = client.get(PLATFORM + "?query=x")
        assert r.status_code == 503 and r.get_json()["success"] is False
        assert client.get("/api/metrics").status_code == 200
        assert time.perf_counter() - t0 < 20

        _restart_pg(pg)
        from tests.servers import wait_for

        wait_for(lambda: handler.written >= 501, 60, interval=0.2, what="buffered logs written after the outage")
        engine = make_engine(url)
        with engine.connect() as conn:
            messages = [
                m for (m,) in conn.execute(text("SELECT message FROM logs WHERE component = 'outage_test' ORDER BY id"))
            ]
        engine.dispose()
        assert messages[0] == "before the outage"
        assert messages[1:] == [f"during the outage {i}" for i in range(500)]  # oldest kept, in order
        handler.close()
    finally:
        from app.core.settings import get_settings
        from app.observability.logging_setup import db_sink

        if db_sink() is not None:
            db_sink().retarget(get_settings().database_url)
        pg.cleanup()


def test_search_deadline_stops_a_runaway_query(session_factory, db_url):
    """The mechanism behind 'a catastrophic query cannot hang the server', on both backends."""
    slow = (
        "SELECT pg_sleep(5)"
        if db_url.startswith("postgresql")
        else "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
        "SELECT count(*) FROM n"
    )
    with session_factory() as session:
        started = time.perf_counter()
        with pytest.raises(InvalidInput) as exc:
            with log_service.bounded(session, 0.2):
                session.execute(text(slow)).all()
        assert exc.value.code == "search_timeout"
        assert time.perf_counter() - started < 3


# --- System Operations API: /api/logs -----------------------------------------------------------------------------
@pytest.fixture
def seeded(db_url):
    now = datetime.now(UTC)
    rows = [
        {
            "timestamp": now - timedelta(minutes=5),
            "level": "ERROR",
            "component": "detection_worker",
            "message": "Connection refused to YOLO26 service",
            "camera_id": "front_door",
            "request_id": "abc123",
            "extra": {"host": "ai:8001"},
        },
        {
            "timestamp": now - timedelta(minutes=4),
            "level": "INFO",
            "component": "detection_worker",
            "message": "Detected 2 objects",
            "camera_id": "front_door",
            "duration_ms": 41.5,
        },
        {
            "timestamp": now - timedelta(minutes=3),
            "level": "WARNING",
            "component": "analysis_worker",
            "message": "LLM slow: 2500 ms",
            "camera_id": "backyard",
            "user_id": "usr_xyz",
        },
        {"timestamp": now - timedelta(days=2), "level": "INFO", "component": "api", "message": "old news"},
        {
            "timestamp": now - timedelta(minutes=1),
            "level": "ERROR",
            "component": "Dashboard",
            "message": "Failed to load 100% of widgets_x",
            "source": "frontend",
        },
    ]
    _seed(db_url, rows)
    return now


def test_list_logs_filters_and_counts(obs_client, seeded):
    r = obs_client.get("/api/logs")
    body = r.get_json()
    assert r.status_code == 200 and body["count"] == 5 and len(body["logs"]) == 5
    assert body["logs"][0]["message"].startswith("Failed to load")  # newest first
    first = next(item for item in body["logs"] if item["request_id"] == "abc123")
    assert first == {
        **first,
        "level": "ERROR",
        "component": "detection_worker",
        "camera_id": "front_door",
        "extra": {"host": "ai:8001"},
        "source": "backend",
        "duration_ms": None,
    }
    assert isinstance(first["id"], int) and first["timestamp"].endswith("Z")

    def count(qs):
        r = obs_client.get("/api/logs?" + qs)
        assert r.status_code == 200, r.get_json()
        return r.get_json()["count"]

    assert count("level=error") == 2 and count("level=ERROR&component=detection_worker") == 1
    assert count("camera_id=front_door") == 2 and count("source=frontend") == 1
    assert count("search=yolo26 refused") == 1 and count("search=100%25") == 1 and count("search=widgets_x") == 1
    assert count("search=widgetsXx") == 0  # LIKE wildcards in the term are literal
    start = (seeded - timedelta(hours=1)).isoformat()
    assert count("start_date=" + start.replace("+", "%2B")) == 4
    assert count("end_date=" + (seeded - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")) == 1
    page = obs_client.get("/api/logs?limit=2&offset=1").get_json()
    assert page["count"] == 5 and len(page["logs"]) == 2 and (page["limit"], page["offset"]) == (2, 1)


@pytest.mark.parametrize(
    "qs", ["limit=0", "limit=1001", "offset=-1", "level=LOUD", "source=middle", "start_date=yesterday"]
)
def test_list_logs_rejects_bad_parameters(obs_client, qs):
    r = obs_client.get("/api/logs?" + qs)
    assert r.status_code == 400
    assert "detail" in r.get_json() and r.get_json()["errors"]


def test_log_stats_and_get_by_id(obs_client, seeded):
    stats = obs_client.get("/api/logs/stats").get_json()
    today = seeded.date()
    in_today = [d for d in (seeded - timedelta(minutes=m) for m in (5, 4, 3, 1)) if d.date() == today]
    assert stats["total_today"] == len(in_today)
    assert stats["by_component"].get("detection_worker", 0) <= 2
    if len(in_today) == 4:
        assert stats == {
            **stats,
            "errors_today": 2,
            "warnings_today": 1,
            "top_component": "detection_worker",
            "by_level": {"ERROR": 2, "INFO": 1, "WARNING": 1},
        }
    log_id = obs_client.get("/api/logs?search=YOLO26").get_json()["logs"][0]["id"]
    r = obs_client.get(f"/api/logs/{log_id}")
    assert r.status_code == 200 and r.get_json()["message"] == "Connection refused to YOLO26 service"
    r = obs_client.get("/api/logs/999999")
    assert r.status_code == 404 and "not found" in r.get_json()["detail"]
    r = obs_client.get("/api/logs/abc")
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "log_id"


def test_frontend_logs_need_credentials_and_are_stored(obs_client, api_headers, db_url):
    entry = {
        "level": "error",
        "message": "Failed to load component",
        "timestamp": "2024-01-21T12:00:00Z",
        "component": "Dashboard",
        "context": {"userId": "123", "action": "load"},
        "url": "/dashboard",
        "user_agent": "Mozilla/5.0",
    }
    assert obs_client.post("/api/logs/frontend", json=entry).status_code == 401
    r = obs_client.post("/api/logs/frontend", json=entry, headers={**api_headers, "X-Request-ID": "fe-req-1"})
    assert r.status_code == 201 and r.get_json() == {"success": True, "count": 1, "message": "Log entry recorded"}
    batch = {"entries": [{"level": "INFO", "message": f"m{i}", "component": "App"} for i in range(100)]}
    r = obs_client.post("/api/logs/frontend/batch", json=batch, headers=api_headers)
    assert r.status_code == 201 and r.get_json()["count"] == 100
    rows = _rows(db_url, Log.source == "frontend")
    assert len(rows) == 101
    first = rows[0]
    assert (first["level"], first["component"], first["user_id"], first["request_id"]) == (
        "ERROR",
        "Dashboard",
        "123",
        "fe-req-1",
    )
    assert first["timestamp"].replace(tzinfo=UTC) == datetime(2024, 1, 21, 12, tzinfo=UTC)
    assert first["extra"] == {
        "context": {"userId": "123", "action": "load"},
        "url": "/dashboard",
        "user_agent": "Mozilla/5.0",
    }


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"entries": []}, "Batch must contain 1-100 entries"),
        ({"entries": [{"level": "INFO", "message": "x"}] * 101}, "Batch must contain 1-100 entries"),
        ({}, "Batch must contain 1-100 entries"),
        ({"entries": [{"level": "LOUD", "message": "x"}]}, None),
    ],
)
def test_frontend_batch_violations_use_the_documented_shape(obs_client, api_headers, payload, message):
    r = obs_client.post("/api/logs/frontend/batch", json=payload, headers=api_headers)
    assert r.status_code == 422
    body = r.get_json()
    assert body["success"] is False and body["count"] == 0 and body["errors"]
    assert all(isinstance(e, str) for e in body["errors"])
    if message:
        assert body["message"] == message and any(e.startswith("entries") for e in body["errors"])
    else:
        assert "entries.0.level" in body["errors"][0]
    assert body["detail"] == body["message"] and body["request_id"]


# --- platform API: search -------------------------------------------------------------------------------------
def test_platform_search_text_regex_and_filters(obs_client, seeded):
    def search(qs):
        r = obs_client.get(f"{PLATFORM}?{qs}")
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert body["success"] is True
        return body["data"]

    data = search("query=refused yolo26")
    assert data["pagination"] == {"total": 1, "limit": 50, "offset": 0}
    item = data["logs"][0]
    assert item["id"].startswith("log_") and item["level"] == "error" and item["service"] == "detection_worker"
    assert item["request_id"] == "abc123" and item["metadata"]["host"] == "ai:8001"
    assert item["metadata"]["camera_id"] == "front_door"
    assert search("query=" + quote("/YOLO[0-9]+ serv/"))["pagination"]["total"] == 1
    assert search("query=" + quote("/yolo[0-9]+/"))["pagination"]["total"] == 0  # case-sensitive by default
    assert search("query=" + quote("/yolo[0-9]+/i"))["pagination"]["total"] == 1
    assert search("query=^(Detected|LLM)&mode=regex")["pagination"]["total"] == 2
    assert search("query=/not a regex in text mode/&mode=text")["pagination"]["total"] == 0
    assert search("level=warning")["logs"][0]["user_id"] == "usr_xyz"
    assert search("service=analysis_worker&user_id=usr_xyz")["pagination"]["total"] == 1
    assert search("request_id=abc123")["pagination"]["total"] == 1
    assert search("limit=2&offset=2")["pagination"] == {"total": 5, "limit": 2, "offset": 2}
    r = obs_client.get(f"{PLATFORM}?limit=101")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "validation_error"
    later, earlier = (
        seeded.isoformat().replace("+", "%2B"),
        (seeded - timedelta(days=1)).isoformat().replace("+", "%2B"),
    )
    r = obs_client.get(f"{PLATFORM}?start_time={later}&end_time={earlier}")
    assert r.status_code == 400


@pytest.mark.parametrize("pattern", ["(", "(a)\\1", "(?=lookahead)", "((a{100}){100}){100}", "x" * 1001])
def test_bad_or_hostile_regex_is_400_quickly(obs_client, seeded, pattern):
    started = time.perf_counter()
    r = obs_client.get(f"{PLATFORM}?mode=regex&query={quote(pattern)}")
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"]["code"] in ("invalid_regex", "validation_error")
    assert time.perf_counter() - started < 2


def test_catastrophic_backtracking_pattern_cannot_hang(obs_client, db_url):
    """`(a+)+$` takes exponential time in a backtracking engine on 'aaaa...!'; here it is linear."""
    now = datetime.now(UTC)
    _seed(db_url, [{"timestamp": now, "level": "INFO", "component": "api", "message": "a" * 40 + "!"}] * 2000)
    for pattern in ("(a+)+$", "^(a|aa)+$", "(.*a){25}$"):
        started = time.perf_counter()
        r = obs_client.get(f"{PLATFORM}?mode=regex&query={quote(pattern)}")
        elapsed = time.perf_counter() - started
        assert r.status_code in (200, 400), r.get_json()
        assert elapsed < 8, f"{pattern} took {elapsed:.1f}s"
        if r.status_code == 200:
            assert r.get_json()["data"]["pagination"]["total"] == 0  # every message ends in "!"
        else:
            assert r.get_json()["error"]["code"] == "search_timeout"


def test_sqlite_regexp_is_re2_not_python_re(session_factory, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL uses its own ~ operator")
    with session_factory() as session:
        conn = session.connection()
        log_service.prepare_connection(conn)
        started = time.perf_counter()
        hit = conn.execute(text("SELECT :v REGEXP :p"), {"v": "a" * 5000 + "!", "p": "(a+)+$"}).scalar_one()
        assert hit == 0 and time.perf_counter() - started < 1
        assert conn.execute(select(func.count()).select_from(Log)).scalar_one() == 0


def test_service_host_threads_log_under_their_service_name(obs_settings, db_url, wait):
    import threading

    from app.observability.logging_setup import configure_logging, db_sink
    from workers.host.service import Service
    from workers.host.supervisor import ServiceHost

    class Chatty(Service):
        name = "chatty_monitor"

        def run(self, stop: threading.Event) -> None:
            logging.getLogger("workers.chatty").warning("GPU temperature %d C", 91)
            stop.wait()

    configure_logging(obs_settings.log_level, "watcher", obs_settings)
    host = ServiceHost([Chatty()], obs_settings)
    host.start()
    try:

        def logged():
            db_sink().flush(timeout=5)
            return _rows(db_url, Log.message == "GPU temperature 91 C")

        row = wait(logged, 20, interval=0.2, what="the service's log line")[0]
        assert row["component"] == "chatty_monitor" and row["level"] == "WARNING"
        assert row["extra"]["logger"] == "workers.chatty"
    finally:
        host.stop()
        from app.core.settings import get_settings

        db_sink().retarget(get_settings().database_url)
