"""A careless or hostile client against the running API (gunicorn as the Procfile starts it, real
workers): every bad input is a clear 4xx in its family's envelope, nothing answers 5xx, and nothing
is written outside the stack's `var/` (camera root and exports included), its database and Redis.

The stack's processes get a HOME and TMPDIR of their own, outside `var/`, which must stay empty;
the files the traversal attempts aim at must not exist afterwards.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.api.stack import live_stack
from tests.servers import wait_for

P = "/api/v1/platform/system"
SYSTEM_ERROR = {"detail"}


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """Where nothing may be written: the processes' HOME and TMPDIR, and the traversal targets."""
    root = tmp_path_factory.mktemp("outside")
    for name in ("home", "tmp", "targets"):
        (root / name).mkdir()
    (root / "targets" / "secret.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    return root


@pytest.fixture(scope="module")
def stack(pg, redis_databases, tmp_path_factory, outside):
    with live_stack(
        pg,
        redis_databases,
        tmp_path_factory.mktemp("hostile"),
        ("detection_worker", "analysis_worker", "cleanup_service"),
        HOME=str(outside / "home"),
        TMPDIR=str(outside / "tmp"),
        VIGIL_CLEANUP_WAIT_SECONDS="5",
    ) as s:
        yield s


def _platform_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["success"] is False and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def _system_error(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert SYSTEM_ERROR <= set(body) and body["detail"], body
    return body


def _raw(stack, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (requests would refuse or fix them); the status, headers and body."""
    with socket.create_connection(("127.0.0.1", stack.api.port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


# --- bodies ----------------------------------------------------------------------------------------------------
def test_malformed_json_is_400_in_both_families(stack):
    bad = b'{"task": "cleanup", '
    for path, method in ((f"{P}/jobs", "POST"), ("/api/system/config", "PATCH")):
        r = stack.send(method, path, data=bad, headers={"Content-Type": "application/json"})
        if path.startswith(P):
            _platform_error(r, 400, "invalid_json")
        else:
            assert "not valid JSON" in _system_error(r, 400)["detail"]


def test_a_body_that_is_not_an_object(stack):
    _platform_error(stack.send("POST", f"{P}/jobs", json=["cleanup"]), 400, "validation_error")
    _system_error(stack.send("PATCH", "/api/system/config", json=[1, 2]), 422)
    r = stack.send("POST", "/api/logs/frontend", json="hello")
    assert r.status_code == 422 and r.json()["success"] is False and r.json()["count"] == 0


def test_non_utf8_bodies_are_400(stack):
    latin1 = '{"task": "cleanup", "payload": {}, "idempotency_key": "caf\u00e9"}'.encode("latin-1")
    err = _platform_error(
        stack.send("POST", f"{P}/jobs", data=latin1, headers={"Content-Type": "application/json"}), 400, "invalid_json"
    )
    assert "UTF-8" in err["message"]
    utf16 = json.dumps({"retention_days": 10}).encode("utf-16")
    assert (
        "UTF-8"
        in _system_error(
            stack.send("PATCH", "/api/system/config", data=utf16, headers={"Content-Type": "application/json"}), 400
        )["detail"]
    )


def test_oversized_body_is_413_with_the_limit(stack):
    from app.api.kit.meta import MAX_BODY_BYTES

    huge = b'{"message": "' + b"x" * (MAX_BODY_BYTES + 10) + b'", "level": "INFO"}'
    r = stack.send("POST", "/api/logs/frontend", data=huge, headers={"Content-Type": "application/json"})
    assert str(MAX_BODY_BYTES) in _system_error(r, 413)["detail"]
    r = stack.send("POST", f"{P}/jobs", data=huge, headers={"Content-Type": "application/json"})
    assert str(MAX_BODY_BYTES) in _platform_error(r, 413, "payload_too_large")["message"]


def test_bodies_are_json_only(stack):
    text = json.dumps({"task": "cleanup", "priority": "high"})
    err = _platform_error(
        stack.send("POST", f"{P}/jobs", data=text, headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert "application/json" in err["message"]
    r = stack.send("PATCH", "/api/system/config", data={"retention_days": "10"})  # a form
    _system_error(r, 415)
    r = stack.send("POST", "/api/logs/frontend", data=b'{"level": "INFO", "message": "x"}')  # no Content-Type
    _system_error(r, 415)
    assert stack.get(f"{P}/jobs/none").status_code == 404  # no body, no Content-Type needed


def test_unknown_fields_are_refused_at_the_top_level_too(stack):
    err = _platform_error(
        stack.send("POST", f"{P}/jobs", json={"task": "cleanup", "priorty": "high"}), 400, "validation_error"
    )
    assert [d["field"] for d in err["details"]] == ["priorty"] and "priorty" in err["message"]
    err = _platform_error(stack.send("POST", f"{P}/jobs", json={"task": "cleanup", "payload": {"dryrun": True}}), 400)
    assert [d["field"] for d in err["details"]] == ["payload.dryrun"]


def test_json_that_no_model_can_hold(stack):
    cases = [
        b'{"low_max": NaN, "medium_max": 2, "high_max": 3}',
        b'{"low_max": 1e400, "medium_max": 2, "high_max": 3}',
        b'{"low_max": ' + b"9" * 5000 + b', "medium_max": 2, "high_max": 3}',
        b"[" * 100_000 + b"]" * 100_000,
    ]
    for body in cases:
        r = stack.send("PUT", "/api/system/severity", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (body[:40], r.status_code, r.text[:300])
        _system_error(r, r.status_code)
    nested = {"level": "INFO", "message": "deep", "context": {}}
    node = nested["context"]
    for _ in range(60):
        node["a"] = {}
        node = node["a"]
    r = stack.send("POST", "/api/logs/frontend", json=nested)
    assert r.status_code == 422 and "nested deeper" in r.json()["detail"]


# --- numbers, strings, NUL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/api/logs?offset=10000000000000000000000",
        f"{P}/logs?offset=10000000000000000000000",
        f"{P}/queues/cleanup/jobs?offset=10000000000000000000000",
        "/api/logs/10000000000000000000000",
        "/api/system/gpu/history?limit=1e3",
        "/api/logs?limit=99999999999999999999999999",
    ],
)
def test_huge_numbers_are_400_at_the_door(stack, path):
    r = stack.get(path)
    if path.startswith(P):
        _platform_error(r, 400, "validation_error")
    else:
        _system_error(r, 400)


def test_huge_numbers_in_bodies(stack):
    r = stack.send("POST", f"{P}/jobs", json={"task": "alerts", "payload": {"event_id": 10**30}})
    assert _platform_error(r, 400)["details"][0]["field"] == "payload.event_id"
    r = stack.send("PATCH", "/api/system/config", json={"retention_days": 10**30})
    assert {e["field"] for e in _system_error(r, 422)["errors"]} == {"retention_days"}


def test_nul_bytes_are_refused_everywhere(stack):
    err = _platform_error(stack.get(f"{P}/logs?query=a%00b"), 400, "validation_error")
    assert err["details"][0]["field"] == "query"
    _system_error(stack.get("/api/logs?search=%00"), 400)
    _platform_error(stack.get(f"{P}/jobs/a%00b"), 400)
    r = stack.send("POST", "/api/logs/frontend", json={"level": "INFO", "message": "a\u0000b"})
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    r = stack.send("POST", "/api/logs/frontend", json={"level": "INFO", "message": "ok", "context": {"k\u0000": 1}})
    assert r.status_code == 422
    r = stack.send("POST", f"{P}/jobs", json={"task": "analysis", "payload": {"batch_id": "b\u0000"}})
    _platform_error(r, 400, "validation_error")
    # Nothing of it reached the database: the search still works.
    assert stack.get(f"{P}/logs?query=anything").status_code == 200


def test_long_strings(stack):
    _system_error(stack.get("/api/logs?search=" + "w" * 1001), 400)
    _platform_error(stack.get(f"{P}/jobs/" + "j" * 129), 400)
    r = stack.send("POST", f"{P}/jobs", json={"task": "analysis", "payload": {"batch_id": "b" * 65}})
    assert _platform_error(r, 400)["details"][0]["field"] == "payload.batch_id"
    r = stack.send("POST", "/api/logs/frontend", json={"level": "INFO", "message": "m" * 10_001})
    assert r.status_code == 422 and r.json()["errors"]


def test_a_url_too_long_is_gunicorns_414_in_json(stack):
    r = stack.get("/api/logs?search=" + "x" * 9000)
    assert r.status_code == 414 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["detail"] and body["success"] is False and body["error"]["code"] == "uri_too_long"


def test_a_malformed_request_line_is_json_too(stack):
    status, headers, body = _raw(stack, b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"
    status, headers, body = _raw(stack, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad\x00: 1\r\n\r\n")
    assert status == 400 and json.loads(body)["detail"]


# --- paths: traversal and symlinks ---------------------------------------------------------------------------------
def test_detection_paths_stay_inside_the_camera_root(stack, outside):
    settings = stack.settings()
    camera = Path(settings.camera_root) / "porch"
    camera.mkdir(parents=True, exist_ok=True)
    target = outside / "targets" / "secret.jpg"
    (camera / "link.jpg").symlink_to(target)
    (camera / "dirlink").symlink_to(outside / "targets", target_is_directory=True)
    for path in (
        "../../../../../../etc/passwd",
        "porch/../../x.jpg",
        str(target),
        "porch/link.jpg",
        "porch/dirlink/secret.jpg",
        "porch/nothing.jpg",
        "/dev/zero",
    ):
        r = stack.send("POST", f"{P}/jobs", json={"task": "detection", "payload": {"camera_id": "porch", "path": path}})
        err = _platform_error(r, 400, "validation_error")
        assert err["details"][0]["field"] == "payload.path", (path, err)
    assert target.read_bytes() == b"\xff\xd8\xff\xd9"


def test_path_parameters_cannot_climb(stack):
    for path in (
        f"{P}/logs/export/..%2F..%2Fetc%2Fpasswd/download",
        f"{P}/logs/export/....//download",
        f"{P}/jobs/..%2F..%2Fetc",
        "/api/system/circuit-breakers/..%2Fx/reset",
    ):
        r = stack.send("POST", path) if path.endswith("/reset") else stack.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert r.headers["Content-Type"].startswith("application/json")


# --- what the issue found -----------------------------------------------------------------------------------------
def test_an_idempotency_key_names_one_request(stack):
    key = f"hostile-{uuid.uuid4().hex}"
    first = stack.send(
        "POST",
        f"{P}/jobs",
        json={
            "task": "notification",
            "idempotency_key": key,
            "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/x", "message": "one"},
        },
    )
    assert first.status_code == 202
    job = first.json()["data"]
    again = stack.send(
        "POST",
        f"{P}/jobs",
        json={
            "task": "notification",
            "idempotency_key": key,
            "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/x", "message": "one"},
        },
    )
    assert again.status_code == 200
    assert {k: again.json()["data"][k] for k in ("job_id", "task", "queue")} == {
        k: job[k] for k in ("job_id", "task", "queue")
    } and again.json()["data"]["created"] is False
    for other in (
        {"task": "cleanup", "payload": {}},
        {
            "task": "notification",
            "priority": "high",
            "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/x", "message": "one"},
        },
        {"task": "notification", "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/x", "message": "two"}},
    ):
        r = stack.send("POST", f"{P}/jobs", json={**other, "idempotency_key": key})
        err = _platform_error(r, 409, "idempotency_conflict")
        assert r.json()["job_id"] == job["job_id"] and job["job_id"] in err["message"]
    stack.send("DELETE", f"{P}/jobs/{job['job_id']}")


def _queue(stack, name: str) -> dict:
    return {q["name"]: q for q in stack.get(f"{P}/queues").json()["data"]["queues"]}[name]


def test_waiting_jobs_without_a_consumer_are_a_warning(stack):
    """No notification worker runs in this stack: what waits there will not run."""
    r = stack.send(
        "POST",
        f"{P}/jobs",
        json={
            "task": "notification",
            "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/x", "message": "nobody delivers this"},
        },
    )
    job_id = r.json()["data"]["job_id"]
    q = _queue(stack, "notification")
    assert q["waiting_jobs"] >= 1 and q["consumers"] == 0 and q["status"] in ("warning", "critical")
    assert _queue(stack, "cleanup")["status"] == "healthy"  # consumed, nothing waiting
    stack.send("DELETE", f"{P}/jobs/{job_id}")


def _consumed(client: redis.Redis, group: str) -> list[str] | None:
    """The queues a group's live worker says it consumes (its heartbeat), None without one."""
    from app.jobs import heartbeats

    beats = heartbeats.by_group(heartbeats.alive(client, 5.0)).get(group)
    return beats[0].get("queues") if beats else None


def test_a_stopped_worker_group_is_not_ready(stack):
    """The supervisor stops a Celery group by adding it to the stopped set (app/jobs/queues.py
    `stopped_groups`); its processes keep beating but consume nothing."""
    from app.jobs.queues import STOPPED_GROUPS_KEY

    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    wait_for(lambda: stack.get("/ready").status_code == 200, 30, what="the stack to be ready")
    client.sadd(STOPPED_GROUPS_KEY, "analysis_worker")
    try:
        # The API reads the stopped set at once; the worker drops its queue at its next tick.
        assert _queue(stack, "analysis")["consumers"] == 0
        wait_for(lambda: _consumed(client, "analysis_worker") == [], 15, what="the analysis worker to stop consuming")
        r = stack.get("/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert any(reason.startswith("analysis_worker") and "stopped" in reason for reason in r.json()["reasons"])
        detail = stack.get("/api/system/health/ready")
        workers = {w["name"]: w for w in detail.json()["workers"]}
        assert detail.status_code == 503 and workers["analysis_worker"]["running"] is False
        assert "stopped" in workers["analysis_worker"]["message"]
        job = stack.send("POST", f"{P}/jobs", json={"task": "analysis", "payload": {"batch_id": "held"}})
        q = _queue(stack, "analysis")
        assert q["waiting_jobs"] >= 1 and q["status"] in ("warning", "critical")
        infra = {s["name"]: s for s in stack.get(f"{P}/infrastructure/health").json()["data"]["services"]}
        assert infra["Workers"]["status"] == "down" and "analysis_worker (stopped)" in infra["Workers"]["reason"]
        # A cleanup while its queue is paused is the operator's choice: 409, not a 503.
        stack.send("POST", f"{P}/queues/cleanup/pause")
        _system_error(stack.send("POST", "/api/system/cleanup?dry_run=true"), 409)
        stack.send("POST", f"{P}/queues/cleanup/resume")
    finally:
        client.srem(STOPPED_GROUPS_KEY, "analysis_worker")
    wait_for(lambda: stack.get("/ready").status_code == 200, 30, what="the group to run again")
    job_id = job.json()["data"]["job_id"]
    wait_for(
        lambda: stack.get(f"{P}/jobs/{job_id}").json()["data"]["status"] == "failed",
        30,
        what="the held job to run once the group started",
    )


def test_api_health_needs_a_sample_and_ignores_the_probes_503s(stack):
    from app.observability.api_timings import SAMPLES_KEY

    client = redis.Redis.from_url(stack.redis.url)
    client.delete(SAMPLES_KEY)
    api = {s["name"]: s for s in stack.get(f"{P}/infrastructure/health").json()["data"]["services"]}["API Server"]
    assert api["min_sample"] >= 1
    if api["requests_sampled"] < api["min_sample"]:
        assert api["status"] == "healthy"
    from app.jobs.queues import STOPPED_GROUPS_KEY

    client.sadd(STOPPED_GROUPS_KEY, "detection_worker")
    try:
        for _ in range(30):
            assert stack.get("/ready").status_code == 503
    finally:
        client.srem(STOPPED_GROUPS_KEY, "detection_worker")
    time.sleep(1.5)  # every API process flushes its timings once a second
    api = {s["name"]: s for s in stack.get(f"{P}/infrastructure/health").json()["data"]["services"]}["API Server"]
    assert api["requests_sampled"] >= 30
    assert api["error_rate_percent"] == 0.0 and api["status"] == "healthy", api


def test_export_download_has_one_content_type(stack):
    for fmt, media in (
        ("csv", "text/csv; charset=utf-8"),
        ("json", "application/json"),
        ("txt", "text/plain; charset=utf-8"),
    ):
        export = stack.get(f"{P}/logs/export?format={fmt}").json()["data"]["export_id"]
        wait_for(
            lambda export=export: stack.get(f"{P}/logs/export/{export}").json()["data"]["status"] == "completed",
            30,
            what=f"the {fmt} export",
        )
        r = stack.get(f"{P}/logs/export/{export}/download")
        assert r.status_code == 200 and r.headers["Content-Type"] == media  # one header, one charset


def test_post_jobs_description_is_whole(stack):
    op = stack.get("/api/openapi.json").json()["paths"][f"{P}/jobs"]["post"]
    assert op["description"].startswith("Each `task` takes its own `payload`")
    assert op["description"].rstrip().endswith(".")


def test_every_error_is_in_its_family_envelope(stack):
    _platform_error(stack.get(f"{P}/nothing-here"), 404, "not_found")
    _system_error(stack.get("/api/system/nothing-here"), 404)
    r = stack.send("PUT", "/api/logs/frontend")
    _system_error(r, 405)
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
    # /jobs/batch is its own route, not a job called "batch": GET and DELETE are 405s, OPTIONS lists what it has
    for method in ("GET", "DELETE"):
        r = stack.send(method, f"{P}/jobs/batch")
        _platform_error(r, 405, "method_not_allowed")
        assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
    r = stack.send("OPTIONS", f"{P}/jobs/batch")
    assert r.status_code == 200 and set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
    _platform_error(stack.send("GET", f"{P}/jobs/batches"), 404, "job_not_found")  # any other id is still a job id
    _platform_error(stack.session.post(f"{stack.url}{P}/jobs", json={}), 401, "unauthorized")


# --- the file system, last --------------------------------------------------------------------------------------------
def test_nothing_was_written_outside_var(stack, outside):
    """Runs last in the module: the processes' HOME and TMPDIR are still empty, the traversal
    targets untouched, and what the stack wrote is under its var/ directory."""
    # `pymp-*`: the prefork pools' multiprocessing directories, removed when the pools exit.
    leftovers = [str(p) for d in ("home", "tmp") for p in (outside / d).iterdir() if not p.name.startswith("pymp-")]
    assert leftovers == []
    assert sorted(p.name for p in (outside / "targets").iterdir()) == ["secret.jpg"]
    written = {p.relative_to(stack.var).parts[0] for p in stack.var.rglob("*") if p.is_file()}
    assert written <= {"cameras", "exports", "metrics", "thumbnails", "clips"}, written
    assert any((stack.var / "exports").iterdir())


def test_monitoring_bodies_take_json_types_as_documented(stack):
    """`false` is not the number 0 (a fuzzer finding): the AI monitoring bodies are strict."""
    condition = {"metric": "queue_depth", "operator": "eq", "threshold": 0, "duration_minutes": 0}
    rule = {"name": "x", "condition": condition}
    for field, value in (("duration_minutes", False), ("threshold", True)):
        bad = {**rule, "condition": {**rule["condition"], field: value}}
        r = stack.send("PUT", "/api/v1/monitoring/alerts/rules", json={"rules": [bad]})
        assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    r = stack.send("POST", "/api/v1/monitoring/agents/agent_detector/scale", json={"replicas": True})
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
