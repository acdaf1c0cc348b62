"""Log exports through a real cleanup worker, and a request id that finds the log lines of the
request and of the job it caused; on SQLite and PostgreSQL."""

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from app.core.db import make_engine
from app.models import Log
from tests.obs_servers import RssSampler

PLATFORM = "/api/v1/platform/system/logs"


def _bulk_seed(db_url, n, component="seed", chunk=10_000):
    """n rows with awkward content: commas, quotes, newlines and non-ASCII in messages."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    engine = make_engine(db_url)
    try:
        for base in range(0, n, chunk):
            rows = [
                {
                    "timestamp": start + timedelta(seconds=i),
                    "level": ("INFO", "WARNING", "ERROR")[i % 3],
                    "component": component,
                    "message": f'row {i}, "quoted"\nsecond line é',
                    "camera_id": f"cam{i % 7}",
                    "request_id": f"req-{i}",
                    "job_id": None,
                    "user_id": None,
                    "duration_ms": float(i % 100),
                    "extra": {"i": i},
                    "source": "backend",
                }
                for i in range(base, min(base + chunk, n))
            ]
            with engine.begin() as conn:
                conn.execute(insert(Log.__table__), rows)
    finally:
        engine.dispose()


def _export(client, wait, qs, headers=None, timeout=120):
    r = client.get(f"{PLATFORM}/export?{qs}", headers=headers or {})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    assert data["status"] == "processing" and data["download_url"] is None and data["export_id"]

    def done():
        s = client.get(f"{PLATFORM}/export/{data['export_id']}").get_json()["data"]
        assert s["status"] != "failed", s
        return s if s["status"] == "completed" else None

    return wait(done, timeout, interval=0.1, what=f"export {data['export_id']}")


def _download(client, status):
    assert status["download_url"].endswith(f"/logs/export/{status['export_id']}/download")
    r = client.get(status["download_url"])
    assert r.status_code == 200
    return r


@pytest.mark.slow
def test_request_id_finds_its_log_lines_and_the_job_logs_it_caused(obs_client, cleanup_worker, db_url, wait):
    _bulk_seed(db_url, 30, component="e2e_seed")
    rid = f"req-e2e-{uuid.uuid4().hex[:12]}"
    status = _export(obs_client, wait, "format=json&service=e2e_seed", headers={"X-Request-ID": rid})
    assert status["row_count"] == 30
    job_id = None

    def lines():
        body = obs_client.get(f"{PLATFORM}?request_id={rid}&limit=100").get_json()["data"]
        services = {item["service"] for item in body["logs"]}
        worker = [item for item in body["logs"] if item["service"] == "cleanup_service"]
        if "api" in services and any("completed: 30 rows" in item["message"] for item in worker):
            return body["logs"]

    found = wait(lines, 30, interval=0.2, what="log lines of the request and of its job")
    api_lines = [item for item in found if item["service"] == "api"]
    worker_lines = [item for item in found if item["service"] == "cleanup_service"]
    assert any("queued" in item["message"] for item in api_lines)
    assert all(item["request_id"] == rid for item in found)
    job_ids = {item["metadata"].get("job_id") for item in worker_lines}
    assert len(job_ids) == 1 and None not in job_ids  # every worker line names the job
    job_id = job_ids.pop()
    assert any("completed: 30 rows" in item["message"] for item in worker_lines)
    # Celery's per-job "received"/"succeeded" lines stay out of the database (the registry has
    # those facts, with the timings): the job's record says when it ran, where and for whom.
    assert not any("succeeded in" in item["message"] for item in worker_lines)
    from app.jobs.registry import get_registry

    job = get_registry().get(job_id)
    assert job["request_id"] == rid and job["queue"] == "cleanup" and job["started_at"] <= job["finished_at"]
    # The System Operations API listing sees the same lines (filter by component; each carries the request id).
    listed = obs_client.get("/api/logs?component=cleanup_service&limit=1000").get_json()["logs"]
    assert any(item["request_id"] == rid and item["job_id"] == job_id for item in listed)


@pytest.mark.slow
def test_export_of_100k_rows_streams_with_bounded_memory(obs_client, cleanup_worker, db_url, wait):
    n = 100_000
    _bulk_seed(db_url, n)
    _export(obs_client, wait, "format=csv&service=nothing-matches")  # warm the pool child up
    child = cleanup_worker.pool_pids()
    assert len(child) == 1
    sampler = RssSampler(child[0])
    baseline = sampler.rss()
    results = {}
    with sampler:
        for fmt in ("csv", "json", "txt"):
            results[fmt] = _export(obs_client, wait, f"format={fmt}&service=seed")
    growth_mb = (sampler.peak - baseline) / 2**20
    print(
        f"export worker RSS: baseline {baseline / 2**20:.1f} MiB, peak {sampler.peak / 2**20:.1f} MiB, "
        f"growth {growth_mb:.1f} MiB over {sampler.samples} samples"
    )
    assert sampler.samples > 20
    # Holding the rows would cost far more: the CSV file alone is several times this bound.
    assert growth_mb < 40, f"export worker grew {growth_mb:.1f} MiB while exporting {n} rows"

    for fmt, status in results.items():
        assert status["row_count"] == n and status["size_bytes"] > 0
        r = _download(obs_client, status)
        expected = {"csv": "text/csv", "json": "application/json", "txt": "text/plain"}[fmt]
        assert r.mimetype == expected
        assert "attachment" in r.headers["Content-Disposition"]
        raw = r.get_data(as_text=True)
        assert len(raw.encode()) == status["size_bytes"]
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(raw)))
            assert len(rows) == n
            assert rows[0]["message"] == 'row 0, "quoted"\nsecond line é' and rows[0]["service"] == "seed"
            assert json.loads(rows[-1]["metadata"])["i"] == n - 1
        elif fmt == "json":
            items = json.loads(raw)
            assert len(items) == n and items[1]["id"].startswith("log_") and items[1]["request_id"] == "req-1"
            assert items[2]["level"] == "error" and items[2]["metadata"]["camera_id"] == "cam2"
        else:
            lines = raw.splitlines()
            assert len(lines) == n
            assert lines[0].startswith("2026-01-01T00:00:00Z INFO") and "req=req-0" in lines[0]
            assert lines[0].endswith('row 0, "quoted"\\nsecond line é')


def test_export_status_download_errors_and_validation(obs_client, db_url, wait):
    r = obs_client.get(f"{PLATFORM}/export/export_logs_nope")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "export_not_found"
    r = obs_client.get(f"{PLATFORM}/export/bad id!")
    assert r.status_code == 400
    r = obs_client.get(f"{PLATFORM}/export?format=xml")
    assert r.status_code == 400 and r.get_json()["error"]["details"][0]["field"] == "format"
    r = obs_client.get(f"{PLATFORM}/export?mode=regex&query=(")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_regex"
    # No worker consumes it here: it stays processing, and its download is a 409, not a 500.
    r = obs_client.get(f"{PLATFORM}/export?format=txt&level=error")
    export_id = r.get_json()["data"]["export_id"]
    r = obs_client.get(f"{PLATFORM}/export/{export_id}/download")
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "export_not_ready"
    status = obs_client.get(f"{PLATFORM}/export/{export_id}").get_json()["data"]
    assert status["filters"] == {"level": "ERROR"} and status["format"] == "txt"
    from app.jobs.registry import get_registry

    get_registry().forget(_job_of(db_url, export_id))
    _drain_cleanup_queue()


def _job_of(db_url, export_id):
    from sqlalchemy import select

    from app.models import LogExport

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(LogExport.job_id).where(LogExport.id == export_id)).scalar_one()
    finally:
        engine.dispose()


def _drain_cleanup_queue():
    """Remove the message this test queued for nobody, so later tests start with an empty queue."""
    from app.core.redis_client import get_broker_redis

    broker = get_broker_redis()
    for key in [b"cleanup"] + [b"cleanup\x06\x16" + str(p).encode() for p in (3, 6, 9)]:
        for raw in broker.lrange(key, 0, -1):
            if b"vigil.cleanup.export_logs" in raw:
                broker.lrem(key, 0, raw)


def test_expired_exports_are_purged_and_answer_410(obs_client, obs_settings):
    from app.core.db import session_scope
    from app.models import LogExport
    from app.observability import exports

    old = datetime.now(UTC) - timedelta(hours=obs_settings.export_retention_hours + 1)
    obs_settings.export_dir.mkdir(parents=True, exist_ok=True)
    for export_id, finished in (("export_logs_old", old), ("export_logs_new", datetime.now(UTC))):
        (obs_settings.export_dir / f"{export_id}.csv").write_text("id\n")
        with session_scope(obs_settings) as s:
            s.add(
                LogExport(
                    id=export_id,
                    status="completed",
                    format="csv",
                    filters={},
                    row_count=0,
                    size_bytes=3,
                    file_name=f"{export_id}.csv",
                    finished_at=finished,
                )
            )
    assert obs_client.get(f"{PLATFORM}/export/export_logs_old/download").status_code == 200
    assert exports.purge_expired(obs_settings) == 1
    assert not (obs_settings.export_dir / "export_logs_old.csv").exists()
    assert (obs_settings.export_dir / "export_logs_new.csv").exists()
    r = obs_client.get(f"{PLATFORM}/export/export_logs_old/download")
    assert r.status_code == 410 and r.get_json()["error"]["code"] == "export_expired"
    status = obs_client.get(f"{PLATFORM}/export/export_logs_old").get_json()["data"]
    assert status["status"] == "expired" and status["download_url"] is None
