"""Enqueue through the real API (gunicorn as the Procfile starts it) on a Redis database of the module's own:
POST /jobs/batch (every family, per-item results, idempotency per item, all-or-nothing validation,
its size limits) and the pipelined single POST /jobs (registry record, idempotency, audit entry
without SQL on the request), with a real analysis worker running what was enqueued."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from sqlalchemy import select

from app.jobs.registry import AUDIT_KEY, JobRegistry
from app.models import AuditLog
from tests.api.stack import live_stack
from tests.servers import wait_for

P = "/api/v1/platform/system"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(pg, redis_databases, tmp_path_factory):
    with live_stack(pg, redis_databases, tmp_path_factory.mktemp("batch"), ("analysis_worker",)) as s:
        yield s


@pytest.fixture(scope="module")
def redis(stack):
    return stack.redis.client(decode_responses=True)


@pytest.fixture(scope="module")
def registry(redis):
    return JobRegistry(redis)


@pytest.fixture(scope="module")
def image(stack):
    """An image inside the stack's camera root, for detection jobs (no detection worker runs here)."""
    camera = stack.settings().camera_root / "porch"
    camera.mkdir(parents=True, exist_ok=True)
    path = camera / "frame.jpg"
    path.write_bytes(b"\xff\xd8\xff\xd9")
    return path


def _waiting(redis, *queues: str) -> int:
    return sum(redis.llen(q) for q in queues)


def _batch(stack, jobs, **kwargs):
    return stack.send("POST", f"{P}/jobs/batch", json={"jobs": jobs}, **kwargs)


def _every_family(image):
    return [
        {"task": "detection", "payload": {"camera_id": "porch", "path": "porch/frame.jpg"}},
        {"task": "detection", "payload": {"camera_id": "porch", "path": str(image)}, "priority": "high"},
        {"task": "notification", "payload": {"channel": "email", "recipients": ["a@b.example"], "message": "hi"}},
        {"task": "notification", "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/h", "message": "x"}},
        {"task": "alerts", "payload": {"event_id": 1}, "priority": "high"},
        {"task": "cleanup", "payload": {"dry_run": True}},
        {"task": "cleanup"},
        {"task": "analysis", "payload": {"batch_id": f"b-{uuid.uuid4().hex[:8]}"}},
    ]


def test_a_batch_of_every_family_is_queued_with_its_registry_records(stack, redis, registry, image):
    jobs = _every_family(image)
    before = {q: redis.llen(q) for q in ("detection", "detection:high", "notification", "notification:high", "cleanup")}
    r = _batch(stack, jobs)
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert (data["created"], data["existing"], data["conflicts"]) == (len(jobs), 0, 0)
    queues = [i["queue"] for i in data["jobs"]]
    assert queues == [
        "detection",
        "detection:high",
        "notification",
        "notification",
        "notification:high",
        "cleanup",
        "cleanup",
        "analysis",
    ]
    assert [i["index"] for i in data["jobs"]] == list(range(len(jobs)))
    assert all(i["status"] == "queued" and i["created"] and i["error"] is None for i in data["jobs"])
    assert len({i["job_id"] for i in data["jobs"]}) == len(jobs)
    # 202 only once the broker holds every message
    after = {q: redis.llen(q) for q in before}
    assert {q: after[q] - before[q] for q in before} == {
        "detection": 1,
        "detection:high": 1,
        "notification": 2,
        "notification:high": 1,
        "cleanup": 2,
    }
    records = {i["job_id"]: registry.get(i["job_id"]) for i in data["jobs"]}
    assert all(rec is not None for rec in records.values())
    first = records[data["jobs"][0]["job_id"]]
    assert first["state"] == "waiting" and first["task"] == "vigil.detection.detect"
    assert first["kwargs"]["path"] == str(image.resolve()), "the path is resolved as POST /jobs resolves it"
    assert first["request_id"] == r.headers["X-Request-ID"]
    assert records[data["jobs"][6]["job_id"]]["kwargs"] == {"dry_run": False}, "defaults filled in as POST /jobs"
    # the analysis job runs on the real worker, once
    analysis = data["jobs"][7]["job_id"]
    done = wait_for(
        lambda: (registry.get(analysis) or {}).get("state") in ("completed", "failed") and registry.get(analysis),
        30,
        what="the analysis job to run",
    )
    assert done["attempts"] == 1 and done["worker"] == stack.workers["analysis_worker"].node


