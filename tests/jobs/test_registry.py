"""The job registry against a real Redis (and SQL for its archive)."""

import time
import uuid

import pytest

from app.jobs.archive import job_from_sql
from app.jobs.registry import JobRegistry


@pytest.fixture
def registry(redis_client):
    return JobRegistry(redis_client)


@pytest.fixture
def queue():
    return f"tq-{uuid.uuid4().hex[:8]}"


def _id():
    return uuid.uuid4().hex


def test_lifecycle_waiting_active_completed(registry, queue):
    jid = _id()
    registry.record_published(
        jid, task="vigil.system.canary", queue=queue, args=[1], kwargs={"x": 2}, request_id="req_a"
    )
    job = registry.get(jid)
    assert job["state"] == "waiting" and job["attempts"] == 0 and job["args"] == [1] and job["kwargs"] == {"x": 2}
    assert registry.count(queue, "waiting") == 1
    registry.record_started(jid, worker="w@h", task="vigil.system.canary", queue=queue)
    job = registry.get(jid)
    assert job["state"] == "active" and job["attempts"] == 1 and job["worker"] == "w@h"
    assert (registry.count(queue, "waiting"), registry.count(queue, "active")) == (0, 1)
    registry.record_succeeded(jid, {"ok": True})
    job = registry.get(jid)
    assert job["state"] == "completed" and job["result"] == {"ok": True}
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert (registry.count(queue, "active"), registry.count(queue, "completed")) == (0, 1)
    assert registry.count_since(queue, "completed", time.time() - 3600) == 1


def test_failure_keeps_error_and_traceback(registry, queue):
    jid = _id()
    registry.record_published(jid, task="t", queue=queue)
    registry.record_started(jid, worker="w@h")
    registry.record_failed(jid, "ValueError: bad", "Traceback (most recent call last):\n ...ValueError: bad")
    job = registry.get(jid)
    assert job["state"] == "failed" and job["error"] == "ValueError: bad" and "Traceback" in job["traceback"]


def test_retry_republish_and_attempts(registry, queue):
    jid = _id()
    registry.record_published(jid, task="t", queue=queue, args=[1])
    registry.record_started(jid, worker="w@h")
    registry.record_retry(jid, "ConnectionError")
    registry.record_published(jid, task="t", queue=queue, args=[1])  # Celery's retry re-publishes
    assert registry.get(jid)["state"] == "waiting"
    registry.record_started(jid, worker="w2@h")
    job = registry.get(jid)
    assert job["state"] == "active" and job["attempts"] == 2 and "ConnectionError" in job["error"]


def test_manual_retry_resets_attempts(registry, queue):
    jid = _id()
    registry.record_published(jid, task="t", queue=queue)
    registry.record_started(jid, worker="w@h")
    registry.record_failed(jid, "E", "tb")
    registry.record_published(jid, task="t", queue=queue, reset_attempts=True)
    job = registry.get(jid)
    assert job["state"] == "waiting" and job["attempts"] == 0 and job["error"] is None
    assert registry.count(queue, "failed") == 0 and registry.count(queue, "waiting") == 1


def test_revoke_applies_only_to_unfinished_jobs(registry, queue):
    done, waiting = _id(), _id()
    for jid in (done, waiting):
        registry.record_published(jid, task="t", queue=queue)
    registry.record_started(done, worker="w")
    registry.record_succeeded(done, None)
    assert registry.record_revoked(done, "revoked") is None
    assert registry.get(done)["state"] == "completed"
    assert registry.record_revoked(waiting, "revoked") == "revoked"
    assert registry.get(waiting)["state"] == "revoked"


def test_worker_side_start_of_unknown_job_creates_record(registry, queue):
    jid = _id()
    registry.record_started(jid, worker="w", task="vigil.x.y", queue=queue, args=[], kwargs={})
    job = registry.get(jid)
    assert job["state"] == "active" and job["task"] == "vigil.x.y" and job["created_at"]


def test_a_deleted_job_stays_deleted_when_its_worker_reports_late(registry, queue):
    """DELETE while it ran: the worker's start, written with its outcome, must not bring the record back."""
    jid = _id()
    registry.record_published(jid, task="vigil.system.canary", queue=queue)
    assert registry.forget(jid)
    registry.apply_many(jid, [("start", registry.start_fields("w@h")), ("success", registry.success_fields(1))])
    assert registry.get(jid) is None and registry.count(queue, "completed") == 0
    other = _id()  # a job nobody deleted is still recorded from its worker's side (the test above)
    registry.record_started(other, worker="w@h", task="vigil.system.canary", queue=queue)
    assert registry.get(other)["state"] == "active"


@pytest.mark.parametrize("total", [0, 1, 49, 50, 51, 120])
def test_pagination_totals_are_exact(registry, queue, total):
    ids = []
    for _ in range(total):
        jid = _id()
        ids.append(jid)
        registry.record_published(jid, task="t", queue=queue)
    seen = []
    for offset in range(0, total + 50, 50):
        count, page = registry.list(queue, "waiting", offset=offset, limit=50, newest_first=False)
        assert count == total
        seen.extend(j["id"] for j in page)
    assert seen == ids  # oldest first, every job exactly once


def test_archive_flush_and_trim(queue, session_factory, redis_db):
    # A Redis database of its own: the session's workers flush the shared archive list themselves.
    client = redis_db.client(decode_responses=True)
    registry = JobRegistry(client)
    jid = _id()
    registry.record_published(jid, task="t", queue=queue)
    registry.record_started(jid, worker="w")
    registry.record_succeeded(jid, {"n": 1})
    assert registry.archive_backlog() == 1
    assert registry.flush_archive(session_factory) == 1
    assert registry.archive_backlog() == 0
    with session_factory() as s:
        assert job_from_sql(s, jid)["state"] == "completed"
    assert registry.trim(queue, "completed", time.time() + 1, session_factory) == 1
    assert registry.get(jid) is None and registry.count(queue, "completed") == 0
    with session_factory() as s:
        assert job_from_sql(s, jid)["result"] == {"n": 1}  # history survives the trim


def test_registry_survives_redis_restart(registry, queue, redis_server, redis_client):
    jid = _id()
    registry.record_published(jid, task="t", queue=queue, args=["keep"])
    redis_server.restart()
    job = registry.get(jid)
    assert job is not None and job["state"] == "waiting" and job["args"] == ["keep"]
