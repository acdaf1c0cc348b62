"""A job the API acknowledged survives a Redis restart (clean or killed), then runs."""

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.helpers import API_KEY
from tests.servers import ROOT, ApiServer, CeleryWorker, RedisServer, wait_for


@pytest.fixture
def private_stack(tmp_path):
    """Redis, API and a worker of our own: restarting this Redis disturbs no other test."""
    redis_server = RedisServer().start()
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE_URL", "VIGIL_VAR_DIR"))}
    env.update(
        {
            "REDIS_URL": redis_server.url,
            "VIGIL_VAR_DIR": str(var),
            "DATABASE_URL": f"sqlite:///{var}/v.db",
            "PYTHONUNBUFFERED": "1",
        }
    )
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    api = ApiServer(env).start()
    procs = {"redis": redis_server, "api": api, "env": env, "workers": []}
    yield procs
    for w in procs["workers"]:
        w.kill()
    api.stop()
    redis_server.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("hard", [False, True], ids=["shutdown", "sigkill"])
def test_acknowledged_job_survives_redis_restart(private_stack, hard):
    api, redis_server = private_stack["api"], private_stack["redis"]
    headers = {"X-API-Key": API_KEY}
    r = requests.post(
        f"{api.url}/api/v1/platform/system/jobs",
        headers=headers,
        timeout=10,
        json={"task": "cleanup", "payload": {"dry_run": True}},
    )
    assert r.status_code == 202
    job_id = r.json()["data"]["job_id"]
    if hard:
        time.sleep(1.5)  # appendfsync everysec: what was acknowledged a second ago is on disk
    redis_server.restart(hard=hard)
    job = wait_for(
        lambda: requests.get(f"{api.url}/api/v1/platform/system/jobs/{job_id}", timeout=5).json(),
        20,
        what="API after the Redis restart",
    )
    assert job["data"]["status"] == "waiting"
    queues = {
        q["name"]: q
        for q in requests.get(f"{api.url}/api/v1/platform/system/queues", timeout=5).json()["data"]["queues"]
    }
    assert queues["cleanup"]["waiting_jobs"] == 1
    worker = CeleryWorker(private_stack["env"], "cleanup_service", ["cleanup"]).start()
    private_stack["workers"].append(worker)
    final = wait_for(
        lambda: (
            (
                requests.get(f"{api.url}/api/v1/platform/system/jobs/{job_id}", timeout=5).json()["data"]["status"]
                in ("completed", "failed")
            )
            and requests.get(f"{api.url}/api/v1/platform/system/jobs/{job_id}", timeout=5).json()["data"]
        ),
        30,
        what="the job to run",
    )
    # The cleanup task itself is built by another issue; here it only matters that it ran.
    assert final["attempts"] == 1 and final["worker"] == worker.node


@pytest.mark.slow
def test_enqueue_with_the_broker_down_is_503_not_a_lie(private_stack):
    api, redis_server = private_stack["api"], private_stack["redis"]
    redis_server.stop()
    t0 = time.monotonic()
    r = requests.post(
        f"{api.url}/api/v1/platform/system/jobs",
        headers={"X-API-Key": API_KEY},
        timeout=60,
        json={"task": "cleanup", "payload": {}},
    )
    elapsed = time.monotonic() - t0
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == "broker_unavailable"
    assert elapsed < 30
    print(f"503 after {elapsed:.1f}s")