def test_idempotency_keys_are_honoured_per_job(stack, redis, registry):
    key, other = f"k-{uuid.uuid4().hex}", f"k-{uuid.uuid4().hex}"
    jobs = [
        {"task": "cleanup", "payload": {"dry_run": True}, "idempotency_key": key},
        {"task": "cleanup", "payload": {"dry_run": True}, "idempotency_key": key},  # same job, same batch
        {"task": "cleanup", "payload": {"dry_run": False}, "idempotency_key": key},  # another payload
        {"task": "cleanup", "payload": {"dry_run": True}, "idempotency_key": other},
        {"task": "cleanup", "payload": {"dry_run": True}},
    ]
    waiting = redis.llen("cleanup")
    r = _batch(stack, jobs)
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    items = data["jobs"]
    assert (data["created"], data["existing"], data["conflicts"]) == (3, 1, 1)
    assert items[0]["created"] and not items[1]["created"] and items[1]["job_id"] == items[0]["job_id"]
    assert items[1]["status"] == "waiting"
    assert items[2]["status"] == "conflict" and items[2]["job_id"] == items[0]["job_id"]
    assert items[2]["error"]["code"] == "idempotency_conflict" and items[0]["job_id"] in items[2]["error"]["message"]
    assert items[3]["created"] and items[4]["created"]
    assert redis.llen("cleanup") == waiting + 3
    assert registry.get(items[0]["job_id"])["idempotency_key"] == key

    # The same batch again: nothing new but the job without a key; the conflict stays a conflict.
    again = _batch(stack, jobs)
    assert again.status_code == 202
    second = again.json()["data"]
    assert (second["created"], second["existing"], second["conflicts"]) == (1, 3, 1)
    assert [i["job_id"] for i in second["jobs"][:4]] == [i["job_id"] for i in items[:4]]
    assert redis.llen("cleanup") == waiting + 4

    # Every job already there: 200. The single endpoint sees the batch's keys too.
    replay = _batch(stack, jobs[:2])
    assert replay.status_code == 200 and replay.json()["data"]["created"] == 0
    single = stack.send("POST", f"{P}/jobs", json=jobs[0])
    assert single.status_code == 200 and single.json()["data"]["job_id"] == items[0]["job_id"]
    conflict = stack.send("POST", f"{P}/jobs", json=jobs[2])
    assert conflict.status_code == 409 and conflict.json()["job_id"] == items[0]["job_id"]


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"task": "cleanup", "payload": {"dry_run": "maybe"}}, "jobs.2.payload.dry_run"),
        ({"task": "mining", "payload": {}}, "jobs.2.task"),
        ({"task": "detection", "payload": {"camera_id": "porch", "path": "porch/missing.jpg"}}, "jobs.2.payload.path"),
        ({"task": "detection", "payload": {"camera_id": "porch", "path": "/etc/hosts"}}, "jobs.2.payload.path"),
    ],
)
def test_one_invalid_job_refuses_the_batch_naming_it(stack, redis, image, bad, field):
    jobs = [{"task": "cleanup", "payload": {}}, {"task": "cleanup", "payload": {}}, bad]
    waiting = _waiting(redis, "cleanup", "detection")
    r = _batch(stack, jobs)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]], error
    assert _waiting(redis, "cleanup", "detection") == waiting, "nothing is enqueued"


def test_a_batch_of_one_names_its_index_too(stack):
    r = _batch(stack, [{"task": "detection", "payload": {"camera_id": "porch", "path": "0"}}])
    assert r.status_code == 400
    assert [d["field"] for d in r.json()["error"]["details"]] == ["jobs.0.payload.path"]


