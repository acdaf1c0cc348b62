"""The service host as the Procfile runs it (`python -m workers.host`), with a real Celery worker of
`detection_worker`: every supervisor command the API offers answers 200 and takes effect, for a Celery
group and for an in-process service, through `/api/system/supervisor/...` and `/api/system/services/...`.

Only a separate process can show this: when the host was a module run as `__main__` and imported
again by its pools, there were two `Pending` classes, and under `make run` these commands answered
500 while every in-process test passed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from app import create_app
from app.celery.app import create_celery
from app.jobs import heartbeats
from app.jobs.registry import JobRegistry
from tests.helpers import API_KEY, worker_env
from tests.servers import ROOT, CeleryWorker

HEADERS = {"X-API-Key": API_KEY}
GROUP, QUEUES = "detection_worker", ["detection:high", "detection"]
SERVICE = "file_watcher"


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_supervisor_commands_reach_a_host_process(redis_db, settings, db_url, tmp_path, wait):
    ops = redis_db.settings(settings, database_url=db_url)
    api = create_app(ops).test_client()
    client = redis_db.client(decode_responses=True)
    celery = create_celery(ops)
    env = worker_env(REDIS_URL=redis_db.url, DATABASE_URL=db_url, VIGIL_CAMERA_ROOT=str(tmp_path / "cams"))
    worker = CeleryWorker(env, GROUP, QUEUES, concurrency=1).start(wait=False)
    log_path = tmp_path / "host.log"
    with open(log_path, "wb") as log:
        host = subprocess.Popen(
            [sys.executable, "-m", "workers.host"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def state(name: str) -> dict:
            if host.poll() is not None:
                raise AssertionError(f"the host exited:\n{log_path.read_text()[-3000:]}")
            r = api.get("/api/system/supervisor")
            assert r.status_code == 200, r.get_json()
            return next(w for w in r.get_json()["workers"] if w["name"] == name)

        answers: list[str | None] = []

        def act(path: str, name: str) -> dict:
            r = api.post(path, headers=HEADERS)
            assert r.status_code == 200, (path, r.status_code, r.get_json(), log_path.read_text()[-3000:])
            answers.append(r.get_json()["acted_on"])
            return state(name)

        def beat(node: str) -> dict:
            return json.loads(client.get(heartbeats.HB_KEY + node) or "{}")

        def canary() -> str:
            """A job on the group's queue, from a publisher on the host's broker."""
            job_id = f"canary-{uuid.uuid4().hex}"
            with celery.connection_for_write() as conn:
                celery.send_task(
                    "vigil.system.canary",
                    kwargs={"result": {"held": True}},
                    queue="detection",
                    task_id=job_id,
                    connection=conn,
                )
            return job_id

        def job_state(job_id: str) -> str | None:
            job = JobRegistry(client).get(job_id)
            return job["state"] if job else None

        worker.wait_ready(60)
        wait(
            lambda: state(GROUP)["status"] == "running" and state(SERVICE)["status"] == "running",
            60,
            interval=0.2,
            what="the host supervising the group and its services",
        )
        assert state(GROUP)["nodes"] == [worker.node]
        service_node = heartbeats.node_name(SERVICE)

        # The Celery group, through the supervisor endpoints.
        sup = f"/api/system/supervisor/workers/{GROUP}"
        assert act(f"{sup}/stop", GROUP)["status"] == "stopped"
        assert beat(worker.node)["queues"] == []
        held = canary()
        time.sleep(1.5)  # three heartbeat intervals: a consuming worker would have taken it
        assert job_state(held) is None and client.llen("detection") == 1
        assert act(f"{sup}/start", GROUP)["status"] == "running"
        assert set(beat(worker.node)["queues"]) == set(QUEUES)
        wait(lambda: job_state(held) == "completed", 20, what="the held job consumed after start")
        old = set(beat(worker.node)["pool_pids"])
        assert act(f"{sup}/restart", GROUP)["status"] == "running"
        assert beat(worker.node)["pool_pids"] and not set(beat(worker.node)["pool_pids"]) & old
        # No supervisord here (compose): the process stays up, the answers say what changed instead.
        assert answers == ["consumers", "consumers", "pool"]
        assert state(GROUP)["pid"] == worker.proc.pid and state(GROUP)["managed_by"] == "container runtime"
        assert state("service_host")["pid"] == host.pid and state("service_host")["status"] == "running"
        assert "api" not in {w["name"] for w in api.get("/api/system/supervisor").get_json()["workers"]}

        # The in-process service, through the supervisor endpoints.
        sup = f"/api/system/supervisor/workers/{SERVICE}"
        assert act(f"{sup}/stop", SERVICE)["status"] == "stopped"
        assert not client.exists(heartbeats.HB_KEY + service_node)  # its thread ended
        assert act(f"{sup}/start", SERVICE)["status"] == "running"
        first = wait(lambda: beat(service_node).get("started_at"), 5, what="the service's heartbeat back")
        assert act(f"{sup}/restart", SERVICE)["status"] == "running"
        wait(lambda: (beat(service_node).get("started_at") or 0) > first, 5, what="a new thread's heartbeat")
        assert answers[-3:] == ["thread", "thread", "thread"]

        # Both again through the services endpoints, which have no stop (the supervisor's stops them).
        for name in (GROUP, SERVICE):
            assert act(f"/api/system/services/{name}/disable", name)["enabled"] is False
            assert act(f"/api/system/services/{name}/enable", name)["enabled"] is True
            act(f"/api/system/supervisor/workers/{name}/stop", name)
            assert act(f"/api/system/services/{name}/start", name)["status"] == "running"
        assert set(beat(worker.node)["queues"]) == set(QUEUES)
        first = wait(lambda: beat(service_node).get("started_at"), 5, what="the service's heartbeat back")
        old = set(beat(worker.node)["pool_pids"])
        for name in (GROUP, SERVICE):
            assert act(f"/api/system/services/{name}/restart", name)["status"] == "running"
        assert beat(worker.node)["pool_pids"] and not set(beat(worker.node)["pool_pids"]) & old
        wait(lambda: (beat(service_node).get("started_at") or 0) > first, 5, what="a new thread's heartbeat")
        job = canary()
        wait(lambda: job_state(job) == "completed", 20, what="the group consuming after it all")

        # SIGKILL the host and start another, as the container runtime would: the new one records the crash.
        old_host = host.pid
        os.kill(old_host, signal.SIGKILL)
        host.wait(5)
        with open(log_path, "ab") as log:
            host = subprocess.Popen(
                [sys.executable, "-m", "workers.host"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        back = wait(
            lambda: (w := state("service_host"))["pid"] == host.pid and w,
            30,
            interval=0.2,
            what="the new host publishing",
        )
        assert back["restart_count"] == 1 and str(old_host) in back["error"]
        events = api.get("/api/system/supervisor/restart-history?worker_name=service_host").get_json()["items"]
        assert [(e["status"], e["attempt"]) for e in reversed(events)] == [("crashed", 0), ("success", 1)]
        assert state(GROUP)["status"] == "running" and state(GROUP)["restart_count"] == 0
    finally:
        os.killpg(host.pid, signal.SIGTERM)
        try:
            host.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait(5)
        worker.kill()
