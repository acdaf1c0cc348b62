"""Queue and job operations (platform API) against real Redis and real Celery workers."""

from __future__ import annotations

import time
import uuid

import pytest

from app.celery.app import celery
from app.celery.broker import Broker, priority_lists
from app.celery.queues import QUEUE_NAMES
from app.jobs.registry import get_registry
from tests.helpers import make_jwt
from tests.servers import CeleryWorker

P = "/api/v1/platform/system"


def _note(message="hello"):
    return {
        "task": "notification",
        "payload": {"channel": "webhook", "url": "http://127.0.0.1:9/hook", "message": message},
    }


@pytest.fixture
def broker(redis_server):
    import redis

    return Broker(redis.Redis.from_url(redis_server.url))


@pytest.fixture
def empty_notification(client, api_headers):
    """The notification queues have no consumer in the test session: empty them first."""
    for q in ("notification", "notification:high"):
        r = client.delete(f"{P}/queues/{q}/jobs?status=waiting", headers=api_headers)
        assert r.status_code == 200
    return "notification"


def _enqueue(client, api_headers, body, **headers):
    return client.post(f"{P}/jobs", json=body, headers={**api_headers, **headers})


def _canary(queue, **kwargs):
    job_id = f"t-{uuid.uuid4().hex}"
    celery.send_task("vigil.system.canary", kwargs=kwargs, queue=queue, task_id=job_id)
    return job_id


def _wait_state(wait, job_id, states, timeout=30):
    registry = get_registry()
    return wait(
        lambda: (registry.get(job_id) or {}).get("state") in states and registry.get(job_id),
        timeout,
        interval=0.05,
        what=f"{job_id} to reach {states}",
    )


# --- listing and counts ----------------------------------------------------------------------------
def test_queue_overview_shape(client):
    r = client.get(f"{P}/queues")
    assert r.status_code == 200
    body = r.get_json()
    assert body["success"] is True
    queues = body["data"]["queues"]
    assert [q["name"] for q in queues] == list(QUEUE_NAMES)
    for q in queues:
        assert set(q) >= {
            "name",
            "priority",
            "active_jobs",
            "waiting_jobs",
            "completed_last_hour",
            "failed_jobs",
            "status",
            "paused",
            "consumers",
        }
    assert {q["name"]: q["priority"] for q in queues}["detection:high"] == "high"


def test_counts_match_what_was_enqueued_at_every_priority(client, api_headers, empty_notification, broker):
    for i in range(7):
        assert _enqueue(client, api_headers, _note(f"n{i}")).status_code == 202
    assert _enqueue(client, api_headers, {**_note("urgent"), "priority": "high"}).status_code == 202
    # Messages with a Celery priority land in the queue's priority sub-lists; they count too.
    for pri in (3, 9):
        celery.send_task(
            "vigil.notification.send", kwargs={"channel": "webhook", "message": "p"}, queue="notification", priority=pri
        )
    queues = {q["name"]: q for q in client.get(f"{P}/queues").get_json()["data"]["queues"]}
    assert queues["notification"]["waiting_jobs"] == 9
    assert queues["notification:high"]["waiting_jobs"] == 1
    # No worker consumes notifications in the session: what waits there will not run, so a warning.
    assert queues["notification"]["status"] == "warning" and queues["notification"]["consumers"] == 0
    lengths = [broker.r.llen(k) for k in priority_lists("notification")]
    assert lengths[0] == 7 and sum(lengths) == 9


@pytest.mark.parametrize("total", [0, 1, 49, 50, 51, 120])
def test_waiting_pagination_is_exact_and_in_run_order(client, api_headers, empty_notification, total):
    ids = [_enqueue(client, api_headers, _note(f"m{i}")).get_json()["data"]["job_id"] for i in range(total)]
    seen = []
    for offset in (0, 50, 100, 150):
        r = client.get(f"{P}/queues/notification/jobs?status=waiting&limit=50&offset={offset}")
        assert r.status_code == 200
        data = r.get_json()["data"]
        assert data["pagination"] == {"total": total, "limit": 50, "offset": offset}
        assert len(data["jobs"]) == max(0, min(50, total - offset))
        seen.extend(j["id"] for j in data["jobs"])
    assert seen == ids  # first in, first listed: the order workers will run them
    if total:
        job = client.get(f"{P}/queues/notification/jobs?status=waiting&limit=1").get_json()["data"]["jobs"][0]
        assert job["status"] == "waiting" and job["payload"]["message"] == "m0" and job["created_at"]