def test_size_limits(stack, redis):
    waiting = redis.llen("cleanup")
    assert _batch(stack, []).status_code == 400
    too_many = _batch(stack, [{"task": "cleanup"}] * 1001)
    assert too_many.status_code == 400
    assert [d["field"] for d in too_many.json()["error"]["details"]] == ["jobs"]
    assert redis.llen("cleanup") == waiting

    t0 = time.monotonic()
    full = _batch(stack, [{"task": "cleanup", "payload": {"dry_run": True}}] * 1000, timeout=60)
    elapsed = time.monotonic() - t0
    assert full.status_code == 202 and full.json()["data"]["created"] == 1000
    assert redis.llen("cleanup") == waiting + 1000
    print(f"1000 jobs in one request: {elapsed:.2f}s")

    huge = json.dumps({"jobs": [{"task": "cleanup", "payload": {}}], "pad": "x" * (11 * 1024 * 1024)})
    r = stack.send("POST", f"{P}/jobs/batch", data=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_single_enqueue_is_recorded_and_audited_without_sql_on_the_request(stack, redis, registry):
    rid = f"req-{uuid.uuid4().hex}"
    body = {"task": "analysis", "payload": {"batch_id": f"single-{uuid.uuid4().hex[:8]}"}}
    r = stack.send("POST", f"{P}/jobs", json=body, headers={"X-Request-ID": rid})
    assert r.status_code == 202, r.text
    job_id = r.json()["data"]["job_id"]
    record = registry.get(job_id)
    assert record is not None and record["request_id"] == rid and record["queue"] == "analysis"
    # The audit entry waits in Redis, written with the job; the registry archiver moves it to SQL.
    entries = [json.loads(e) for e in redis.lrange(AUDIT_KEY, 0, -1)]
    mine = [e for e in entries if e["resource_id"] == job_id]
    assert len(mine) == 1 and mine[0]["action"] == "job_enqueued" and mine[0]["request_id"] == rid

    from sqlalchemy.orm import sessionmaker

    from app.core.db import make_engine

    engine = make_engine(stack.database_url)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        registry.flush_archive(sessions)
        assert redis.llen(AUDIT_KEY) == 0
        with sessions() as session:
            row = session.execute(select(AuditLog).where(AuditLog.resource_id == job_id)).scalar_one()
            batch = session.execute(select(AuditLog).where(AuditLog.action == "jobs_enqueued")).scalars().all()
    finally:
        engine.dispose()
    assert row.action == "job_enqueued" and row.actor == "api_key:api-key" and row.request_id == rid
    assert row.details == {"task": "analysis", "queue": "analysis"}
    assert batch and all(b.resource_type == "job_batch" and b.details["created"] >= 1 for b in batch)

    # idempotency on the single path: same key, same job; another payload, 409
    key = f"k-{uuid.uuid4().hex}"
    first = stack.send("POST", f"{P}/jobs", json={**body, "idempotency_key": key}).json()["data"]
    again = stack.send("POST", f"{P}/jobs", json={**body, "idempotency_key": key})
    assert again.status_code == 200 and again.json()["data"]["job_id"] == first["job_id"]
    other = stack.send("POST", f"{P}/jobs", json={**body, "payload": {"batch_id": "other"}, "idempotency_key": key})
    assert other.status_code == 409 and other.json()["job_id"] == first["job_id"]


def test_single_enqueues_derived_from_a_kept_template_are_run_by_the_worker(stack, redis, registry):
    """After its first `POST /jobs` of a kind, each API process derives the message from a template
    (app/jobs/publish.py): these jobs, with and without keys and each with its own request id, must
    be what the real analysis worker takes and runs, once each (an analysis of an unknown batch ends
    failed: what matters here is that the message was the worker's to run), and each record must
    name its own request."""
    sent = {}
    for i in range(12):  # 2 API processes: each sees several requests of each kind
        rid = f"req-{uuid.uuid4().hex}"
        body = {"task": "analysis", "payload": {"batch_id": f"kept-{i}-{uuid.uuid4().hex[:6]}"}}
        if i % 2:
            body["idempotency_key"] = f"kept-{uuid.uuid4().hex}"
        r = stack.send("POST", f"{P}/jobs", json=body, headers={"X-Request-ID": rid})
        assert r.status_code == 202, r.text
        sent[r.json()["data"]["job_id"]] = (rid, body)
    done = wait_for(
        lambda: all((registry.get(j) or {}).get("state") in ("completed", "failed") for j in sent) and sent,
        timeout=60,
        what="the worker completing every single enqueue",
    )
    for job_id, (rid, body) in done.items():
        record = registry.get(job_id)
        assert record["request_id"] == rid and record["attempts"] == 1, record
        assert record["worker"] == stack.workers["analysis_worker"].node, record
        assert record["kwargs"] == body["payload"], record
        assert record.get("idempotency_key") == body.get("idempotency_key"), record


def test_the_batch_endpoint_is_in_the_document(stack):
    doc = stack.get("/api/openapi.json").json()
    op = doc["paths"]["/api/v1/platform/system/jobs/batch"]["post"]
    assert {"200", "202", "400", "413"} <= set(op["responses"])
    body = op["requestBody"]["content"]["application/json"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[-1]
    jobs = doc["components"]["schemas"][ref]["properties"]["jobs"]
    assert jobs["maxItems"] == 1000 and jobs["minItems"] == 1
