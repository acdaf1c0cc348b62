"""`make run`'s script brings the whole system up on embedded defaults and takes it all down."""

import os
import re
import signal
import subprocess
import time

import psutil
import pytest
import requests

from tests.servers import ROOT, free_port, wait_for


@pytest.mark.slow
def test_run_brings_everything_up_and_down(tmp_path):
    api_port, flower_port, redis_port = free_port(), free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIGIL_", "DATABASE_URL", "REDIS_URL", "CELERY_", "FLOWER_"))
    }
    env.update(
        {
            "VIGIL_VAR_DIR": str(tmp_path / "var"),
            "VIGIL_PORT": str(api_port),
            "FLOWER_PORT": str(flower_port),
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "VIGIL_HEARTBEAT_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen(
        ["scripts/run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        t0 = time.monotonic()

        def ready():
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "run.log").read_text()[-4000:])
            r = requests.get(f"{base}/ready", timeout=2)
            return r.status_code == 200 and r.json()

        body = wait_for(ready, 90, interval=0.5, what="/ready to answer 200")
        assert body["ready"] is True
        assert time.monotonic() - t0 < 90
        detail = requests.get(f"{base}/api/system/health/ready", timeout=5).json()
        assert detail["services"]["database"]["status"] == "healthy"
        assert detail["services"]["redis"]["status"] == "healthy"
        expected = {
            "detection_worker",
            "analysis_worker",
            "notification_worker",
            "cleanup_service",
            "file_watcher",
            "beat",
        }

        def all_running():
            body = requests.get(f"{base}/api/system/health/ready", timeout=5).json()
            return expected <= {w["name"] for w in body["workers"] if w["running"]}

        wait_for(all_running, 30, interval=0.5, what="every process's heartbeat")
        key = (tmp_path / "var" / "api_key").read_text().strip()
        flower = wait_for(
            lambda: requests.get(f"http://127.0.0.1:{flower_port}/", auth=("vigil", key), timeout=2), 30, what="Flower"
        )
        assert flower.status_code == 200
        assert requests.get(f"http://127.0.0.1:{flower_port}/", timeout=2).status_code == 401
        output = (tmp_path / "run.log").read_text()
        assert key and key in output  # printed for the operator
        assert re.search(rf"http://localhost:{api_port}", output)
        assert (tmp_path / "var" / "redis" / "appendonlydir").exists()  # AOF on
        tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 10
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    wait_for(
        lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in tree),
        15,
        what="every process to stop",
    )
    text = (tmp_path / "run.log").read_text()
    assert "Connection refused" not in text  # Redis outlived its clients