def test_priority_sublists_are_listed_after_priority_zero(client, api_headers, empty_notification):
    later = celery.send_task(
        "vigil.notification.send", kwargs={"channel": "webhook", "message": "low"}, queue="notification", priority=6
    ).id
    first = _enqueue(client, api_headers, _note("normal")).get_json()["data"]["job_id"]
    jobs = client.get(f"{P}/queues/notification/jobs?status=waiting").get_json()["data"]["jobs"]
    assert [j["id"] for j in jobs] == [first, later]


@pytest.mark.parametrize(
    "query,field",
    [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("limit=ten", "limit"),
    ],
)
def test_bad_listing_parameters_are_400(client, query, field):
    r = client.get(f"{P}/queues/detection/jobs?{query}")
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["code"] == "validation_error" and err["details"][0]["field"] == field


def test_unknown_queue_is_404(client, api_headers):
    for method, path in (
        ("get", "/queues/nope/jobs"),
        ("post", "/queues/nope/pause"),
        ("post", "/queues/nope/resume"),
        ("post", "/queues/nope/retry-failed"),
        ("delete", "/queues/nope/jobs?status=failed"),
    ):
        r = getattr(client, method)(f"{P}{path}", headers=api_headers)
        assert r.status_code == 404, path
        assert r.get_json()["error"]["code"] == "queue_not_found"


# --- enqueue --------------------------------------------------------------------------------------------
def test_enqueue_routes_by_priority_and_validates(client, api_headers, empty_notification, settings, broker):
    r = _enqueue(client, api_headers, {**_note(), "priority": "high"})
    assert r.status_code == 202
    data = r.get_json()["data"]
    assert data["queue"] == "notification:high" and data["status"] == "queued" and data["created"] is True
    assert broker.r.llen("notification:high") == 1  # 202 only once the broker holds it
    job = client.get(f"{P}/jobs/{data['job_id']}").get_json()["data"]
    assert job["status"] == "waiting" and job["task"] == "vigil.notification.send" and job["attempts"] == 0


@pytest.mark.parametrize(
    "body,field",
    [
        ({"task": "mining", "payload": {}}, "task"),
        ({"task": "notification", "payload": {"channel": "pigeon", "message": "x"}}, "payload.channel"),
        ({"task": "notification", "payload": {"channel": "email"}}, "payload.message"),
        ({"task": "detection", "payload": {"camera_id": "Front Door", "path": "a.jpg"}}, "payload.camera_id"),
        ({"task": "detection", "payload": {"camera_id": "front", "path": "/etc/passwd"}}, "payload.path"),
        ({"task": "detection", "payload": {"camera_id": "front", "path": "../../etc/hosts.jpg"}}, "payload.path"),
        ({"task": "cleanup", "payload": {"dry_run": "maybe"}}, "payload.dry_run"),
        ({"task": "cleanup", "payload": {}, "priority": "urgent"}, "priority"),
        ({"task": "cleanup", "payload": {"surprise": 1}}, "payload.surprise"),
    ],
)
def test_enqueue_rejects_bad_payloads_naming_the_field(client, api_headers, body, field):
    r = _enqueue(client, api_headers, body)
    assert r.status_code == 400, r.get_json()
    err = r.get_json()["error"]
    assert err["code"] == "validation_error"
    assert err["details"][0]["field"] == field and field in err["message"]


