"""The supervisor with real Celery worker processes: stop/start/restart through remote control,
a SIGKILLed pool process or worker seen as a crash, held for the backoff, failed after five."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
import redis

from app.jobs.queues import STOPPED_GROUPS_KEY
from app.jobs.registry import JobRegistry
from tests.helpers import API_KEY, worker_env
from tests.servers import CeleryWorker, wait_for

HEADERS = {"X-API-Key": API_KEY}
GROUP = "notification_worker"
QUEUES = ["notification:high", "notification"]


@pytest.fixture
def workers(ops_settings):
    started = []

    def start(node: str | None = None, concurrency: int = 2) -> CeleryWorker:
        env = worker_env(REDIS_URL=ops_settings.redis_url, DATABASE_URL=ops_settings.database_url)
        w = CeleryWorker(env, GROUP, QUEUES, concurrency=concurrency, node=node).start(wait=False)
        started.append(w)
        w.wait_ready(60)
        client = redis.Redis.from_url(ops_settings.redis_url, decode_responses=True)
        first = json.loads(client.get(f"vigil:hb:{w.node}"))["ts"]
        # a later beat comes from the running event loop (the first one is sent before it starts)
        wait_for(lambda: json.loads(client.get(f"vigil:hb:{w.node}"))["ts"] > first, 20, what="event loop running")
        return w

    yield start
    for w in started:
        w.kill()


@pytest.fixture
def supervisor(host):
    return lambda backoff=None: host(backoff=backoff)


def state(api) -> dict:
    body = api.get("/api/system/supervisor").get_json()
    return next(w for w in body["workers"] if w["name"] == GROUP)


def beat(client, w: CeleryWorker) -> dict:
    return json.loads(client.get(f"vigil:hb:{w.node}") or "{}")


def events(api) -> list[dict]:
    body = api.get(f"/api/system/supervisor/restart-history?worker_name={GROUP}&limit=100").get_json()
    return list(reversed(body["items"]))


def send(settings, **kwargs) -> str:
    from app.celery.app import celery

    job_id = f"pool-{uuid.uuid4().hex}"
    with celery.connection_for_write(settings.broker_url) as conn:
        celery.send_task("vigil.system.canary", kwargs=kwargs, queue="notification", task_id=job_id, connection=conn)
    return job_id


def job_state(client, job_id: str) -> str | None:
    job = JobRegistry(client).get(job_id)
    return job["state"] if job else None


def ts(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_stop_start_and_restart_a_pool(workers, supervisor, api, ops_settings, ops_client, wait):
    w = workers(concurrency=2)
    supervisor()
    wait(lambda: state(api)["status"] == "running", 10, what="pool running")
    assert state(api)["nodes"] == [w.node]

    r = api.post(f"/api/system/supervisor/workers/{GROUP}/stop", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert beat(ops_client, w)["queues"] == [] and ops_client.sismember(STOPPED_GROUPS_KEY, GROUP)
    assert state(api)["status"] == "stopped"
    held = send(ops_settings, result={"n": 1})
    time.sleep(2.0)
    assert job_state(ops_client, held) is None and ops_client.llen("notification") == 1  # not consumed

    r = api.post(f"/api/system/supervisor/workers/{GROUP}/start", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert set(beat(ops_client, w)["queues"]) == set(QUEUES)
    wait(lambda: job_state(ops_client, held) == "completed", 15, what="held job consumed after start")
    assert state(api)["status"] == "running"
    assert api.post(f"/api/system/supervisor/workers/{GROUP}/start", headers=HEADERS).status_code == 400

    # restart with a job running: idle processes are replaced at once, the busy one after its job
    long_job = send(ops_settings, sleep=2.0, result={"long": True})
    wait(lambda: job_state(ops_client, long_job) == "active", 15, what="long job running")
    old = set(beat(ops_client, w)["pool_pids"])
    r = api.post(f"/api/system/supervisor/workers/{GROUP}/restart", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert not (set(beat(ops_client, w)["pool_pids"]) & old) and len(beat(ops_client, w)["pool_pids"]) == 2
    job = JobRegistry(ops_client).get(long_job)
    assert job["state"] == "completed" and job["attempts"] == 1 and job["result"] == {"long": True}
    assert beat(ops_client, w)["pool_crashes"] == 0  # a controlled restart is not a crash
    assert [(e["status"], e["action"]) for e in events(api)] == [
        ("manual", "stop"),
        ("manual", "start"),
        ("manual", "restart"),
    ]
    assert state(api)["restart_count"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killed_pool_process_is_held_for_backoff_then_fails_after_five(
    workers, supervisor, api, ops_settings, ops_client, wait
):
    w = workers(concurrency=1)
    backoff = (1.0, 1.0, 1.0, 1.0, 1.0)
    supervisor(backoff=backoff)
    wait(lambda: state(api)["status"] == "running", 10, what="pool running")
    for crash in range(6):
        pid = wait(lambda: beat(ops_client, w).get("pool_pids"), 15, what="a pool process")[0]
        os.kill(pid, signal.SIGKILL)
        wait(
            lambda: sum(e["status"] == "crashed" for e in events(api)) == crash + 1,
            30,
            interval=0.1,
            what=f"crash {crash + 1} recorded",
        )
        if crash < 5:
            # held: the group is in the stopped set and its worker drops its queues
            assert ops_client.sismember(STOPPED_GROUPS_KEY, GROUP) or state(api)["status"] != "crashed"
            wait(
                lambda: sum(e["status"] == "success" for e in events(api)) == crash + 1,
                30,
                interval=0.1,
                what=f"restart {crash + 1}",
            )
            assert state(api)["status"] in ("running", "restarting")
    history = events(api)
    assert [(e["status"], e["attempt"]) for e in history] == [
        ("crashed", 0),
        ("success", 1),
        ("crashed", 1),
        ("success", 2),
        ("crashed", 2),
        ("success", 3),
        ("crashed", 3),
        ("success", 4),
        ("crashed", 4),
        ("success", 5),
        ("crashed", 5),
        ("failed", 5),
    ]
    assert all("SIGKILL" in e["error"] for e in history if e["status"] == "crashed")
    for crash, restart in zip(history[0::2], history[1::2]):
        if restart["status"] == "success":
            assert ts(restart) - ts(crash) >= 1.0, "released before the backoff ended"
    failed = wait(lambda: (s := state(api))["status"] == "failed" and s, 10, what="failed")
    assert failed["restart_count"] == 5 and "SIGKILL" in failed["error"]
    wait(lambda: beat(ops_client, w)["queues"] == [], 10, what="failed pool stops consuming")
    job = send(ops_settings, result={"after": "failed"})
    time.sleep(2.0)
    assert job_state(ops_client, job) is None and state(api)["status"] == "failed"

    r = api.post(f"/api/system/supervisor/reset/{GROUP}", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    wait(lambda: job_state(ops_client, job) == "completed", 20, what="consuming again after reset")
    wait(lambda: state(api)["status"] == "running", 10, what="running after reset")
    assert state(api)["restart_count"] == 0 and not ops_client.sismember(STOPPED_GROUPS_KEY, GROUP)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killed_worker_process_is_a_crash_and_its_replacement_is_released(
    workers, supervisor, api, ops_settings, ops_client, wait
):
    w = workers(concurrency=1)
    node = w.node
    supervisor()
    wait(lambda: state(api)["status"] == "running", 10, what="pool running")
    w.kill()  # SIGKILL to the whole worker: its heartbeat is never withdrawn
    crashed = wait(
        lambda: (s := state(api))["status"] == "crashed" and s,
        ops_settings.heartbeat_ttl + 5,
        what="crash seen from the missing heartbeat",
    )
    assert "no heartbeat" in crashed["error"] and node in crashed["error"]
    workers(node=node, concurrency=1)  # what compose's restart policy does
    back = wait(lambda: (s := state(api))["status"] == "running" and s, 30, what="replacement running")
    assert back["restart_count"] == 1
    history = events(api)
    assert [(e["status"], e["attempt"]) for e in history] == [("crashed", 0), ("success", 1)]
    assert history[0]["node"] == node
    job = send(ops_settings, result={"ok": 1})
    wait(lambda: job_state(ops_client, job) == "completed", 20, what="replacement consumes")