def test_detection_path_inside_camera_root(client, api_headers, settings):
    cam = settings.camera_root / "porch"
    cam.mkdir(parents=True, exist_ok=True)
    (cam / "x.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    r = _enqueue(client, api_headers, {"task": "detection", "payload": {"camera_id": "porch", "path": "porch/x.jpg"}})
    assert r.status_code == 202
    job = client.get(f"{P}/jobs/{r.get_json()['data']['job_id']}").get_json()["data"]
    assert job["payload"]["path"] == str((cam / "x.jpg").resolve())


def test_idempotency_key_returns_the_same_job(client, api_headers, empty_notification, broker):
    key = f"k-{uuid.uuid4().hex}"
    first = _enqueue(client, api_headers, {**_note(), "idempotency_key": key})
    second = _enqueue(client, api_headers, {**_note(), "idempotency_key": key})
    assert first.status_code == 202 and second.status_code == 200
    assert first.get_json()["data"]["job_id"] == second.get_json()["data"]["job_id"]
    assert second.get_json()["data"]["created"] is False
    assert broker.r.llen("notification") == 1


def test_idempotency_key_with_another_request_is_409_naming_the_job(client, api_headers, empty_notification, broker):
    key = f"k-{uuid.uuid4().hex}"
    first = _enqueue(client, api_headers, {**_note(), "idempotency_key": key}).get_json()["data"]
    for other in (
        {**_note("different body, same key")},
        {**_note(), "priority": "high"},
        {"task": "cleanup", "payload": {}},
    ):
        r = _enqueue(client, api_headers, {**other, "idempotency_key": key})
        assert r.status_code == 409, r.get_json()
        body = r.get_json()
        assert body["error"]["code"] == "idempotency_conflict" and body["job_id"] == first["job_id"]
        assert first["job_id"] in body["error"]["message"]
    assert broker.r.llen("notification") == 1 and broker.r.llen("notification:high") == 0


def test_mutations_need_credentials_and_the_ops_role(client):
    assert client.post(f"{P}/queues/cleanup/pause").status_code == 401
    viewer = {"Authorization": f"Bearer {make_jwt(['viewer'])}"}
    r = client.post(f"{P}/queues/cleanup/pause", headers=viewer)
    assert r.status_code == 403 and r.get_json()["success"] is False
    ops = {"Authorization": f"Bearer {make_jwt(['ops'])}"}
    assert client.post(f"{P}/queues/cleanup/resume", headers=ops).status_code == 200


# --- job inspection, retry, delete ------------------------------------------------------------------------
def test_unknown_and_malformed_job_ids(client, api_headers):
    assert client.get(f"{P}/jobs/no-such-job").status_code == 404
    assert client.post(f"{P}/jobs/no-such-job/retry", headers=api_headers).status_code == 404
    assert client.delete(f"{P}/jobs/no-such-job", headers=api_headers).status_code == 404
    r = client.get(f"{P}/jobs/" + "x" * 200)
    assert r.status_code == 400 and r.get_json()["error"]["details"][0]["field"] == "job_id"


@pytest.mark.slow
def test_retry_of_a_failed_job_runs_again_and_can_succeed(client, api_headers, celery_workers, wait, tmp_path):
    marker = tmp_path / "mounted"
    job_id = _canary("analysis", require_path=str(marker))
    _wait_state(wait, job_id, {"failed"})
    job = client.get(f"{P}/jobs/{job_id}").get_json()["data"]
    assert job["status"] == "failed" and "does not exist" in job["error"]["message"]
    assert "Traceback" in job["error"]["stack_trace"] and job["attempts"] == 1
    r = client.post(f"{P}/jobs/{job_id}/retry", headers=api_headers)
    assert r.status_code == 200
    assert r.get_json()["data"] == {"job_id": job_id, "status": "queued", "attempts_reset": True, "queue": "analysis"}
    _wait_state(wait, job_id, {"failed"})  # same input, same outcome...
    marker.write_text("ok")
    assert client.post(f"{P}/jobs/{job_id}/retry", headers=api_headers).status_code == 200
    _wait_state(wait, job_id, {"completed"})  # ...until the cause is fixed
    job = client.get(f"{P}/jobs/{job_id}").get_json()["data"]
    assert job["status"] == "completed" and job["attempts"] == 1 and job["error"] is None
    r = client.post(f"{P}/jobs/{job_id}/retry", headers=api_headers)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "job_not_failed"


def test_delete_waiting_job_removes_exactly_that_message(client, api_headers, empty_notification, broker):
    ids = [_enqueue(client, api_headers, _note(f"d{i}")).get_json()["data"]["job_id"] for i in range(3)]
    before = broker.r.lrange("notification", 0, -1)
    r = client.delete(f"{P}/jobs/{ids[1]}", headers=api_headers)
    assert r.status_code == 200
    assert r.get_json()["data"] == {
        "job_id": ids[1],
        "deleted": True,
        "previous_state": "waiting",
        "action": "removed_from_queue",
    }
    after = broker.r.lrange("notification", 0, -1)
    assert len(after) == 2 and all(m in before for m in after) and not any(ids[1].encode() in m for m in after)
    listed = [j["id"] for j in client.get(f"{P}/queues/notification/jobs").get_json()["data"]["jobs"]]
    assert listed == [ids[0], ids[2]]
    assert client.get(f"{P}/jobs/{ids[1]}").status_code == 404


@pytest.mark.slow
def test_delete_running_job_terminates_it(client, api_headers, celery_workers, wait):
    job_id = _canary("analysis", sleep=30)
    _wait_state(wait, job_id, {"active"})
    r = client.delete(f"{P}/jobs/{job_id}", headers=api_headers)
    assert r.get_json()["data"]["action"] == "revoked_and_terminated"
    follow = _canary("analysis", result="after")
    _wait_state(wait, follow, {"completed"}, timeout=20)  # the only pool slot was freed long before 30 s
    time.sleep(1)
    assert client.get(f"{P}/jobs/{job_id}").status_code == 404  # no ghost record from the revoke


@pytest.mark.slow
def test_retry_all_failed_and_delete_by_filter(client, api_headers, celery_workers, wait, tmp_path):
    marker = tmp_path / "m"
    failed = [_canary("analysis", require_path=str(marker)) for _ in range(3)]
    for job_id in failed:
        _wait_state(wait, job_id, {"failed"})
    marker.write_text("now")
    r = client.post(f"{P}/queues/analysis/retry-failed", headers=api_headers)
    assert r.status_code == 200 and r.get_json()["data"]["retried"] >= 3
    for job_id in failed:
        _wait_state(wait, job_id, {"completed"})
    r = client.delete(
        f"{P}/queues/analysis/jobs?status=completed&task=vigil.system.canary&older_than=0s", headers=api_headers
    )
    assert r.status_code == 200 and r.get_json()["data"]["deleted"] >= 3
    leftovers = {j: client.get(f"{P}/jobs/{j}").get_json() for j in failed}
    assert all(not v.get("success") for v in leftovers.values()), leftovers


def test_delete_by_filter_validates(client, api_headers):
    for query in ("status=active", "status=nope", "", "status=failed&older_than=yesterday-ish"):
        r = client.delete(f"{P}/queues/analysis/jobs?{query}", headers=api_headers)
        assert r.status_code == 400, query


def test_delete_waiting_by_task_and_age(client, api_headers, empty_notification, broker):
    old = [_enqueue(client, api_headers, _note(f"old{i}")).get_json()["data"]["job_id"] for i in range(3)]
    time.sleep(1.1)
    new = _enqueue(client, api_headers, _note("new")).get_json()["data"]["job_id"]
    r = client.delete(
        f"{P}/queues/notification/jobs?status=waiting&task=vigil.notification.send&older_than=1s", headers=api_headers
    )
    assert r.get_json()["data"]["deleted"] == 3
    assert [j["id"] for j in client.get(f"{P}/queues/notification/jobs").get_json()["data"]["jobs"]] == [new]
    assert all(client.get(f"{P}/jobs/{j}").status_code == 404 for j in old)


# --- pause and resume ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pause_stops_running_and_later_workers_until_resume(client, api_headers, celery_workers, wait, settings):
    from app import create_app
    from app.core.redis_client import get_redis
    from app.jobs import heartbeats

    node = celery_workers["analysis_worker"].node

    def consumes(n, queue="analysis"):
        beats = {b["node"]: b for b in heartbeats.alive(get_redis(), settings.heartbeat_ttl)}
        return queue in (beats.get(n, {}).get("queues") or [])

    late = None
    try:
        r = client.post(f"{P}/queues/analysis/pause", headers=api_headers)
        assert r.status_code == 200
        data = r.get_json()["data"]
        assert data["queue"] == "analysis" and data["status"] == "paused" and data["timestamp"].endswith("Z")
        wait(lambda: not consumes(node), 10, what="running worker to stop consuming")
        job_id = _canary("analysis", result="ran after resume")
        # A worker started after the pause must not consume it either.
        late = CeleryWorker(dict(celery_workers["analysis_worker"].env), "analysis_worker", ["analysis"]).start()
        time.sleep(3)
        assert get_registry().get(job_id)["state"] == "waiting"
        assert not consumes(late.node)
        # Paused state is persisted: a new API process (app) reports it.
        fresh = create_app(settings).test_client()
        queues = {q["name"]: q for q in fresh.get(f"{P}/queues").get_json()["data"]["queues"]}
        assert queues["analysis"]["paused"] is True and queues["analysis"]["consumers"] == 0
        assert queues["analysis"]["waiting_jobs"] >= 1
        r = client.post(f"{P}/queues/analysis/resume", headers=api_headers)
        assert r.status_code == 200 and r.get_json()["data"]["status"] == "active"
        _wait_state(wait, job_id, {"completed"}, timeout=15)
        wait(lambda: consumes(node) and consumes(late.node), 10, what="both workers consuming again")
    finally:
        client.post(f"{P}/queues/analysis/resume", headers=api_headers)
        if late:
            late.stop()


# --- nothing lost ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_mid_batch_loses_no_job(celery_workers, broker, wait):
    """1,000 jobs, the worker SIGKILLed (main process and pool) in the middle; a new worker runs
    them all, including the ones the dead worker held unacknowledged."""
    registry = get_registry()
    env = dict(celery_workers["analysis_worker"].env)
    victim = CeleryWorker(env, "cleanup_service", ["cleanup"], concurrency=2).start()
    ids = [_canary("cleanup", sleep=0.01) for _ in range(1000)]
    wait(
        lambda: sum(1 for j in registry.get_many(ids) if j["state"] == "completed") >= 200,
        60,
        what="some progress before the kill",
    )
    victim.kill()
    done_at_kill = sum(1 for j in registry.get_many(ids) if j["state"] == "completed")
    mine = set(ids)
    held = {msg.id for _tag, msg, _at in broker.unacked() if msg.id in mine}
    assert done_at_kill < 1000
    rescuer = CeleryWorker(env, "cleanup_service", ["cleanup"], concurrency=2).start()
    try:

        def all_done():
            jobs = registry.get_many(ids)
            return all(j["state"] == "completed" for j in jobs)

        try:
            wait(all_done, 150, interval=0.5, what="all 1000 jobs completed")
        except TimeoutError:
            from collections import Counter

            stuck = [j for j in registry.get_many(ids) if j["state"] != "completed"]
            raise AssertionError(f"{Counter(j['state'] for j in stuck)} {stuck[:3]}") from None
        jobs = registry.get_many(ids)
        assert len(jobs) == 1000 and all(j["state"] == "completed" for j in jobs)
        # The jobs in the dead worker's hands (delivered, never acknowledged) were handed back and ran.
        assert held, "the dead worker held no job unacknowledged: the kill tested nothing"
        left = {msg.id for _tag, msg, _at in broker.unacked() if msg.id in mine}
        assert not left, f"{len(left)} of the jobs are still delivered and unacknowledged"
    finally:
        rescuer.stop()
